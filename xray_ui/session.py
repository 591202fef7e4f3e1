"""Per-browser-session state, the workspace in the link, and process-wide shared resources.

- A workspace is an unguessable token in the link (`?ws=…`): every run is recorded in the
  run store (xray_core.runs.store) under it, so a refresh, a bookmark, a second tab or a server
  restart finds the runs again; a link without a token gets a new, empty workspace.
- Signed in with the school's account (xray_ui/accounts.py, issue 25 item 4), the workspace is
  the account's (xray_core/runs/accounts.py): no token in the link, and a link naming it opens
  nothing for anyone else.
- Each browser session also keeps the jobs it started in st.session_state (the Classify
  page uses their models), but closing the tab no longer stops them: a run stops when asked.
- A job still training in this process is found again by its run id (recorder.live_job),
  and the few most recent finished jobs stay reachable for the misclassified-patch viewer.
- Datasets are shared by all sessions (st.cache_resource, read-only arrays).
"""
from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from xray_core import settings
from xray_core.errors import XrayLabError, log_once
from xray_core.runs import accounts, keys, recorder, service
from xray_core.data.dataset import Dataset
from xray_core.runs.store import RunStore, default_home, get_store
from xray_core.train.job import TrainingJob
from xray_ui.throttle import client_key

_log = logging.getLogger(__name__)
MAX_RUNS_WITH_MODELS = 8  # older runs keep their record and curves but drop the in-memory model
# Train in recycled worker processes (xray_core/worker.py): bounds Keras' per-model
# memory leak and keeps the server responsive. XRAY_LAB_ISOLATE=0 trains in threads.
ISOLATE = settings.get("XRAY_LAB_ISOLATE")
BACKEND = service.default_backend(ISOLATE)   # how this server's runs train: worker, thread or ray
# Tokens the app hands out are signed with the home's secret (xray_core/runs/keys.py, 32
# characters); a link opens only those (and older 22-character keys that hold runs). Shorter
# names (the CLI's "cli", "alice") are guessable, so a link cannot open them.
WS_PARAM = "ws"
_WS_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
RECOVER_EVERY_S = 30.0    # runs of a server that died are marked interrupted at most this late


# ---- the workspace ----------------------------------------------------------------------

def valid_workspace(token) -> bool:
    return isinstance(token, str) and bool(_WS_RE.match(token))


def new_workspace() -> str:
    """A key signed with the home's secret (xray_core/runs/keys.py): only keys this server
    issued open a workspace from a link."""
    try:
        return get_store().issue_workspace()
    except XrayLabError:   # no store: sign with the home's secret all the same
        try:
            return keys.issue(default_home())
        except OSError:    # nor a home: this session works, its link will not open again
            return secrets.token_urlsafe(16)


def issued_workspace(token) -> bool:
    """A well-formed key this server issued (signed, or an older key that already has runs)."""
    if not valid_workspace(token):
        return False
    if token == st.session_state.get("xray_ws"):
        return True        # this session's own key, checked when it was taken
    try:
        return get_store().workspace_issued(token)
    except XrayLabError:
        try:
            return keys.signed(token, default_home())
        except OSError:
            return False


def client_id() -> str | None:
    """Who this browser is, for the class queue's per-client cap: the connection's address;
    behind a reverse proxy on this host (the connection comes from loopback) the address the
    proxy appended last to X-Forwarded-For (earlier entries are the browser's to forge)."""
    try:
        ip = st.context.ip_address
        fwd = st.context.headers.get("X-Forwarded-For") if st.context.headers else None
    except (AttributeError, RuntimeError):   # no browser (AppTest, a script)
        return None
    return client_key(ip, fwd).removeprefix("client:")   # the teacher login's rule too


def workspace() -> str:
    """This session's workspace token, kept in the link so a refresh or a bookmark finds it.

    The link wins (a bookmark opened in a tab that had another workspace); a page switch
    that dropped the query string gets the session's token back; no token -> a new one;
    a malformed token -> a new one and a one-line notice (st.session_state["_ws_notice"]).
    Signed in (xray_ui/accounts.py), it is the account's workspace and the link carries no key;
    a link naming a workspace bound to an account opens only for that account."""
    from xray_ui.accounts import account
    if (acct := account()) is not None:
        return account_workspace(acct)
    raw = st.query_params.get(WS_PARAM)
    if st.session_state.pop("_ws_account", None) is not None:   # signed out: the account keeps its workspace
        st.session_state.pop("xray_ws", None)
    if issued_workspace(raw) and link_opens(raw, None):
        st.session_state["xray_ws"] = raw
        return raw
    ws = st.session_state.get("xray_ws")
    if raw is not None:
        ws = new_workspace()
        if valid_workspace(raw) and not link_opens(raw, None):
            st.session_state["_ws_error"] = ("That link's workspace belongs to an account: sign in as its owner "
                                             "to open it. This is a new, empty workspace.")
        else:
            st.session_state["_ws_notice"] = ("That link's workspace key is not valid: this is a new, empty "
                                              "workspace.")
    elif not valid_workspace(ws):
        ws = new_workspace()
    st.session_state["xray_ws"] = ws
    st.query_params[WS_PARAM] = ws
    return ws


