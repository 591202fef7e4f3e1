"""Training that streams: a Keras `fit` in a background thread that publishes
every batch and epoch to any number of readers.

How it fits together (Streamlit drops `st.*` calls made from threads it did not
start, and a widget interaction interrupts training run in the script thread, so
the job lives in its own thread and the page only polls it):
- `TrainingJob.start()` starts a plain thread; it never touches any UI.
- The thread waits its turn in the process-wide `SCHEDULER` (a queue with a cap on
  concurrent jobs), loads data, builds the model and calls `fit` with
  `callbacks.Stream`, which appends metrics to the job's lock-protected state.
- `isolated=True` runs the same job in a worker process instead (`worker.py`
  mirrors its progress back into this job).
- Readers call `job.snapshot()` at any time: a consistent copy taken under the lock
  in microseconds, so polling never slows training.
- `job.stop()` sets an Event that the callback turns into `model.stop_training`
  after the current batch; what was learned is kept and still evaluated.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import socket
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xray_core import CLASSES
from xray_core.train.callbacks import EpochClock, Stream, UnitMonitor
from xray_core.config import RunConfig
from xray_core.data.dataset import Dataset, Split
from xray_core.errors import XrayLabError, one_line
from xray_core.train.estimate import eta_seconds

QUEUED, LOADING, TRAINING, EVALUATING, DONE, STOPPED, FAILED = (
    "queued", "loading", "training", "evaluating", "done", "stopped", "failed")
FINISHED = (DONE, STOPPED, FAILED)
BACKENDS = ("local", "ray")
PROBE_SIZE = 256  # fixed probe batch for the dead-unit monitor
QUEUE_POLL_S = 1.0

_log = logging.getLogger(__name__)


# ---- the process-wide scheduler --------------------------------------------------

def _default_cap() -> int:
    raw = os.environ.get("XRAY_LAB_MAX_JOBS", "")
    try:
        return max(1, int(raw)) if raw else max(1, os.cpu_count() or 1)
    except ValueError:
        return max(1, os.cpu_count() or 1)


def _max_queue() -> int:
    try:
        return max(1, int(os.environ.get("XRAY_LAB_MAX_QUEUE", "60")))
    except ValueError:
        return 60


class Busy(XrayLabError):
    """The server refuses a job now (queue full, or its owner already has one)."""


class Scheduler:
    """At most `cap` jobs train at once; the rest wait in FIFO order and know their place.

    A classroom server also refuses, in one line: a job when `max_queue` jobs already
    wait (XRAY_LAB_MAX_QUEUE, default 60), and a second queued/running job of the same
    owner (a workspace or session id given by the caller; None = no limit)."""

    def __init__(self, cap: int | None = None, max_queue: int | None = None):
        self.cap = cap or _default_cap()
        self.max_queue = max_queue or _max_queue()
        self._cond = threading.Condition()
        self._waiting: deque[str] = deque()
        self._running: set[str] = set()
        self._owners: dict[str, str] = {}        # job id -> owner, while queued or running

    def acquire(self, job_id: str, cancelled: threading.Event, owner: str | None = None) -> bool:
        """Block until the job may run; False if it was cancelled while waiting.
        Busy (at once, before waiting) when the queue is full or `owner` has a job already."""
        with self._cond:
            if owner is not None and owner in self._owners.values():
                raise Busy("You already have a run queued or training: stop it or wait for it to finish.")
            if len(self._waiting) >= self.max_queue:
                raise Busy(f"The server is busy: {len(self._waiting)} runs are waiting. "
                           "Try again in a few minutes.")
            if owner is not None:
                self._owners[job_id] = owner
            self._waiting.append(job_id)
            admitted = False
            try:
                while not (self._waiting[0] == job_id and len(self._running) < self.cap):
                    if cancelled.is_set():
                        return False
                    # Woken at once when a job ends (notify_all); the timeout only bounds how
                    # late a Stop of a queued job is seen. 1 s, not 0.1: a class of 30 queues
                    # 28 waiting threads, each waking would take the server's GIL.
                    self._cond.wait(timeout=QUEUE_POLL_S)
                if cancelled.is_set():
                    return False
                self._running.add(job_id)
                admitted = True
                return True
            finally:
                self._waiting.remove(job_id)
                if not admitted:
                    self._owners.pop(job_id, None)
                self._cond.notify_all()

    def free(self, job_id: str) -> None:
        """The job's trainer is done (its worker sent the end): the next queued job may start
        while this one finishes here (loads its model, writes its record). Still the owner's
        one job until release()."""
        with self._cond:
            self._running.discard(job_id)
            self._cond.notify_all()

    def release(self, job_id: str) -> None:
        with self._cond:
            self._running.discard(job_id)
            self._owners.pop(job_id, None)
            self._cond.notify_all()

    def position(self, job_id: str) -> int | None:
        """1 = next to start; None when not waiting."""
        with self._cond:
            try:
                return self._waiting.index(job_id) + 1
            except ValueError:
                return None

    def status(self) -> dict:
        with self._cond:
            return {"cap": self.cap, "running": len(self._running), "waiting": len(self._waiting)}


SCHEDULER = Scheduler()
_JOBS: "weakref.WeakValueDictionary[str, TrainingJob]" = weakref.WeakValueDictionary()
_ids = itertools.count(1)


def get_job(job_id: str) -> "TrainingJob | None":
    """A live job by id (e.g. from the URL after a browser refresh); None once nobody holds it."""
    return _JOBS.get(job_id)


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
    def __init__(self, config: RunConfig, dataset: Dataset | None = None,
                 scheduler: Scheduler | None = None, probe: bool = True, isolated: bool = False,
                 backend: str | None = None, owner: str | None = None, prepared=None):
        """`backend`: "local" (this machine) or "ray" (an actor on the Ray cluster, see
        ray_backend.py); default XRAY_LAB_BACKEND, else local.
        `isolated`: on the local backend, train in a recycled worker process (see worker.py) instead of a
        thread of this process — what a long-lived server wants. `owner` (a workspace or
        session id): the scheduler runs at most one queued/running job per owner.
        `prepared`: a model from pretrace.prepare(), used if it was made for this config and
        patch count (its train step is already traced), else a fresh one is built."""
        self.config = config.resolved()
        self.backend = backend or os.environ.get("XRAY_LAB_BACKEND", "local") or "local"
        if self.backend not in BACKENDS:
            raise XrayLabError(f"unknown backend {self.backend!r}: choose local or ray")
        self.isolated = isolated or self.backend == "ray"
        self.owner = owner
        self.where = {"backend": self.backend, "node": socket.gethostname()}   # set by the remote side
        self.id = f"job{next(_ids)}-{os.getpid()}"
        self._dataset = dataset
        self._scheduler = scheduler or SCHEDULER
        self._probe_enabled = probe
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.model = None                 # the keras.Model, once built
        self._prepared = prepared
        self.pretraced = False            # trained the prepared model (its step traced in advance)
        self.dataset: Dataset | None = None
        self.test_predictions: np.ndarray | None = None
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
        self._unit_stats: list[dict] = []
        self._epoch_ends: list[float] = []   # seconds since t0 at each epoch's end (ETA)
        self._val_seconds: list[float] = []  # each epoch's validation + probe (ETA)
        self._eta_sizes = (0, 0)             # validation and test patches still to pass (ETA)
        self._remote_eta: tuple[float, float] | None = None  # (a worker's ETA, perf_counter when it came)
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

    def join(self, timeout: float | None = None) -> "TrainingJob":
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    def run(self) -> "TrainingJob":
        """Train in the calling thread (CLI, benchmarks) — same code path as start()."""
        self._run()
        return self

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def snapshot(self) -> Snapshot:
        pos = self._scheduler.position(self.id)
        with self._lock:
            now = self._t_end or time.perf_counter()
            elapsed = now - self._t0 if self._t0 else 0.0
            done_steps = self._epoch * self._steps_per_epoch + self._step
            eta = None
            if self._remote_eta is not None and self._state == TRAINING:
                remote, at = self._remote_eta   # counted down between the worker's messages
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
                result=dict(self._result) if self._result else None)

    def _set(self, **kw: Any) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, "_" + k, v)

    # -- the thread --
    def _run(self) -> None:
        try:
            admitted = self._scheduler.acquire(self.id, self._stop, owner=self.owner)
        except XrayLabError as e:       # Busy: refused at once, never queued
            self._set(state=FAILED, error=str(e), t_end=time.perf_counter())
            return
        if not admitted:
            self._set(state=STOPPED, t_end=time.perf_counter())
            return
        try:
            if self.isolated:
                from xray_core.train.backends.worker import train_isolated
                train_isolated(self)
            else:
                self._train()
        except XrayLabError as e:
            self._set(state=FAILED, error=str(e))
        except Exception as e:  # a job must never die silently: keep the reason (and log the trace)
            self._set(state=FAILED, error=one_line(e))
            _log.exception("training job %s failed", self.id)
        finally:
            with self._lock:
                self._t_end = self._t_end or time.perf_counter()
            self._scheduler.release(self.id)

    def _train(self) -> None:
        from xray_core.models import activation_layer_names, build_model

        cfg = self.config
        self._set(state=LOADING)
        if self._dataset is None:
            from xray_core.data.load import load_dataset
            # The data (and any split made from it) is fixed, not tied to the run's seed:
            # runs that differ only in seed must compare on the same patches.
            self._dataset = load_dataset(cfg.data)
        ds = self._dataset
        self.dataset = ds
        train = ds.split("train")
        if cfg.limit_train:
            train = train.take(cfg.limit_train, seed=cfg.seed)
        val = ds.splits.get("validation") if ds.has("validation") else None
        if self._stop.is_set():
            self._set(state=STOPPED)
            return
        n = len(train)
        steps = math.ceil(n / cfg.batch_size)
        from xray_core.train.pretrace import fits
        if fits(self._prepared, cfg, n):
            model, self.pretraced = self._prepared, True
        else:
            model = build_model(cfg, steps_per_epoch=steps)
        self._prepared = None
        self.model = model
        n_test = len(ds.split("test")) if ds.has("test") else 0
        self._set(steps_per_epoch=steps, state=TRAINING, t0=time.perf_counter(),
                  eta_sizes=(len(val) if val is not None else 0, n_test))
        callbacks = [Stream(self, n, cfg.batch_size, val)]
        if self._probe_enabled and cfg.arch == "fc":
            names = activation_layer_names(model)
            probe_x = train.take(PROBE_SIZE, seed=cfg.seed + 1).x
            callbacks.append(UnitMonitor(self, names, probe_x, cfg.activation))
        callbacks.append(EpochClock(self))  # last: its epoch end comes after validation and probe
        fit_start = time.perf_counter()
        # Validation runs in Stream.on_epoch_end rather than via validation_data=, so that a
        # Stop does not first wait for Keras to validate the partial epoch (~6 s for a CNN).
        model.fit(_batches(train, cfg.batch_size, cfg.seed), epochs=cfg.epochs, verbose=0,
                  callbacks=callbacks, shuffle=False)  # _batches shuffles
        fit_seconds = time.perf_counter() - fit_start
        stopped = self._stop.is_set()
        with self._lock:
            epochs_run = self._epoch + (1 if self._step and self._epoch < cfg.epochs and stopped else 0)
            samples = self._epoch * n + (self._step * cfg.batch_size if stopped else 0)
        self._set(state=EVALUATING)
        result = {"timing": {"fit_seconds": fit_seconds,
                             "samples_per_second": samples / fit_seconds if fit_seconds else 0.0,
                             "epochs_run": epochs_run}}
        if ds.has("test"):
            test = ds.split("test")
            probs = model.predict(test.x, batch_size=1024, verbose=0)
            self.test_predictions = probs
            result["test"] = evaluate_predictions(test.y, probs)
        hist = self._history
        if hist["accuracy"]:
            result["train_accuracy"] = hist["accuracy"][-1]
        if hist["val_accuracy"]:
            result["val_accuracy"] = hist["val_accuracy"][-1]
        result["params"] = int(model.count_params())
        self._set(result=result, state=STOPPED if stopped else DONE, t_end=time.perf_counter())

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
        """Write model.keras and run.json into out_dir; returns their paths."""
        if self.model is None:
            raise XrayLabError("this run has no model to save (it never started training)")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model_path, record_path = out / "model.keras", out / "run.json"
        self.model.save(model_path)
        record_path.write_text(json.dumps(self.record(), indent=2))
        return {"model": str(model_path), "record": str(record_path)}


def _batches(split: Split, batch_size: int, seed: int):
    """Batches in a fresh order every epoch, drawn from the run's own seed.

    A tf.random.Generator seeded by the run draws each epoch's permutation: plain
    tf.data shuffle would mix in TensorFlow's process-wide global seed, which other
    code may set, so the same config could train differently. The permutation is
    cut into whole batches of indices (as Keras' own array adapter does) and the
    patches are gathered per batch, all inside TensorFlow."""
    import tensorflow as tf
    x = tf.constant(split.x)
    y = tf.constant(split.y.astype("int32"))
    n = len(split)
    full = (n // batch_size) * batch_size
    gen = tf.random.Generator.from_seed(seed)

    def epoch_batches(_):
        perm = tf.argsort(gen.uniform([n]))
        out = tf.data.Dataset.from_tensor_slices(tf.reshape(perm[:full], [-1, batch_size]))
        if full < n:
            out = out.concatenate(tf.data.Dataset.from_tensors(perm[full:]))
        return out

    ds = tf.data.Dataset.range(1).flat_map(epoch_batches)
    ds = ds.map(lambda i: (tf.gather(x, i), tf.gather(y, i)), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE)


def evaluate_predictions(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, cross-entropy loss, confusion matrix (rows = true class) and per-class P/R."""
    k = len(CLASSES)
    y_true = np.asarray(y_true, dtype=int)
    pred = probs.argmax(axis=1)
    conf = np.zeros((k, k), dtype=int)
    np.add.at(conf, (y_true, pred), 1)
    eps = 1e-7
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], eps, 1.0))))
    tp = np.diag(conf).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(conf.sum(0) > 0, tp / conf.sum(0), np.nan)
        recall = np.where(conf.sum(1) > 0, tp / conf.sum(1), np.nan)
    clean = lambda a: [None if np.isnan(v) else float(v) for v in a]  # noqa: E731  (JSON has no NaN)
    return {"accuracy": float((pred == y_true).mean()) if len(y_true) else float("nan"),
            "loss": loss, "confusion": conf.tolist(),
            "precision": dict(zip(CLASSES, clean(precision))),
            "recall": dict(zip(CLASSES, clean(recall))), "n": int(len(y_true))}
