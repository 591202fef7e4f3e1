"""Every XRAY_LAB_* environment variable: one table, one parser, one place that reads them.

A teacher configures a class server with these (README "Running for a class"); each row
says what the variable does, its type and its default. `get(NAME)` parses the variable
when asked (tests and a teacher's shell may change the environment between runs), so a
new variable is one row here, never another `os.environ.get` somewhere else:
tests/test_settings.py fails when a module outside this one reads an XRAY_LAB_ variable.

A value that does not parse (or is below its minimum) falls back to the default and is
logged once with the reason; caps the config validation enforces (`config.CAPS`) are
refused in one line instead, because a mistyped limit must not silently become a bigger one.

`python -m xray_core settings` prints the table with the values in force.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setting:
    name: str          # the variable, XRAY_LAB_...
    kind: str          # int | float | str | path | flag
    default: Any       # None: computed (see `doc`) or unset
    doc: str
    lo: float | None = None   # smallest accepted number
    secret: bool = False      # never printed, never passed to training processes


def _rows() -> tuple[Setting, ...]:
    S = Setting
    return (
        # where things are kept
        S("XRAY_LAB_HOME", "path", None, "the runs' home: database, models, uploads, calibration "
          "(default ~/.local/share/xray-lab)"),
        S("XRAY_LAB_DB", "str", None, "run store URL, e.g. postgresql://user:pw@host/db "
          "(default SQLite in the home)", secret=True),
        S("XRAY_LAB_CACHE", "path", None, "the cache: the phantom's films and patches, and "
          "decoded patch folders (default ~/.cache/xray_lab)"),
        S("XRAY_LAB_DATA_ROOTS", "str", None, "folders a browser may name as data, separated by ':' "
          "(default: the app's data/ folder)"),
        # training: how many, where, how long
        S("XRAY_LAB_BACKEND", "str", "local", "where runs train: local or ray"),
        S("XRAY_LAB_ISOLATE", "flag", True, "the app trains in worker processes (0: in threads of the server)"),
        S("XRAY_LAB_MAX_JOBS", "int", None, "runs training at once (default: the CPU cores)", lo=1),
        S("XRAY_LAB_MAX_QUEUE", "int", 60, "runs waiting in the class queue before new ones are refused", lo=1),
        S("XRAY_LAB_QUEUE_PER_WORKSPACE", "int", 5, "runs one workspace may have in the class queue or "
          "training; its further runs wait in the workspace's own line", lo=1),
        S("XRAY_LAB_QUEUE_PER_CLIENT", "int", 10, "the same per client address (X-Forwarded-For's first hop "
          "behind a proxy); 0 = no per-client limit (a class behind one NAT address)", lo=0),
        S("XRAY_LAB_PENDING_PER_WORKSPACE", "int", 100, "runs one workspace may have waiting in all "
          "(its line included) before more are refused", lo=1),
        S("XRAY_LAB_MAX_JOB_SECONDS", "float", 1800.0, "a run training longer is stopped like a Stop press", lo=1),
        S("XRAY_LAB_STOP_SECONDS", "float", 10.0, "a worker still training this long after Stop is killed",
          lo=0.5),
        S("XRAY_LAB_WORKER_SILENT_SECONDS", "float", 20.0, "a worker silent this long is killed", lo=0.5),
        S("XRAY_LAB_WORKER_RUNS", "int", 5, "runs per worker process before it is replaced", lo=1),
        S("XRAY_LAB_WORKER_THREADS", "int", None, "TensorFlow threads per worker "
          "(default: cores // XRAY_LAB_MAX_JOBS)", lo=1),
        S("XRAY_LAB_WORKER_NICE", "int", 10, "CPU niceness of worker processes", lo=0),
        S("XRAY_LAB_WORKER_MEM_MB", "int", 6000, "data-segment limit of a worker process (0: none)", lo=0),
        S("XRAY_LAB_RAY_CPUS", "float", 1.0, "CPUs a run asks of the Ray cluster", lo=0.1),
        S("XRAY_LAB_RAY_IDLE_SECONDS", "float", 15.0, "an idle Ray actor is kept this long for the next run",
          lo=0),
        S("XRAY_LAB_RAY_RESOURCE", "str", None, "a Ray custom resource runs must land on, e.g. gpu_node"),
        # the cost caps (config.CAPS enforces them, in one line)
        S("XRAY_LAB_MAX_PARAMS", "int", 5_000_000, "parameters a model may have", lo=1),
        S("XRAY_LAB_MAX_MACS", "int", 150_000_000, "multiply-adds per patch a model may need", lo=1),
        S("XRAY_LAB_MAX_FILM_MACS", "int", 3_200_000_000, "multiply-adds per film a segmentation model "
          "may need", lo=1),
        S("XRAY_LAB_MAX_EPOCHS", "int", 200, "epochs a run may ask for", lo=1),
        S("XRAY_LAB_MAX_BATCH", "int", 1024, "batch size a run may ask for", lo=1),
        # the run store's retention
        S("XRAY_LAB_MAX_RUNS", "int", 500, "records kept per workspace (0: no limit)", lo=0),
        S("XRAY_LAB_MAX_MODELS", "int", 50, "models kept per workspace (0: no limit)", lo=0),
        S("XRAY_LAB_MAX_DISK_MB", "int", 5000, "disk for all models, MB (0: no limit)", lo=0),
        # uploads and maps
        S("XRAY_LAB_MAX_FILES", "int", 20, "films classified per upload on the Classify page", lo=1),
        S("XRAY_LAB_UPLOADS_MB", "int", 2000, "size of one uploaded dataset zip, MB", lo=1),
        S("XRAY_LAB_MAP_SLOTS", "int", None, "anatomy maps computed at once (default: half the cores)", lo=1),
        # people
        S("XRAY_LAB_TEACHER_PASSWORD", "str", None, "the teacher's password on the Class board "
          "(use a long one: 20+ characters)", secret=True),
        S("XRAY_LAB_TEACHERS", "str", None, "teacher accounts when sign-in is on (.streamlit/secrets.toml "
          "[auth], README \"Accounts\"): their e-mail addresses as the school's sign-in reports them, "
          "comma-separated, case ignored; signed in, they are teachers without the password"),
        # tests
        S("XRAY_LAB_REQUIRE_ALL", "flag", False, "tests only: a skipped test fails the run (CI sets it)"),
    )


SETTINGS: dict[str, Setting] = {s.name: s for s in _rows()}
_warned: set[tuple[str, str]] = set()


def raw(name: str) -> str:
    """The variable as set ('' when unset). The one os.environ read of XRAY_LAB_ variables."""
    if name not in SETTINGS:
        raise KeyError(f"{name} is not a setting: add its row to xray_core/settings.py")
    return os.environ.get(name, "").strip()


def is_set(name: str) -> bool:
    return raw(name) != ""


def get(name: str) -> Any:
    """The parsed value, or the row's default when unset or unreadable (logged once)."""
    s = SETTINGS[name] if name in SETTINGS else None
    text = raw(name)
    if s is None or not text:
        return s.default if s else None
    try:
        if s.kind == "int":
            value: Any = int(text.replace("_", ""))
        elif s.kind == "float":
            value = float(text)
        elif s.kind == "flag":
            value = text.lower() not in ("0", "false", "no", "off")
        elif s.kind == "path":
            value = Path(text).expanduser()
        else:
            value = text
    except ValueError:
        _warn(s, text, f"not a {s.kind}")
        return s.default
    if s.lo is not None and value < s.lo:
        _warn(s, text, f"below its minimum {s.lo:g}")
        return s.default if s.default is not None else type(value)(s.lo)
    return value


def _warn(s: Setting, text: str, why: str) -> None:
    key = (s.name, text)
    if key not in _warned:
        _warned.add(key)
        shown = "(hidden)" if s.secret else repr(text)
        _log.warning("%s=%s is %s: using %s", s.name, shown, why, s.default if s.default is not None else "the default")


def home() -> Path:
    """The runs' home (XRAY_LAB_HOME)."""
    return get("XRAY_LAB_HOME") or Path.home() / ".local" / "share" / "xray-lab"


def secret_names() -> list[str]:
    """Variables a training process must not inherit (it runs a student's model)."""
    return [s.name for s in SETTINGS.values() if s.secret]


def table() -> list[dict]:
    """Every setting with the value in force (secrets shown as set/unset only)."""
    out = []
    for s in SETTINGS.values():
        value = get(s.name)
        if s.secret:
            value = "(set)" if is_set(s.name) else None
        out.append({"name": s.name, "type": s.kind, "default": s.default, "value": value, "doc": s.doc})
    return out
