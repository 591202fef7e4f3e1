"""Streamlit views over xray_core. charts.py is pure plotly; session.py and
controls.py hold the per-browser-session state and the sidebar.

`install()`, called first in app.py and in every page (and by tests/conftest.py), fits
Streamlit to this app; importing the package changes nothing. It refuses to start, in
one line on the page and in the server's log, on a Streamlit whose internals it patches
are gone (another version than requirements.txt pins may run if they are all there). It
registers, once, the server's shutdown: on SIGTERM or Ctrl+C every live run is stopped
(recorded as stopped, keeping what it learned), its threads joined and the idle training
processes closed (xray_core.runs.service.shutdown).

It stops Streamlit from resetting Keras after every script run. Streamlit's ScriptRunner
calls `keras.backend.clear_session()` at the end of each run
(script_runner._clean_problem_modules, 1.67), which also clears
TensorFlow's process-wide kernel cache. With the live charts rerunning twice a
second, that made background training ~100x slower (measured: 3 batches/s
instead of ~300), and clear_session while other threads build models breaks
them (README: "How live training works"). This app keeps no per-run Keras state,
so there is nothing for Streamlit to clean.

It also makes one server serve a class (bench/students.py): Streamlit's config is read
without its lock (see below).
"""
import atexit
import logging
import re
import sys
import threading
from pathlib import Path

import streamlit as _st
from streamlit import config as _config
from streamlit.runtime.scriptrunner import script_runner as _script_runner

PATCHED = "_clean_problem_modules"
CONFIG_INTERNALS = ("get_option", "_config_options", "_config_lock")
REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
SHUTDOWN_TIMEOUT_S = 30.0   # for the live runs to stop and their records to be written
_log = logging.getLogger(__name__)


class IncompatibleStreamlit(RuntimeError):
    """This Streamlit lacks an internal the app patches. str() is the one line to show."""


def pinned_streamlit(path: Path = REQUIREMENTS) -> str | None:
    """The version requirements.txt pins (streamlit==X), or None without one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(r"^\s*streamlit\s*==\s*([^\s;#]+)", text, re.M | re.I)
    return m.group(1) if m else None


def missing_internals(script_runner=_script_runner, config=_config) -> list[str]:
    """The Streamlit internals install() patches that this Streamlit does not have."""
    missing = [] if callable(getattr(script_runner, PATCHED, None)) else [f"script_runner.{PATCHED}"]
    return missing + [f"config.{n}" for n in CONFIG_INTERNALS if not hasattr(config, n)]


def check_streamlit(version: str | None = None, pinned: str | None = None,
                    script_runner=_script_runner, config=_config) -> str | None:
    """None when the patches apply; else the one line saying why X-ray Lab will not start.
    The pinned version passes with its internals checked as any other; another version
    passes only when every patched internal is there (and is named in the log)."""
    version = version or _st.__version__
    pinned = pinned or pinned_streamlit()
    missing = missing_internals(script_runner, config)
    if not missing:
        return None
    return (f"X-ray Lab cannot start: streamlit {version} has no {', '.join(missing)}, which xray_ui "
            f"patches (requirements.txt pins streamlit=={pinned or '?'}): install that version, "
            f"or update xray_ui/__init__.py.")


_install_lock = threading.Lock()
_installed = False


def install() -> None:
    """Fit Streamlit to this app, once per process: check its version and internals, patch
    them (below), and register the shutdown of this server's runs. Call it first in app.py
    and every page. On a Streamlit it cannot patch it refuses to start: inside a page it
    shows the one line (and stops the page), elsewhere it raises IncompatibleStreamlit."""
    global _installed
    with _install_lock:
        if _installed:
            return
        problem = check_streamlit()
        if problem is None:
            try:
                disable_keras_reset()
                read_config_without_lock()
            except IncompatibleStreamlit as e:
                problem = str(e)
        if problem is not None:
            _refuse(problem)
        pinned = pinned_streamlit()
        if pinned and _st.__version__ != pinned:
            _log.warning("streamlit %s runs instead of the %s pinned in requirements.txt; the internals "
                         "xray_ui patches are all there.", _st.__version__, pinned)
        atexit.register(shutdown_runs)
        _installed = True


def _refuse(line: str) -> None:
    """Say `line` once in the server's log; on a page, show it there and end the page
    (the app hides tracebacks from students: .streamlit/config.toml)."""
    if not getattr(_refuse, "said", False):
        print(line, file=sys.stderr, flush=True)
        _refuse.said = True
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    if get_script_run_ctx(suppress_warning=True) is not None:
        _st.error(line)
        _st.stop()
    raise IncompatibleStreamlit(line)


def shutdown_runs(timeout: float = SHUTDOWN_TIMEOUT_S) -> dict | None:
    """At the server's exit (atexit; Streamlit turns SIGTERM and Ctrl+C into a normal exit):
    stop this process's live runs, join their threads and close the idle training
    processes (xray_core.runs.service.shutdown). None if nothing ever trained here."""
    if "xray_core.train.job" not in sys.modules:
        return None
    from xray_core.runs import service
    done = service.shutdown(timeout)
    if done.get("stopped") or done.get("workers_closed") or done.get("threads_left"):
        print(f"X-ray Lab shut down: {done}", file=sys.stderr, flush=True)
    return done


def _no_keras_reset() -> None:
    """Replacement for Streamlit's per-run cleanup (we do not use matplotlib either)."""


def disable_keras_reset(module=_script_runner) -> None:
    """Patch Streamlit's private cleanup; refuse to start if it moved, rather than
    silently training ~100x slower."""
    if not callable(getattr(module, PATCHED, None)):
        raise IncompatibleStreamlit(
            f"X-ray Lab cannot start: streamlit {_st.__version__} has no script_runner.{PATCHED}, which "
            f"xray_ui/__init__.py disables (it resets Keras after every rerun). Install the streamlit "
            f"version pinned in requirements.txt, or find the new name and update xray_ui/__init__.py.")
    setattr(module, PATCHED, _no_keras_reset)


# Streamlit reads its config (`config.get_option`) several times per element, each time
# under one process-wide lock; some values are computed (real paths on disk) while it is
# held. With a class rendering pages at once, threads queued on that lock: py-spy put ~60 %
# of a results page's wall time in `get_option` with the server under half a core. The
# options are parsed once at start-up (file watcher off) and only read afterwards, so
# reading the parsed table without the lock returns the same values.
def read_config_without_lock(module=None) -> None:
    """Patch Streamlit's config reader; refuse to start if its internals moved."""
    module = module or _config
    locked = getattr(module, "get_option", None)
    if locked is None or not hasattr(module, "_config_options") or not hasattr(module, "_config_lock"):
        raise IncompatibleStreamlit(
            f"X-ray Lab cannot start: streamlit {_st.__version__} has no config._config_options/get_option, "
            f"which xray_ui/__init__.py reads without a lock. Install the streamlit version pinned in "
            f"requirements.txt, or update xray_ui/__init__.py.")
    if getattr(locked, "xray_unlocked", False):
        return
    if getattr(locked, "__module__", None) != getattr(module, "__name__", None):
        # patched for now by someone else: AppTest overrides options (global.appTest) this way
        # while a script runs; replacing its patch would hide those overrides, and it puts
        # Streamlit's own back when the run ends. (tests/conftest.py calls install() first.)
        return

    def get_option(key: str):
        options = module._config_options
        if options is None or key not in options:
            return locked(key)       # not parsed yet, or unknown: Streamlit's own path and error
        return options[key].value

    get_option.xray_unlocked = True
    get_option.locked = locked
    module.get_option = get_option
