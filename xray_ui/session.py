"""Per-browser-session state (runs, current job) and process-wide shared resources.

- Each browser session owns its runs in st.session_state; nothing here reaches
  into another session's jobs, so a Stop in one tab never touches another's job.
- Datasets are shared by all sessions (st.cache_resource, read-only arrays).
- When a session goes away (tab closed), its running jobs are stopped and its
  models become unreachable, so a long-lived server does not grow without limit.
"""
from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from xray_core.dataset import Dataset
from xray_core.training import TrainingJob

MAX_RUNS_WITH_MODELS = 8  # older runs keep their record and curves but drop the model
# Train in recycled worker processes (xray_core/worker.py): bounds Keras' per-model
# memory leak and keeps the server responsive. XRAY_LAB_ISOLATE=0 trains in threads.
ISOLATE = os.environ.get("XRAY_LAB_ISOLATE", "1") != "0"


def start_job(config, dataset: Dataset, preset: str | None) -> "Run":
    """Start this session's new training job and record it as the session's current run."""
    job = TrainingJob(config, dataset, isolated=ISOLATE).start()
    guard().watch(job)
    return runs().add(job, preset)


@st.cache_resource(show_spinner=False)
def warm_workers() -> bool:
    """Once per server: start idle training processes so the first Train is quick."""
    if ISOLATE:
        from xray_core.training import SCHEDULER
        from xray_core.worker import POOL
        POOL.prewarm(SCHEDULER.cap)
    return True


@dataclass
class Run:
    number: int
    job: TrainingJob
    preset: str | None = None
    announced: bool = False     # the page has rerun once to show the final results
    record: dict | None = None  # frozen once finished

    @property
    def label(self) -> str:
        """e.g. "#3 p1-task5, 10 epochs": the closest preset and what the run changed."""
        from xray_core.presets import describe
        return f"#{self.number} {describe(self.job.config)}"


@dataclass
class SessionRuns:
    runs: list[Run] = field(default_factory=list)
    counter: int = 0

    @property
    def current(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    def add(self, job: TrainingJob, preset: str | None) -> Run:
        self.counter += 1
        run = Run(self.counter, job, preset)
        self.runs.append(run)
        for old in self.runs[:-MAX_RUNS_WITH_MODELS]:
            if old.job.snapshot().finished:
                old.job.model = None  # free the weights; the record and curves stay
        return run


def runs() -> SessionRuns:
    if "xray_runs" not in st.session_state:
        st.session_state["xray_runs"] = SessionRuns()
    guard()  # register this session's release hook
    return st.session_state["xray_runs"]


class _Guard:
    """Lives exactly as long as the browser session; knows its jobs to stop them."""

    def __init__(self):
        self.jobs: list[TrainingJob] = []
        self.lock = threading.Lock()

    def watch(self, job: TrainingJob) -> None:
        with self.lock:
            self.jobs = [j for j in self.jobs if not j.snapshot().finished] + [job]


def _release(g: _Guard) -> None:
    with g.lock:
        for job in g.jobs:
            job.stop()
        g.jobs.clear()


@st.cache_resource(scope="session", on_release=_release, show_spinner=False)
def guard() -> _Guard:
    return _Guard()


@st.cache_resource(max_entries=6, show_spinner="Loading the dataset…")
def shared_dataset(source: str) -> Dataset:
    """One copy per source for the whole server (arrays are only read)."""
    from xray_core.data import load_dataset
    return load_dataset(source)


def uploaded_zip_path(data: bytes) -> str:
    """Store an uploaded zip in the app's private folder under a content-addressed name
    (xray_core/uploads.py: unique temp names, size-capped, old ones removed)."""
    from xray_core.uploads import store_zip
    return store_zip(data)


def model_bytes(job: TrainingJob) -> bytes:
    """The run's model as a .keras file (made only when the download is clicked)."""
    if job.model is None:
        return b""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.keras"
        job.model.save(path)
        return path.read_bytes()