def link_opens(key: str, acct) -> bool:
    """Whether a link's key may open for this viewer as far as accounts go (runs/accounts.py).
    The session's own link-key workspace was checked when it was taken: no query per page run."""
    if key == st.session_state.get("xray_ws") and st.session_state.get("_ws_account") is None:
        return True
    try:
        return accounts.link_opens(key, acct, get_store())
    except XrayLabError:   # no store: nothing is bound that it could open
        return True


def account_workspace(acct) -> str:
    """The signed-in account's workspace, looked up once per session (then kept in it); the link
    carries no key (it would open nothing for anyone else), so a key found there is dropped."""
    ws = st.session_state.get("xray_ws")
    if st.session_state.get("_ws_account") != acct.id or not valid_workspace(ws):
        try:
            ws = accounts.workspace_of(acct, get_store())
            st.session_state["_ws_account"] = acct.id
        except XrayLabError as e:   # no store: this session works, its runs are not kept with the account
            from xray_ui.texts import plain
            if st.session_state.pop("_ws_account", None) is not None or not valid_workspace(ws):
                ws = new_workspace()    # never another account's workspace kept in this session
            st.session_state["_ws_error"] = f"Your account's workspace cannot be opened now: {plain(e)}"
        st.session_state["xray_ws"] = ws
    raw = st.query_params.get(WS_PARAM)
    if raw is not None:
        if raw != ws and valid_workspace(raw):
            st.session_state["_ws_notice"] = (
                "Signed in, you work in your account's workspace: the link's workspace was not opened "
                "(sign out to open a link's workspace).")
        del st.query_params[WS_PARAM]
    return ws


def account_bound() -> bool:
    """Whether this session's workspace is its signed-in account's (then no link carries its key)."""
    return st.session_state.get("_ws_account") is not None


def workspace_notice() -> None:
    if msg := st.session_state.pop("_ws_error", None):
        st.error(msg)
    if msg := st.session_state.pop("_ws_notice", None):
        st.warning(msg)


