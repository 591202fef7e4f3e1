"""The run store: every run, its curves, results and model, kept outside the browser.

One `RunStore` over SQLAlchemy Core (see STORE_API in the README's "Where runs are kept"):
- SQLite in WAL mode under `XRAY_LAB_HOME` by default (no server to start); several
  server processes on one host may share the file: writers take the write lock up
  front (`BEGIN IMMEDIATE`) and wait on each other (busy timeout) instead of failing.
- PostgreSQL when `XRAY_LAB_DB=postgresql://…`, so replicas behind a load balancer share runs.
- Models are `.keras` files in `$XRAY_LAB_HOME/models/<run_id>/model.keras`; the DB keeps
  the path relative to the home, so the whole folder can be moved or backed up.
- A run's row is rewritten as it goes (each epoch and state change, heartbeats in
  between), so a crash loses at most the epoch in progress.
- The per-batch loss is bounded: at most `MAX_BATCH_POINTS` (2000) points, decimated
  evenly (always keeping the last) when the run has more batches.
- Schema changes are additive: a new feature adds a table (`create_all` makes only the
  missing ones), so a store written by an older version opens unchanged. Class
  experiments (`class_experiments`, `class_assignments`, runs/classes.py) and stop
  requests (`run_stops`, "stop anywhere") and accounts' workspaces (`account_workspaces`) came
  this way (issue 25).
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy import event

from xray_core import settings
from xray_core.errors import StoreError, XrayLabError  # noqa: F401  (StoreError: callers import it from here too)
from xray_core.runs import keys

STATES = ("queued", "training", "finished", "stopped", "failed", "interrupted")
ACTIVE = ("queued", "training")
TERMINAL = ("finished", "stopped", "failed", "interrupted")
# TrainingJob state -> store state
JOB_STATE = {"queued": "queued", "loading": "training", "training": "training", "evaluating": "training",
             "done": "finished", "stopped": "stopped", "failed": "failed"}
GROUP_KINDS = ("repeat", "sweep", "study")
MAX_BATCH_POINTS = 2000
MODEL_FILE = "model.keras"
_WORKSPACE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_RUN_ID_RE = re.compile(r"^[0-9a-f]{16}$")
# Retention defaults: generous for a classroom laptop, overridable by env.
DEFAULT_MAX_RUNS = 500
DEFAULT_MAX_MODELS = 50
DEFAULT_MAX_DISK_MB = 5000


# ---- schema ----------------------------------------------------------------------

metadata = sa.MetaData()

runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("workspace", sa.String(64), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("preset", sa.String(32)),
    sa.Column("label", sa.String(200), nullable=False, default=""),
    sa.Column("group_id", sa.String(32), index=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("owner", sa.String(300)),
    sa.Column("epochs_done", sa.Integer, nullable=False, default=0),
    sa.Column("epochs", sa.Integer, nullable=False, default=0),
    sa.Column("history", sa.JSON, nullable=False),
    sa.Column("batch_loss", sa.JSON, nullable=False),
    sa.Column("batch_epoch", sa.JSON, nullable=False),
    sa.Column("unit_stats", sa.JSON, nullable=False),
    sa.Column("result", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("model_path", sa.String(500)),      # relative to the home
    sa.Column("model_bytes", sa.BigInteger),      # size on disk, for the disk cap
    sa.Column("nickname", sa.String(40)),
    sa.Column("shared", sa.Boolean, nullable=False, default=False, index=True),
)

groups = sa.Table(
    "groups", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("workspace", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# A class experiment (runs/classes.py): setups the class trains in turn; its runs carry its id
# as their group_id. Added in issue 25 as new tables, so older stores open unchanged.
class_experiments = sa.Table(
    "class_experiments", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("title", sa.String(200), nullable=False, default=""),
    sa.Column("setups", sa.JSON, nullable=False),      # [{"preset", "label", "config"}, ...]
    sa.Column("state", sa.String(16), nullable=False),  # open | closed
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("closed_at", sa.Float),
)

# One row per student who joined: which setup, which seed. (experiment_id, number) is the
# primary key, so two replicas assigning at once cannot hand out the same turn.
class_assignments = sa.Table(
    "class_assignments", metadata,
    sa.Column("experiment_id", sa.String(32), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("setup", sa.Integer, nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("workspace", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# "Stop anywhere": a stop asked for a run, by any process on this database; the process
# recording the run polls it (runs/recorder.py) and stops its job.
run_stops = sa.Table(
    "run_stops", metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("requested_by", sa.String(300)),
)

# "Send to class" (issue 25, item 1): the teacher's latest setup for everyone to try and a pinned
# one-line message; each send is a new row, the newest is what pages show (an empty one clears).
# A new table, so older stores open unchanged; in the store, so every replica shows the same.
class_pins = sa.Table(
    "class_pins", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("setup", sa.JSON),                 # {"preset", "label", "config", "knobs"} or None
    sa.Column("message", sa.String(300)),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Accounts (issue 25, item 4): the workspace a signed-in account owns (runs/accounts.py). The
# account is a one-way name of the provider's (issuer, subject); a workspace bound here opens
# only for that account, never from its link alone. A new table, so older stores open unchanged.
account_workspaces = sa.Table(
    "account_workspaces", metadata,
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("workspace", sa.String(64), nullable=False, unique=True),
    sa.Column("email", sa.String(300)),       # what the teacher's list is matched against; shown, never a key
    sa.Column("created_at", sa.Float, nullable=False),
)

CLASS_STATES = ("open", "closed")
_CLASS_ID_RE = _RUN_ID_RE

_PROCESS_START = time.time()
_EMPTY_HISTORY = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}


# ---- the record ------------------------------------------------------------------

@dataclass
class RunRecord:
    id: str
    workspace: str
    state: str
    config: dict
    preset: str | None
    label: str
    group_id: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    owner: str | None
    epochs_done: int
    epochs: int
    history: dict
    batch_loss: list
    batch_epoch: list
    unit_stats: list
    result: dict | None
    error: str | None
    model_path: str | None       # absolute; None when not kept, dropped, or not on this host
    nickname: str | None
    shared: bool = False

    @property
    def test(self) -> dict | None:
        return (self.result or {}).get("test")

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def to_json(self) -> dict:
        res = self.result or {}
        return {
            "id": self.id, "workspace": self.workspace, "state": self.state,
            "epochs_done": self.epochs_done, "epochs": self.epochs, "config": self.config,
            "preset": self.preset, "label": self.label, "group_id": self.group_id,
            "history": self.history, "test": res.get("test"),
            "train_accuracy": res.get("train_accuracy"), "val_accuracy": res.get("val_accuracy"),
            "params": res.get("params"), "timing": res.get("timing"),
            "model": self.model_path, "error": self.error,
            "created_at": self.created_at, "finished_at": self.finished_at,
            "nickname": self.nickname, "shared": self.shared,
        }


# ---- helpers ---------------------------------------------------------------------

def default_home() -> Path:
    return settings.home()


def owner_id() -> str:
    """host:pid@start: the start time tells a live process from a later one that was given
    the same pid (pids wrap at 32768 on many machines; a busy test machine wraps in hours)."""
    start = proc_start(os.getpid())
    return f"{socket.gethostname()}:{os.getpid()}" + (f"@{start}" if start is not None else "")


def proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def check_workspace(workspace: Any) -> str:
    if not isinstance(workspace, str) or not _WORKSPACE_RE.match(workspace):
        raise StoreError(f"bad workspace name {str(workspace)[:70]!r}: use 1-64 letters, digits, '-' or '_'")
    return workspace


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None (PostgreSQL's json refuses NaN)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy array or scalar
        return _clean(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (bool, int, str)) or obj is None:
        return obj
    return str(obj)


def bound_trace(values: list, x: list, limit: int = MAX_BATCH_POINTS) -> tuple[list, list]:
    """At most `limit` evenly spaced points of a per-batch trace (first and last kept)."""
    n = min(len(values), len(x))
    values, x = list(values[:n]), list(x[:n])
    if n <= limit:
        return values, x
    idx = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return [values[i] for i in idx], [x[i] for i in idx]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:  # a killed child not yet reaped is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _env_int(name: str, default: int) -> int:
    value = settings.get(name)
    return default if value is None else value


def _label(config, cfg: dict, preset: str | None) -> str:
    """A RunConfig is labelled as the app labels runs ("p1-task5, 10 epochs"); a bare dict by its preset."""
    if hasattr(config, "resolved"):
        from xray_core.presets import describe
        return describe(config)
    return default_label(cfg, preset)


def default_label(config: dict, preset: str | None) -> str:
    if preset:
        return preset
    if config.get("arch") == "cnn":
        return f"cnn/{config.get('cnn_mode', 'seed')}"
    return f"fc/{config.get('activation', 'relu')}"


# ---- the store -------------------------------------------------------------------

class RunStore:
    """Thread-safe (SQLAlchemy's pool gives each thread its own connection) and
    multi-process safe (the database serialises writers; updates are single statements
    with their conditions in the WHERE clause)."""

    def __init__(self, url: str | None = None, home: str | Path | None = None):
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.models_dir = self.home / "models"
        try:
            keys.make_home(self.home)     # created 0700: it holds every workspace's runs and keys
            self.models_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"XRAY_LAB_HOME: cannot create {self.models_dir}: {e.strerror or e}") from None
        url = url or settings.get("XRAY_LAB_DB") or f"sqlite:///{self.home / 'runs.sqlite3'}"
        self.url = url
        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError:
            raise StoreError(f"XRAY_LAB_DB: cannot read the database URL {url[:60]!r}") from None
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            self.engine = self._sqlite_engine(parsed)
        elif self.dialect == "postgresql":
            if parsed.drivername == "postgresql":  # SQLAlchemy 2.1 would pick psycopg 3; we ship psycopg2
                parsed = parsed.set(drivername="postgresql+psycopg2")
            self.engine = sa.create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=10)
        else:
            raise StoreError(f"XRAY_LAB_DB: only sqlite:/// and postgresql:// URLs are supported, got {self.dialect}")
        self._writer = self.engine.execution_options(xray_write=True)
        self._local_owner = owner_id()
        try:
            self._create_schema()
        except sa.exc.OperationalError as e:  # no server, refused, bad file: say where, in one line
            self.engine.dispose()
            reason = str(e.orig or e).strip().splitlines()[0] if str(e.orig or e).strip() else type(e).__name__
            raise StoreError(f"cannot open the run store {parsed.render_as_string(hide_password=True)}: "
                             f"{reason}") from None

    @property
    def db_path(self) -> Path | None:
        """The SQLite file (None on PostgreSQL)."""
        db = sa.engine.make_url(self.url).database if self.dialect == "sqlite" else None
        return Path(db) if db else None

    def _sqlite_engine(self, parsed) -> sa.Engine:
        if not parsed.database or parsed.database == ":memory:":
            raise StoreError("the SQLite store needs a file (several threads and processes share it)")
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the folder of {parsed.database}: {e.strerror or e}") from None
        try:   # the file holds every workspace key: only this server's user may read it (SQLite
            # gives its -wal and -shm files the same rights)
            os.close(os.open(parsed.database, os.O_WRONLY | os.O_CREAT, 0o600))
            os.chmod(parsed.database, 0o600)
        except OSError as e:
            raise StoreError(f"cannot create the run store file {Path(parsed.database).name}: "
                             f"{e.strerror or e}") from None
        engine = sa.create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False},
                                  pool_size=8, max_overflow=16)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # Let SQLAlchemy, not pysqlite, decide when transactions begin (the documented recipe),
            # so a writer can say BEGIN IMMEDIATE: it takes the write lock first and waits for it
            # (busy timeout) instead of failing half-way when another process wrote meanwhile.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout = 30000")
            cur.execute("PRAGMA journal_mode = WAL")      # readers never wait for the writer
            cur.execute("PRAGMA synchronous = NORMAL")     # durable across process crashes in WAL
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("xray_write")
                                 else "BEGIN")
        return engine

    def _create_schema(self) -> None:
        # Two servers starting at once must not both try CREATE TABLE: serialise it.
        with self._writer.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(84218)"))
            metadata.create_all(conn, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    # -- rows <-> records --
    def _abs_model(self, rel: str | None) -> str | None:
        if not rel:
            return None
        p = self.home / rel
        return str(p) if p.is_file() else None

    def _record(self, row) -> RunRecord:
        m = row._mapping
        return RunRecord(
            id=m["id"], workspace=m["workspace"], state=m["state"], config=m["config"] or {},
            preset=m["preset"], label=m["label"] or "", group_id=m["group_id"],
            created_at=m["created_at"], started_at=m["started_at"], finished_at=m["finished_at"],
            heartbeat_at=m["heartbeat_at"], owner=m["owner"], epochs_done=m["epochs_done"] or 0,
            epochs=m["epochs"] or 0, history=m["history"] or dict(_EMPTY_HISTORY),
            batch_loss=m["batch_loss"] or [], batch_epoch=m["batch_epoch"] or [],
            unit_stats=m["unit_stats"] or [], result=m["result"], error=m["error"],
            model_path=self._abs_model(m["model_path"]), nickname=m["nickname"], shared=bool(m["shared"]))

    def _write(self, stmt) -> int:
        with self._writer.begin() as conn:
            return conn.execute(stmt).rowcount

    # -- runs --
    def create_run(self, workspace: str, config, *, preset: str | None = None, label: str | None = None,
                   group_id: str | None = None, state: str = "queued") -> RunRecord:
        check_workspace(workspace)
        if state not in STATES:
            raise StoreError(f"unknown run state {state!r}")
        cfg = config.resolved().to_dict() if hasattr(config, "resolved") else dict(config)
        if preset is None and hasattr(config, "resolved"):
            from xray_core.presets import matching_preset
            p = matching_preset(config)
            preset = p.name if p else None
        now = time.time()
        run_id = secrets.token_hex(8)
        self._write(runs.insert().values(
            id=run_id, workspace=workspace, state=state, config=_clean(cfg), preset=preset,
            label=(label or _label(config, cfg, preset))[:200], group_id=group_id, created_at=now,
            started_at=None, finished_at=None, heartbeat_at=now, owner=self._local_owner, epochs_done=0,
            epochs=int(cfg.get("epochs") or 0), history=dict(_EMPTY_HISTORY), batch_loss=[], batch_epoch=[],
            unit_stats=[], result=None, error=None, model_path=None, model_bytes=None, nickname=None,
            shared=False))
        return self.get(run_id)

    def update_progress(self, run_id: str, *, state: str | None = None, epochs_done: int | None = None,
                        history: dict | None = None, batch_loss: list | None = None,
                        batch_epoch: list | None = None, unit_stats: list | None = None,
                        started_at: float | None = None) -> None:
        """Progress of a live run (also a heartbeat). Never revives a run already ended
        (e.g. marked interrupted by another server's recover())."""
        vals: dict[str, Any] = {"heartbeat_at": time.time(), "owner": self._local_owner}
        if state is not None:
            if state not in ACTIVE:
                raise StoreError(f"update_progress takes queued or training, got {state!r}: use finish()")
            vals["state"] = state
        vals.update(self._progress_values(epochs_done, history, batch_loss, batch_epoch, unit_stats))
        if started_at is not None:
            vals["started_at"] = float(started_at)
        self._write(runs.update().where(runs.c.id == run_id, runs.c.state.in_(ACTIVE)).values(**vals))

    @staticmethod
    def _progress_values(epochs_done=None, history=None, batch_loss=None, batch_epoch=None,
                         unit_stats=None) -> dict:
        vals: dict[str, Any] = {}
        if epochs_done is not None:
            vals["epochs_done"] = int(epochs_done)
        if history is not None:
            # the four curves every run has, and any others a run keeps (a segmentation run's
            # val_dice_<class>)
            vals["history"] = _clean({k: list(history.get(k, [])) for k in [*_EMPTY_HISTORY, *sorted(
                set(history) - set(_EMPTY_HISTORY))]})
        if batch_loss is not None:
            bl, bx = bound_trace(batch_loss, batch_epoch if batch_epoch is not None else
                                 [i + 1 for i in range(len(batch_loss))])
            vals["batch_loss"], vals["batch_epoch"] = _clean(bl), _clean(bx)
        if unit_stats is not None:
            vals["unit_stats"] = _clean(unit_stats)
        return vals

    def heartbeat(self, run_id: str) -> None:
        self._write(runs.update().where(runs.c.id == run_id, runs.c.state.in_(ACTIVE))
                    .values(heartbeat_at=time.time()))

    def finish(self, run_id: str, state: str, *, result: dict | None = None, error: str | None = None,
               model_src: str | os.PathLike | None = None, **progress) -> RunRecord:
        """End a run. `progress` (epochs_done, history, batch_loss, batch_epoch, unit_stats) is the
        final progress, written with the end in one statement even if the run was marked
        interrupted meanwhile (a stalled writer that did finish)."""
        if state not in TERMINAL:
            raise StoreError(f"finish() takes one of {', '.join(TERMINAL)}, got {state!r}")
        rec = self.get(run_id)
        if rec is None:
            raise StoreError(f"no run {run_id!r}")
        vals: dict[str, Any] = {"state": state, "finished_at": time.time(), "heartbeat_at": time.time()}
        if result is not None:
            vals["result"] = _clean(result)
        if error is not None:
            vals["error"] = str(error).splitlines()[0][:500] if str(error) else None
        vals.update(self._progress_values(**progress))
        if model_src is not None:
            rel = Path("models") / run_id / MODEL_FILE
            dest = self.home / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if Path(model_src).resolve() != dest.resolve():  # (the trainer usually wrote it in place)
                shutil.move(str(model_src), dest)  # a rename when on the same file system
            vals["model_path"], vals["model_bytes"] = str(rel), dest.stat().st_size
        self._write(runs.update().where(runs.c.id == run_id).values(**vals))
        try:
            self.enforce_retention(rec.workspace)
        except sa.exc.SQLAlchemyError:  # retention can wait for the next run; the result cannot
            pass
        return self.get(run_id)

    def model_file(self, run_id: str) -> Path:
        """Where the run's model is kept: its trainer writes it here, once (runs/service.py)."""
        if not _RUN_ID_RE.match(run_id):
            raise StoreError(f"not a run id: {run_id!r}")
        return self.models_dir / run_id / MODEL_FILE

    def get(self, run_id: str) -> RunRecord | None:
        if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(runs.select().where(runs.c.id == run_id)).first()
        return self._record(row) if row is not None else None

    def list_runs(self, workspace: str | None = None, *, shared_only: bool = False, group_id: str | None = None,
                  preset: str | None = None, states: Iterable[str] | None = None,
                  limit: int = 500) -> list[RunRecord]:
        """Newest first."""
        q = runs.select()
        if workspace is not None:
            q = q.where(runs.c.workspace == check_workspace(workspace))
        if shared_only:
            q = q.where(runs.c.shared.is_(True))
        if group_id is not None:
            q = q.where(runs.c.group_id == group_id)
        if preset is not None:
            q = q.where(runs.c.preset == preset)
        if states is not None:
            q = q.where(runs.c.state.in_(list(states)))
        q = q.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(int(limit))
        with self.engine.connect() as conn:
            return [self._record(r) for r in conn.execute(q)]

    def has_workspace(self, workspace: str) -> bool:
        """Whether any run is recorded under `workspace`."""
        q = sa.select(runs.c.id).where(runs.c.workspace == check_workspace(workspace)).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(q).first() is not None

    def issue_workspace(self) -> str:
        """A new workspace key signed with this home's secret (xray_core/runs/keys.py)."""
        try:
            return keys.issue(self.home)
        except OSError as e:
            raise StoreError(f"cannot sign a workspace key: {e.strerror or e}") from None

    def workspace_issued(self, workspace) -> bool:
        """Whether a link may open `workspace`: a key this server signed, or one issued before
        keys were signed that already holds runs."""
        try:
            return keys.signed(workspace, self.home) or (
                isinstance(workspace, str) and 16 <= len(workspace) <= 64 and self.has_workspace(workspace))
        except (StoreError, OSError):
            return False

    def _remove_files(self, run_id: str) -> None:
        if _RUN_ID_RE.match(run_id):  # never let a crafted id walk out of models/
            shutil.rmtree(self.models_dir / run_id, ignore_errors=True)

    def delete(self, run_id: str) -> bool:
        """Remove a run and its model files. False if there is no such run."""
        if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
            return False
        n = self._write(runs.delete().where(runs.c.id == run_id))
        self._write(run_stops.delete().where(run_stops.c.run_id == run_id))
        self._remove_files(run_id)
        return n > 0

    def set_shared(self, run_id: str, shared: bool, nickname: str | None = None) -> None:
        vals: dict[str, Any] = {"shared": bool(shared)}
        if nickname is not None:
            nick = " ".join(str(nickname).split())[:40]
            vals["nickname"] = nick or None
        if self._write(runs.update().where(runs.c.id == run_id).values(**vals)) == 0:
            raise StoreError(f"no run {run_id!r}")

    def recover(self, alive_ids: Iterable[str] = (), stale_seconds: float = 30.0) -> list[str]:
        """Mark runs whose writer is gone as interrupted (their epochs stay); returns their ids.

        `alive_ids`: the runs this process is recording right now (the caller knows them:
        `recorder.live_run_ids()`); they are never marked. Gone = the owner is a process on
        this host that is no longer alive, or has our pid but wrote before this process
        started (a restarted container reuses pids), or the heartbeat is older than
        `stale_seconds` (a process on another host)."""
        host = socket.gethostname()
        now = time.time()
        mine = set(alive_ids)
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(runs.c.id, runs.c.owner, runs.c.heartbeat_at, runs.c.epochs_done)
                                .where(runs.c.state.in_(ACTIVE))).all()
        out = []
        for run_id, owner, hb, epochs_done in rows:
            o_host, _, o_proc = (owner or "").rpartition(":")
            o_pid, _, o_start = o_proc.partition("@")
            stale = hb is None or now - hb > stale_seconds
            if run_id in mine:
                dead = False
            elif o_host == host and o_pid.isdigit():
                pid = int(o_pid)
                if pid == os.getpid():  # only a previous process with our pid wrote before we started
                    dead = hb is None or hb < _PROCESS_START
                else:  # trust a live pid over a late heartbeat (a busy machine), unless it is far too
                    # late: then the pid most likely belongs to another program now
                    reused = o_start.isdigit() and proc_start(pid) != int(o_start)  # another process now
                    dead = not pid_alive(pid) or reused or hb is None or now - hb > 10 * stale_seconds
            else:
                dead = stale
            if not dead:
                continue
            cond = [runs.c.id == run_id, runs.c.state.in_(ACTIVE)]
            cond.append(runs.c.heartbeat_at.is_(None) if hb is None else runs.c.heartbeat_at == hb)
            n = self._write(runs.update().where(*cond).values(
                state="interrupted", finished_at=now,
                error=f"interrupted at epoch {epochs_done}: the server stopped"))
            if n:
                out.append(run_id)
        return out

    # -- groups --
    def create_group(self, workspace: str, kind: str, spec: dict) -> str:
        check_workspace(workspace)
        if kind not in GROUP_KINDS:
            raise StoreError(f"unknown group kind {kind!r}: choose one of {', '.join(GROUP_KINDS)}")
        gid = secrets.token_hex(8)
        self._write(groups.insert().values(id=gid, workspace=workspace, kind=kind, spec=_clean(spec),
                                           created_at=time.time()))
        return gid

    def get_group(self, group_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(groups.select().where(groups.c.id == group_id)).first()
        return dict(row._mapping) if row is not None else None

    def list_groups(self, workspace: str) -> list[dict]:
        check_workspace(workspace)
        with self.engine.connect() as conn:
            rows = conn.execute(groups.select().where(groups.c.workspace == workspace)
                                .order_by(groups.c.created_at.desc())).all()
        return [dict(r._mapping) for r in rows]

    # -- stop anywhere --
    def request_stop(self, run_id: str, by: str | None = None) -> RunRecord:
        """Ask the process recording this run, on any server of this database, to stop it (its
        recorder polls `stop_requested`). Refused in one line when the run is not queued or
        training. Asking twice is the same as once."""
        rec = self.get(run_id)
        if rec is None:
            raise StoreError(f"no run {str(run_id)[:40]!r} (see `python -m xray_core runs list`)")
        if not rec.active:
            raise StoreError(f"run {run_id} is not queued or training (it is {rec.state})")
        try:
            self._write(run_stops.insert().values(run_id=run_id, requested_at=time.time(),
                                                  requested_by=(by or self._local_owner)[:300]))
        except sa.exc.IntegrityError:
            pass                               # already asked
        return rec

    def stop_requested(self, run_id: str) -> bool:
        """Whether a stop was asked for this run (by any process on this database)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(run_stops.c.run_id).where(run_stops.c.run_id == run_id)).first() is not None

    # -- class experiments (runs/classes.py) --
    def create_class_experiment(self, title: str, setups: list[dict]) -> str:
        if not setups:
            raise StoreError("a class experiment needs setups")
        cid = secrets.token_hex(8)
        self._write(class_experiments.insert().values(
            id=cid, title=" ".join(str(title or "").split())[:200], setups=_clean(setups), state="open",
            created_at=time.time(), closed_at=None))
        return cid

    def get_class_experiment(self, class_id: str) -> dict | None:
        if not isinstance(class_id, str) or not _CLASS_ID_RE.match(class_id):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(class_experiments.select().where(class_experiments.c.id == class_id)).first()
        return dict(row._mapping) if row is not None else None

    def list_class_experiments(self, states: Iterable[str] | None = None, limit: int = 100) -> list[dict]:
        """Newest first."""
        q = class_experiments.select()
        if states is not None:
            q = q.where(class_experiments.c.state.in_(list(states)))
        q = q.order_by(class_experiments.c.created_at.desc()).limit(int(limit))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def close_class_experiment(self, class_id: str) -> bool:
        """Close it (no more assignments; its runs and status stay). False if it was not open."""
        return self._write(class_experiments.update()
                           .where(class_experiments.c.id == class_id, class_experiments.c.state == "open")
                           .values(state="closed", closed_at=time.time())) > 0

    def assign_class_setup(self, class_id: str, workspace: str, pick) -> dict:
        """The next turn of an open class experiment, written in one transaction:
        `pick(counts)` gets how many turns each setup has had and returns the setup's index;
        the turn's seed is its number (0, 1, 2, … : distinct per turn). Two replicas asking
        at once both succeed with different turns (the loser of the primary key retries)."""
        check_workspace(workspace)
        for _attempt in range(20):
            try:
                with self._writer.begin() as conn:
                    row = conn.execute(class_experiments.select()
                                       .where(class_experiments.c.id == class_id)).first()
                    if row is None:
                        raise StoreError(f"no class experiment {str(class_id)[:40]!r}")
                    if row.state != "open":
                        raise StoreError(f"class experiment {class_id} is closed: ask your teacher for the new one")
                    done = conn.execute(sa.select(class_assignments.c.setup, sa.func.count())
                                        .where(class_assignments.c.experiment_id == class_id)
                                        .group_by(class_assignments.c.setup)).all()
                    counts = [0] * len(row.setups)
                    for setup, n in done:
                        if 0 <= setup < len(counts):
                            counts[setup] = n
                    number = conn.execute(sa.select(sa.func.coalesce(sa.func.max(class_assignments.c.number), -1))
                                          .where(class_assignments.c.experiment_id == class_id)).scalar() + 1
                    setup = int(pick(list(counts)))
                    conn.execute(class_assignments.insert().values(
                        experiment_id=class_id, number=number, setup=setup, seed=number, workspace=workspace,
                        created_at=time.time()))
                return {"experiment_id": class_id, "number": number, "setup": setup, "seed": number,
                        "workspace": workspace}
            except sa.exc.IntegrityError:    # another replica took this turn meanwhile: take the next
                time.sleep(0.01 * (1 + _attempt))
        raise StoreError(f"class experiment {class_id}: too many students joining at once, try again")

    def list_class_assignments(self, class_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(class_assignments.select().where(class_assignments.c.experiment_id == class_id)
                                .order_by(class_assignments.c.number)).all()
        return [dict(r._mapping) for r in rows]

    def class_runs(self, class_id: str) -> list[dict]:
        """The runs of a class experiment, light (no curves): id, workspace, state, config, result."""
        q = (sa.select(runs.c.id, runs.c.workspace, runs.c.state, runs.c.config, runs.c.result,
                       runs.c.epochs_done, runs.c.epochs, runs.c.created_at)
             .where(runs.c.group_id == class_id).order_by(runs.c.created_at, runs.c.id))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def class_curves(self, class_id: str) -> list[dict]:
        """The runs of a class experiment with their epoch curves (the projector's race)."""
        q = (sa.select(runs.c.id, runs.c.state, runs.c.config, runs.c.history, runs.c.epochs_done, runs.c.epochs)
             .where(runs.c.group_id == class_id).order_by(runs.c.created_at, runs.c.id))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # -- send to class (runs/classes.py: send, pinned) --
    def pin_to_class(self, setup: dict | None, message: str | None) -> int:
        msg = " ".join(str(message or "").split())[:300] or None
        with self._writer.begin() as conn:
            res = conn.execute(class_pins.insert().values(setup=_clean(setup) if setup else None, message=msg,
                                                          created_at=time.time()))
            return int(res.inserted_primary_key[0])

    def class_pin(self) -> dict | None:
        """The newest send (None when there was none or it cleared both)."""
        with self.engine.connect() as conn:
            row = conn.execute(class_pins.select().order_by(class_pins.c.id.desc()).limit(1)).first()
        if row is None or (not row.setup and not row.message):
            return None
        return dict(row._mapping)

    # -- accounts (runs/accounts.py) --
    def account_workspace(self, account: str) -> str | None:
        """The workspace bound to `account`, or None."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(account_workspaces.c.workspace)
                                .where(account_workspaces.c.account == account)).scalar()

    def workspace_account(self, workspace) -> str | None:
        """The account a workspace is bound to (None: a link-key workspace, or not a workspace)."""
        if not isinstance(workspace, str) or not _WORKSPACE_RE.match(workspace):
            return None
        with self.engine.connect() as conn:
            return conn.execute(sa.select(account_workspaces.c.account)
                                .where(account_workspaces.c.workspace == workspace)).scalar()

    def bind_account(self, account: str, workspace: str, email: str | None = None) -> str:
        """Bind `workspace` to `account` unless the account already has one; returns the
        account's workspace. The primary key decides a race (two tabs signing in at once on
        two replicas): the loser reads the winner's workspace."""
        check_workspace(workspace)
        if not isinstance(account, str) or not 1 <= len(account) <= 64:
            raise StoreError("an account id is 1-64 characters")
        if self.workspace_account(workspace) not in (None, account):
            raise StoreError("that workspace belongs to another account")
        try:
            with self._writer.begin() as conn:
                conn.execute(account_workspaces.insert().values(
                    account=account, workspace=workspace, email=(email or None) and str(email)[:300],
                    created_at=time.time()))
        except sa.exc.IntegrityError:
            pass
        bound = self.account_workspace(account)
        if bound is None:   # the workspace was taken by another account in the meantime
            raise StoreError("that workspace belongs to another account")
        return bound

    # -- retention --
    def _drop_model(self, run_id: str) -> None:
        self._write(runs.update().where(runs.c.id == run_id).values(model_path=None, model_bytes=None))
        self._remove_files(run_id)

    def enforce_retention(self, workspace: str) -> None:
        """Caps from the environment: XRAY_LAB_MAX_RUNS records per workspace (oldest ended
        runs deleted beyond it), XRAY_LAB_MAX_MODELS models per workspace and
        XRAY_LAB_MAX_DISK_MB for all models: the oldest models are dropped first, their
        records and curves stay. 0 = no cap."""
        check_workspace(workspace)
        max_runs = _env_int("XRAY_LAB_MAX_RUNS", DEFAULT_MAX_RUNS)
        max_models = _env_int("XRAY_LAB_MAX_MODELS", DEFAULT_MAX_MODELS)
        max_disk = _env_int("XRAY_LAB_MAX_DISK_MB", DEFAULT_MAX_DISK_MB) * 1024 * 1024
        newest_first = (runs.c.created_at.desc(), runs.c.id.desc())
        # a model's age is when it was made: a long run started early still has the newest model
        newest_model_first = (sa.func.coalesce(runs.c.finished_at, runs.c.created_at).desc(), runs.c.id.desc())
        with self.engine.connect() as conn:
            ws_runs = conn.execute(sa.select(runs.c.id, runs.c.state)
                                   .where(runs.c.workspace == workspace).order_by(*newest_first)).all()
            ws_models = conn.execute(sa.select(runs.c.id)
                                     .where(runs.c.workspace == workspace, runs.c.model_path.is_not(None))
                                     .order_by(*newest_model_first)).scalars().all()
        if max_runs:
            for run_id, state in ws_runs[max_runs:]:
                if state in TERMINAL:
                    self.delete(run_id)
        if max_models:
            for run_id in ws_models[max_models:]:
                self._drop_model(run_id)
        if max_disk:
            with self.engine.connect() as conn:
                models = conn.execute(sa.select(runs.c.id, runs.c.model_bytes)
                                      .where(runs.c.model_path.is_not(None)).order_by(*newest_model_first)).all()
            total = sum(b or 0 for _, b in models)
            for run_id, size in reversed(models):  # oldest first
                if total <= max_disk:
                    break
                self._drop_model(run_id)
                total -= size or 0


# ---- the process-wide store ------------------------------------------------------

_STORE: RunStore | None = None
_STORE_KEY: tuple | None = None
_STORE_LOCK = threading.Lock()


def get_store() -> RunStore:
    """The process-wide store for the current XRAY_LAB_HOME / XRAY_LAB_DB, created once
    (a new one only if those variables change, e.g. between tests)."""
    global _STORE, _STORE_KEY
    key = (settings.raw("XRAY_LAB_HOME"), settings.raw("XRAY_LAB_DB"))
    with _STORE_LOCK:
        if _STORE is None or _STORE_KEY != key:
            old, _STORE, _STORE_KEY = _STORE, RunStore(), key
            if old is not None:
                old.engine.dispose()  # idle connections only; a recorder still using it reconnects
        return _STORE


def to_json_text(records: list[RunRecord]) -> str:
    return json.dumps([r.to_json() for r in records], indent=2, allow_nan=False)
