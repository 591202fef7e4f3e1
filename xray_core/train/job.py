"""A training job: one run's live state, that any number of readers poll.

How it fits together (Streamlit drops `st.*` calls made from threads it did not start,
and a widget interaction interrupts training run in the script thread, so the job lives
in its own thread and the page only polls it):
- `TrainingJob.start()` starts a plain thread; it never touches any UI. The thread waits
  its turn in the class queue (`scheduler.py`), then hands the job to its **trainer**:
  Keras in this thread (`fit.InThisThread`, the default), a worker process
  (`backends/worker.py`) or a Ray actor (`backends/ray.py`). The trainer is given to the
  job (`trainer=`); the job imports none of them.
- Trainers and callbacks publish through the job's **events** (`began_training`,
  `batch_done`, `epoch_done`, `mirror`, `finished`, ...), each one short and under the
  job's lock; readers call `snapshot()`: a consistent copy in microseconds, so polling
  never slows training. Nothing outside this class touches its fields.
- `stop()` sets a flag (`stop_requested`) that the trainer turns into
  `model.stop_training` after the current batch; what was learned is kept and evaluated.
- `model_path`: where the run's model is written, once, by the trainer (the run store's
  place for it, see runs/service.py). `model` loads it from there only when a page asks.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import socket
import threading
import time
import weakref
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from xray_core import CLASSES
from xray_core.config import RunConfig
from xray_core.data.dataset import Dataset
from xray_core.errors import XrayLabError, one_line
from xray_core.train.eta import eta_seconds
from xray_core.train.fit import InThisThread
from xray_core.train.metrics import evaluate_predictions  # noqa: F401  (the job's results; CLI evaluate)
from xray_core.train.scheduler import SCHEDULER, Busy, Scheduler  # noqa: F401  (re-exported)

from xray_core.train.states import (  # noqa: F401  (re-exported: the states readers compare with)
    DONE, EVALUATING, FAILED, FINISHED, LOADING, QUEUED, STOPPED, TRAINING)

_log = logging.getLogger(__name__)
_JOBS: "weakref.WeakValueDictionary[str, TrainingJob]" = weakref.WeakValueDictionary()
_ids = itertools.count(1)


def preview_labels(preview: dict | None) -> np.ndarray | None:
    """A snapshot's `preview` as a uint8 (H, W) label map (None when there is none)."""
    if not preview:
        return None
    return np.frombuffer(zlib.decompress(preview["labels"]), np.uint8).reshape(preview["shape"])


def get_job(job_id: str) -> "TrainingJob | None":
    """A live job by id (e.g. from the URL after a browser refresh); None once nobody holds it."""
    return _JOBS.get(job_id)


def live_jobs() -> list["TrainingJob"]:
    return list(_JOBS.values())


class Trainer(Protocol):
    """Runs a job's training somewhere and publishes through the job's events."""
    name: str

    def train(self, job: "TrainingJob") -> None: ...


# ---- what readers see ------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    job_id: str
    state: str
    queue_position: int | None
    epoch: int                 # epochs completed
    epochs: int
    step: int                  # step within the current epoch
    steps_per_epoch: int
    elapsed: float             # seconds since training started (0 while queued)
    eta: float | None          # seconds left, None until the first batch
    batch_loss: list           # per-batch loss (not the running mean Keras logs)
    batch_accuracy: list
    batch_epoch: list          # x position of each batch in epochs (e.g. 2.5)
    history: dict              # per-epoch loss, accuracy, val_loss, val_accuracy
    unit_stats: list           # per-epoch dead/saturated unit shares (FC only)
    error: str | None
    result: dict | None        # test metrics etc. when finished
    # segmentation runs: one validation film's predicted map at the last epoch's end
    # ({"epoch", "film", "index", "shape", "labels": zlib bytes}; preview_labels decodes it)
    preview: dict | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def progress(self) -> float:
        total = self.epochs * max(self.steps_per_epoch, 1)
        done = self.epoch * self.steps_per_epoch + (self.step if self.epoch < self.epochs else 0)
        return 1.0 if self.state == DONE else min(1.0, done / total if total else 0.0)


# ---- the job ---------------------------------------------------------------------