def store() -> RunStore:
    """The process-wide run store; runs of a server that died are marked interrupted
    once at start-up and then at most every RECOVER_EVERY_S (another replica may die)."""
    s = get_store()
    _recover(s.url, int(time.time() // RECOVER_EVERY_S))
    return s


@st.cache_resource(max_entries=2, show_spinner=False)
def _recover(url: str, tick: int) -> list[str]:
    try:
        return service.recover(get_store())
    except Exception as e:  # a store hiccup must not take the page down; the next tick retries
        log_once(_log, "run store: recovering runs of dead servers failed (retried every "
                       f"{RECOVER_EVERY_S:g} s)", e)
        return []


# ---- jobs of this process ---------------------------------------------------------------

_RECENT: "OrderedDict[str, TrainingJob]" = OrderedDict()   # run id -> job, newest last
_RECENT_LOCK = threading.Lock()


def job_for(run_id: str) -> TrainingJob | None:
    """The job of a run trained in this server process: still training (recorder.live_job)
    or among the last few finished (their test predictions feed the patch viewer)."""
    job = recorder.live_job(run_id)
    if job is not None:
        return job
    with _RECENT_LOCK:
        return _RECENT.get(run_id)


def _remember(run_id: str, job: TrainingJob) -> None:
    with _RECENT_LOCK:
        _RECENT[run_id] = job
        while len(_RECENT) > MAX_RUNS_WITH_MODELS:
            _, old = _RECENT.popitem(last=False)
            if old.snapshot().finished:
                old.model = None  # the model is in the store; free the weights


def start_job(config, dataset: Dataset, preset: str | None, label: str | None = None,
              group_id: str | None = None) -> "Run":
    """Start a training job, record it in this session's workspace (in `group_id`: a class
    experiment's turn), and make it the session's current run."""
    # alone: the server runs at most one queued/running Train-page run per workspace
    started = service.start(config, workspace=workspace(), dataset=dataset, backend=BACKEND, store=store(),
                            preset=preset, label=label, client=client_id(), alone=True, group_id=group_id)
    job, run_id = started.job, started.run_id
    _remember(run_id, job)
    run = runs().add(job, preset, run_id)
    st.session_state["current_run"] = run_id
    return run


def stop_run(run_id: str) -> int:
    """■ Stop: the job at once if it trains in this process, and its stop flag in the store,
    which the server training it (another replica) polls."""
    return service.stop_runs([run_id], store=store(), by="owner")


@st.cache_resource(show_spinner=False, ttl=60)   # re-checked each minute: a cluster may come back
def warm_workers() -> str | None:
    """Once per server: start idle training processes so the first Train is quick; on the
    Ray backend, size the trainer cap to the cluster. Returns a problem to show, or None."""
    backend = settings.get("XRAY_LAB_BACKEND")
    if backend not in ("local", "ray"):
        return f"XRAY_LAB_BACKEND={backend!r} is not a backend (local or ray): training will fail."
    if backend == "ray":
        from xray_core.train.backends import ray as ray_backend
        from xray_core.errors import XrayLabError
        from xray_core.train.job import SCHEDULER
        try:
            SCHEDULER.cap = ray_backend.cluster_cap()
        except XrayLabError as e:   # the app keeps serving; runs fail with the same line until it is back
            return f"Training cluster: {e}"
        return None
    if ISOLATE:
        from xray_core.train.job import SCHEDULER
        from xray_core.train.backends.worker import POOL
        POOL.prewarm(SCHEDULER.cap)
    return None


def prepare_model(cfg, dataset) -> None:
    """Have an idle training process trace the model on the sidebar now and hold the data,
    so a Train with it shows its first point sooner (xray_core/pretrace.py). Cheap on every
    page run."""
    if BACKEND != "worker":
        return
    from xray_core.train.pretrace import n_train
    from xray_core.train.backends.worker import POOL
    from xray_core.train.job import SCHEDULER
    q = SCHEDULER.status()
    if q["waiting"] or q["held"]:
        # runs are queued: the next idle worker is theirs, and a model traced for this sidebar
        # (another seed, another setup) would only delay them (a class experiment, every student
        # on their own seed: trainers spent ~70 % more CPU per run)
        return
    try:
        POOL.prepare(cfg, n_train(cfg, dataset), dataset)
    except Exception as e:   # only a head start: a Train meets the same problem and says it
        log_once(_log, "worker pool: preparing the sidebar's model failed", e)


@dataclass
class Run:
    number: int
    job: TrainingJob
    preset: str | None = None
    run_id: str | None = None   # its record in the run store
    announced: bool = False     # the page has rerun once to show the final results

    @property
    def label(self) -> str:
        """e.g. "#3 p1-task5, 10 epochs": the closest preset and what the run changed."""
        from xray_core.presets import describe
        return f"#{self.number} {describe(self.job.config)}"


@dataclass
class SessionRuns:
    """The jobs this browser session started (their models feed the Classify page)."""
    runs: list[Run] = field(default_factory=list)
    counter: int = 0

    @property
    def current(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    def add(self, job: TrainingJob, preset: str | None, run_id: str | None = None) -> Run:
        self.counter += 1
        run = Run(self.counter, job, preset, run_id)
        self.runs.append(run)
        for old in self.runs[:-MAX_RUNS_WITH_MODELS]:
            if old.job.snapshot().finished:
                old.job.model = None  # free the weights; the record and curves stay
        return run


def runs() -> SessionRuns:
    if "xray_runs" not in st.session_state:
        st.session_state["xray_runs"] = SessionRuns()
    return st.session_state["xray_runs"]


@st.cache_resource(max_entries=6, show_spinner="Loading the dataset…")
def shared_dataset(source: str) -> Dataset:
    """One copy per source for the whole server (arrays are only read)."""
    from xray_core.data.load import load_dataset
    return load_dataset(source)


def uploaded_zip_path(data: bytes) -> str:
    """Store an uploaded zip in the app's private folder under a content-addressed name
    (xray_core/uploads.py: unique temp names, size-capped, old ones removed)."""
    from xray_core.data.uploads import store_zip
    return store_zip(data)


def model_file_bytes(path: str | None) -> bytes:
    """A stored run's .keras file (read only when the download is clicked)."""
    if not path:
        return b""
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""
