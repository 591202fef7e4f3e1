"""Streamlit views over xray_core. charts.py is pure plotly; session.py and
controls.py hold the per-browser-session state and the sidebar.

Importing this package also stops Streamlit from resetting Keras after every
script run. Streamlit's ScriptRunner calls `keras.backend.clear_session()` at the
end of each run (script_runner._clean_problem_modules, 1.67), which also clears
TensorFlow's process-wide kernel cache. With the live charts rerunning twice a
second, that made background training ~100x slower (measured: 3 batches/s
instead of ~300), and clear_session while other threads build models breaks
them (README: "How live training works"). This app keeps no per-run Keras state,
so there is nothing for Streamlit to clean.

It also makes one server serve a class (bench/students.py): Streamlit's config is read
without its lock (see below).
"""
import streamlit as _st
from streamlit import config as _config
from streamlit.runtime.scriptrunner import script_runner as _script_runner

PATCHED = "_clean_problem_modules"


def _no_keras_reset() -> None:
    """Replacement for Streamlit's per-run cleanup (we do not use matplotlib either)."""


def disable_keras_reset(module=_script_runner) -> None:
    """Patch Streamlit's private cleanup; refuse to start if it moved, rather than
    silently training ~100x slower."""
    if not callable(getattr(module, PATCHED, None)):
        raise RuntimeError(
            f"X-ray Lab cannot start: streamlit {_st.__version__} has no script_runner.{PATCHED}, which "
            f"xray_ui/__init__.py disables (it resets Keras after every rerun). Install the streamlit "
            f"version pinned in requirements.txt, or find the new name and update xray_ui/__init__.py.")
    setattr(module, PATCHED, _no_keras_reset)


disable_keras_reset()


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
        raise RuntimeError(
            f"X-ray Lab cannot start: streamlit {_st.__version__} has no config._config_options/get_option, "
            f"which xray_ui/__init__.py reads without a lock. Install the streamlit version pinned in "
            f"requirements.txt, or update xray_ui/__init__.py.")
    if getattr(locked, "xray_unlocked", False):
        return
    if getattr(locked, "__module__", None) != getattr(module, "__name__", None):
        # patched for now by someone else: AppTest overrides options (global.appTest) this way
        # while a script runs; replacing its patch would hide those overrides, and it puts
        # Streamlit's own back when the run ends. (tests/conftest.py imports this package first.)
        return

    def get_option(key: str):
        options = module._config_options
        if options is None or key not in options:
            return locked(key)       # not parsed yet, or unknown: Streamlit's own path and error
        return options[key].value

    get_option.xray_unlocked = True
    get_option.locked = locked
    module.get_option = get_option


read_config_without_lock()