class TrainingJob:
    def __init__(self, config: RunConfig, dataset: Dataset | None = None, *,
                 scheduler: Scheduler | None = None, probe: bool = True, trainer: Trainer | None = None,
                 owner: str | None = None, client: str | None = None, alone: bool = False,
                 prepared=None, model_path: str | os.PathLike | None = None):
        """`trainer`: where it trains (default: Keras in this job's thread, fit.InThisThread).
        `owner` (its workspace) and `client` (a browser's address): the class queue's
        fairness (scheduler.py); `alone`: refused while the owner has another run.
        `prepared`: a model from pretrace.prepare(), used if made for this config and
        patch count (its train step already traced). `model_path`: where the trainer
        writes the model (None: kept in memory only)."""
        self.config = config.resolved()
        self.trainer = trainer or InThisThread()
        self.owner, self.client, self.alone = owner, client, alone
        self.where = {"backend": getattr(trainer, "backend", "local"), "node": socket.gethostname()}
        self.id = f"job{next(_ids)}-{os.getpid()}"
        self.probe = probe
        self.prepared = prepared
        self.pretraced = False            # trained a prepared model (its step traced in advance)
        self.model_path = Path(model_path) if model_path else None
        self.dataset: Dataset | None = dataset
        self.test_predictions: np.ndarray | None = None
        self._scheduler = scheduler or SCHEDULER
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._model = None
        # streamed state, guarded by _lock
        self._state = QUEUED
        self._epoch = 0
        self._step = 0
        self._steps_per_epoch = 0
        self._t0: float | None = None
        self._t_end: float | None = None
        self._batch_loss: list[float] = []
        self._batch_acc: list[float] = []
        self._batch_x: list[float] = []
        self._history: dict[str, list[float]] = {k: [] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        if self.config.arch == "segment":   # + the validation films' Dice per class, each epoch
            self._history.update({f"val_dice_{c}": [] for c in CLASSES})
        self._unit_stats: list[dict] = []
        self._preview: dict | None = None
        self._epoch_ends: list[float] = []   # seconds since t0 at each epoch's end (ETA)
        self._val_seconds: list[float] = []  # each epoch's validation + probe (ETA)
        self._eta_sizes = (0, 0)             # validation and test patches still to pass (ETA)
        self._remote_eta: tuple[float, float] | None = None  # (a trainer's ETA, perf_counter when it came)
        self._error: str | None = None
        self._result: dict | None = None
        self.first_batch_at: float | None = None  # perf_counter of the first published batch
        self.started_at: float | None = None
        _JOBS[self.id] = self

    # -- control --
    def start(self) -> "TrainingJob":
        if self._thread is None:
            self.started_at = time.perf_counter()
            self._thread = threading.Thread(target=self._run, name=f"xray-{self.id}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """End training after the current batch (or leave the queue); keeps what was learned."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def join(self, timeout: float | None = None) -> "TrainingJob":
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    @property
    def running(self) -> bool:
        """Its thread is alive (queued, training or finishing)."""
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> "TrainingJob":
        """Train in the calling thread (CLI, benchmarks) — same code path as start()."""
        if self.started_at is None:
            self.started_at = time.perf_counter()
        self._run()
        return self

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    @property
    def ended_at(self) -> float | None:
        """perf_counter when the job ended (None while it runs)."""
        with self._lock:
            return self._t_end

    @property
    def model(self):
        """The trained keras.Model: in memory, else loaded once from model_path when asked."""
        if self._model is None and self.model_path is not None and self.state in (DONE, STOPPED) \
                and self.model_path.is_file():
            from xray_core.tf_quiet import keras
            # a U-Net's compiled loss is a function of this app that Keras cannot look up by name;
            # readers only predict with it, so it loads uncompiled (as inference.load_model does)
            self._model = keras.models.load_model(self.model_path, compile=self.config.arch != "segment")
        return self._model

    @model.setter
    def model(self, value) -> None:
        self._model = value

    @property
    def model_in_memory(self) -> bool:
        return self._model is not None

    def snapshot(self) -> Snapshot:
        pos = self._scheduler.position(self.id)
        with self._lock:
            now = self._t_end or time.perf_counter()
            elapsed = now - self._t0 if self._t0 else 0.0
            done_steps = self._epoch * self._steps_per_epoch + self._step
            eta = None
            if self._remote_eta is not None and self._state == TRAINING:
                remote, at = self._remote_eta   # counted down between the trainer's messages
                eta = max(remote - (time.perf_counter() - at), 0.0)
            elif done_steps and self._state == TRAINING:
                eta = eta_seconds(elapsed=elapsed, epoch=self._epoch, step=self._step,
                                  steps=self._steps_per_epoch, epochs=self.config.epochs,
                                  epoch_ends=self._epoch_ends, val_seconds=self._val_seconds,
                                  n_val=self._eta_sizes[0], n_test=self._eta_sizes[1],
                                  batch_size=self.config.batch_size,
                                  first_step=(self.first_batch_at - self._t0
                                              if self.first_batch_at and self._t0 else None))
            return Snapshot(
                job_id=self.id, state=self._state,
                queue_position=pos if self._state == QUEUED else None,
                epoch=self._epoch, epochs=self.config.epochs, step=self._step,
                steps_per_epoch=self._steps_per_epoch, elapsed=elapsed, eta=eta,
                batch_loss=list(self._batch_loss), batch_accuracy=list(self._batch_acc),
                batch_epoch=list(self._batch_x),
                history={k: list(v) for k, v in self._history.items()},
                unit_stats=list(self._unit_stats), error=self._error,
                result=dict(self._result) if self._result else None, preview=self._preview)

    # -- events: what trainers and callbacks publish --
    def set_state(self, state: str) -> None:
        with self._lock:
            self._state = state

    def began_training(self, steps_per_epoch: int, n_val: int = 0, n_test: int = 0) -> None:
        with self._lock:
            self._steps_per_epoch, self._state, self._t0 = steps_per_epoch, TRAINING, time.perf_counter()
            self._eta_sizes = (n_val, n_test)

    def epoch_began(self) -> None:
        with self._lock:
            self._step = 0

    def batch_done(self, step: int, loss: float, accuracy: float, seen_share: float) -> None:
        """Batch `step` (1-based) of the current epoch; `seen_share`: the epoch's share done."""
        with self._lock:
            self._step = step
            self._batch_loss.append(loss)
            self._batch_acc.append(min(max(accuracy, 0.0), 1.0))
            self._batch_x.append(self._epoch + seen_share)
        if self.first_batch_at is None:
            self.first_batch_at = time.perf_counter()

    def epoch_done(self, epoch: int, logs: dict) -> None:
        """Epoch `epoch` (0-based) ended with these metrics (validation included)."""
        with self._lock:
            for k in self._history:
                if k in logs:
                    self._history[k].append(float(logs[k]))
            self._epoch = epoch + 1
            self._step = 0

    def epoch_clock(self, epoch_end: float, validation_seconds: float | None) -> None:
        """When the epoch ended (perf_counter, after validation and probe), for the ETA."""
        with self._lock:
            if self._t0 is not None:
                self._epoch_ends.append(epoch_end - self._t0)
            if validation_seconds is not None:
                self._val_seconds.append(validation_seconds)

    def preview_map(self, film: str, index: int, labels: np.ndarray) -> None:
        """The predicted map of validation film `index` (named `film`) at the end of the epoch
        being validated: a page redraws it each epoch. zlib-packed (a 256x256 map of 4 labels
        is ~3 KB instead of 64 KB), because a worker resends it with every progress message."""
        a = np.ascontiguousarray(labels, dtype=np.uint8)
        with self._lock:
            self._preview = {"epoch": self._epoch + 1, "film": str(film), "index": int(index),
                             "shape": tuple(a.shape), "labels": zlib.compress(a.tobytes(), 1)}

    def unit_stats_measured(self, entry: dict) -> None:
        with self._lock:
            self._unit_stats.append(entry)

    def progress_counts(self) -> tuple[int, int]:
        """(epochs done, steps into the current epoch)."""
        with self._lock:
            return self._epoch, self._step

    def finished(self, state: str, result: dict | None = None, error: str | None = None) -> None:
        with self._lock:
            self._state = state
            if result is not None:
                self._result = result
            if error is not None:
                self._error = error
            self._t_end = self._t_end or time.perf_counter()

    def note(self, error: str) -> None:
        """A reason kept with a run that still ends normally (e.g. the time limit's stop)."""
        with self._lock:
            self._error = error

    # -- events for a trainer elsewhere (worker process, Ray actor) --
    def delta(self, sent: int) -> dict:
        """What a remote reader needs since it last got `sent` batches."""
        snap = self.snapshot()
        return {
            "state": snap.state, "epoch": snap.epoch, "step": snap.step,
            "steps_per_epoch": snap.steps_per_epoch,
            "batch_loss": snap.batch_loss[sent:], "batch_accuracy": snap.batch_accuracy[sent:],
            "batch_epoch": snap.batch_epoch[sent:], "history": snap.history,
            "unit_stats": snap.unit_stats, "error": snap.error, "result": snap.result,
            "preview": snap.preview,
            # The trainer's own ETA: it knows each epoch's end and its validation time; the
            # server only sees batches arrive in bursts, so it would guess from their rate.
            "eta": snap.eta,
        }

    def mirror(self, d: dict) -> str | None:
        """Take a remote trainer's `delta`. Returns the run's final state when this message
        ends it (the job shows EVALUATING meanwhile: the trainer still hands over the model
        and test predictions), else None."""
        final = None
        with self._lock:
            state = d["state"]
            if state in (DONE, STOPPED):
                final, state = state, EVALUATING
            elif state == FAILED:
                final = FAILED
            if state == TRAINING and self._t0 is None:
                self._t0 = time.perf_counter()
            self._state = state
            self._epoch, self._step, self._steps_per_epoch = d["epoch"], d["step"], d["steps_per_epoch"]
            self._batch_loss += d["batch_loss"]
            self._batch_acc += d["batch_accuracy"]
            self._batch_x += d["batch_epoch"]
            self._history = d["history"]
            self._unit_stats = d["unit_stats"]
            self._error = d["error"]
            self._result = d["result"]
            self._preview = d.get("preview")
            if d.get("eta") is not None:
                self._remote_eta = (d["eta"], time.perf_counter())
        if d["batch_loss"] and self.first_batch_at is None:
            self.first_batch_at = time.perf_counter()
        return final

    def trainer_done(self) -> None:
        """The trainer has handed everything back: its slot in the class queue is free for the
        next run while this one finishes here."""
        self._scheduler.free(self.id)

    # -- the data --
    def load_data(self) -> Dataset:
        """The run's dataset (loaded in this thread when none was given): patches, or whole
        films for a segmentation run; the other kind is refused in one line. The data (and
        any split made from it) is fixed, not tied to the run's seed: runs that differ only in
        seed must compare on the same patches."""
        from xray_core.data.for_run import check_kind, load_for_run
        if self.dataset is None:
            self.dataset = load_for_run(self.config.data, self.config.arch)
        check_kind(self.dataset, self.config.arch)
        return self.dataset

    # -- the thread --
    def _run(self) -> None:
        try:
            admitted = self._scheduler.acquire(self.id, self._stop, owner=self.owner, client=self.client,
                                               alone=self.alone)
        except XrayLabError as e:       # Busy: refused at once, never queued
            self.finished(FAILED, error=str(e))
            return
        if not admitted:
            self.finished(STOPPED)
            return
        try:
            self.set_state(LOADING)
            self.load_data().split("train")   # a bad dataset fails here, in one line
            if self._stop.is_set():
                self.finished(STOPPED)
                return
            self.trainer.train(self)
        except XrayLabError as e:
            self.finished(FAILED, error=str(e))
        except Exception as e:  # a job must never die silently: keep the reason (and log the trace)
            self.finished(FAILED, error=one_line(e))
            _log.exception("training job %s failed", self.id)
        finally:
            with self._lock:
                self._t_end = self._t_end or time.perf_counter()
                if self._state not in FINISHED:     # a trainer that returned without saying
                    self._state, self._error = FAILED, self._error or "the trainer ended without a result"
            self._scheduler.release(self.id)

    # -- results --
    def record(self) -> dict:
        """The JSON run record: config, params, history, test metrics, classes, timing."""
        from xray_core.presets import matching_preset
        snap = self.snapshot()
        res = snap.result or {}
        preset = matching_preset(self.config)
        return {
            "job_id": self.id, "state": snap.state, "error": snap.error,
            "config": self.config.to_dict(),
            "preset": preset.name if preset else None,
            "reported": preset.reported if preset else None,
            "params": res.get("params"),
            "history": snap.history,
            "train_accuracy": res.get("train_accuracy"),
            "val_accuracy": res.get("val_accuracy"),
            "test": res.get("test"),
            "classes": list(CLASSES),
            "timing": {**(res.get("timing") or {}), "backend": self.where.get("backend"),
                       "node": self.where.get("host") or self.where.get("node"),
                       **({"node_id": self.where["node_id"]} if "node_id" in self.where else {})},
            "dataset": self.dataset.summary() if self.dataset else None,
            "unit_stats": snap.unit_stats,
        }

    def save(self, out_dir: str | os.PathLike) -> dict:
        """Write model.keras and run.json into out_dir; returns their paths. The model file is
        copied from where the trainer wrote it (serialised only when it never was)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model_path, record_path = out / "model.keras", out / "run.json"
        if self.model_path is not None and self.model_path.is_file():
            shutil.copyfile(self.model_path, model_path)
        elif self.model is not None:
            self.model.save(model_path)
        else:
            raise XrayLabError("this run has no model to save (it never started training)")
        record_path.write_text(json.dumps(self.record(), indent=2))
        return {"model": str(model_path), "record": str(record_path)}

