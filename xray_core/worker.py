"""Training in recycled child processes, for a long-lived classroom server.

Why not only threads: measured on this machine (bench/memory.py), Keras/TensorFlow
keep ≈12 MiB per trained model resident in the process for good — no in-process
release brings it back — and every training thread competes with the pages for
the server's GIL (bench/classroom.py: widget round trips up to 24 s under load).
A job marked `isolated` therefore trains in a worker process: the server keeps only
the streamed metrics and the final model, and a worker exits after
`XRAY_LAB_WORKER_RUNS` jobs (default 5), taking whatever Keras leaked with it.

The worker runs the very same `TrainingJob` code (in its own thread) and forwards
what a reader would see: new per-batch values, per-epoch history and progress,
every 0.1 s. `stop` is forwarded the other way. On the server side,
`train_isolated(job)` runs a `TrainingJob(isolated=True)` here and `apply_remote`
mirrors each message into that job's own state, so `job.snapshot()` works unchanged.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection

SEND_EVERY = 0.1                  # seconds between progress messages


def _max_runs() -> int:
    try:
        return max(1, int(os.environ.get("XRAY_LAB_WORKER_RUNS", "5")))
    except ValueError:
        return 5


# ---- the child -------------------------------------------------------------------

def _worker_main(conn) -> None:
    from . import models  # noqa: F401  -- imports TensorFlow before saying ready
    from .config import RunConfig
    from .training import FINISHED, Scheduler, TrainingJob
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except EOFError:            # the server went away
            return
        if msg is None:
            return
        cfg_dict, dataset, out_dir = msg
        job = TrainingJob(RunConfig.from_dict(cfg_dict), dataset, scheduler=Scheduler(1)).start()
        sent = 0
        while True:
            job.join(SEND_EVERY)
            while conn.poll():
                if conn.recv() == "stop":
                    job.stop()
            snap = job.snapshot()
            conn.send(("progress", _delta(snap, sent)))
            sent = len(snap.batch_loss)
            if snap.state in FINISHED:
                break
        model_path = None
        if job.model is not None and snap.state != "failed":
            model_path = os.path.join(out_dir, "model.keras")
            job.model.save(model_path)
        conn.send(("done", {"model_path": model_path, "test_predictions": job.test_predictions}))
        del job


def _delta(snap, sent: int) -> dict:
    return {
        "state": snap.state, "epoch": snap.epoch, "step": snap.step,
        "steps_per_epoch": snap.steps_per_epoch,
        "batch_loss": snap.batch_loss[sent:], "batch_accuracy": snap.batch_accuracy[sent:],
        "batch_epoch": snap.batch_epoch[sent:], "history": snap.history,
        "unit_stats": snap.unit_stats, "error": snap.error, "result": snap.result,
    }


# ---- the server side -------------------------------------------------------------

class Worker:
    """One child `python -m xray_core.worker FD`, talking over a socket pair.

    Not multiprocessing's spawn: it re-imports the parent's __main__ in the child, and
    inside Streamlit (and AppTest) __main__ is the app script itself."""

    def __init__(self):
        parent, child = socket.socketpair()
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.process = subprocess.Popen([sys.executable, "-m", "xray_core.worker", str(child.fileno())],
                                        pass_fds=[child.fileno()], env=env, stdin=subprocess.DEVNULL)
        child.close()
        self.conn = Connection(parent.detach())
        self.runs = 0
        self.pid = self.process.pid
        self._ready = threading.Event()

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the child has imported TensorFlow (a few seconds when cold)."""
        if self._ready.is_set():
            return
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.conn.poll(0.1):
                self.conn.recv()  # ("ready", pid)
                self._ready.set()
                return
            if not self.alive():
                raise RuntimeError(f"the training process exited at start-up (code {self.process.returncode})")
        raise RuntimeError("the training process did not start in time")

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.conn.close()


class WorkerPool:
    """Idle workers wait with TensorFlow already imported; each serves at most
    `max_runs` jobs, then exits and is replaced in the background."""

    def __init__(self, max_runs: int | None = None):
        self.max_runs = max_runs or _max_runs()
        self._idle: list[Worker] = []
        self.busy: set[Worker] = set()
        self._lock = threading.Lock()

    def acquire(self) -> Worker:
        with self._lock:
            w = self._idle.pop() if self._idle else None
        if w is None or not w.alive():
            w = Worker()
        w.wait_ready()
        with self._lock:
            self.busy.add(w)
        return w

    def release(self, w: Worker, healthy: bool = True) -> None:
        w.runs += 1
        with self._lock:
            self.busy.discard(w)
        if healthy and w.runs < self.max_runs and w.alive():
            with self._lock:
                self._idle.append(w)
            return
        w.close()
        self.prewarm(1)

    def prewarm(self, n: int) -> None:
        """Start up to n idle workers in the background (so the next job starts fast)."""
        def spawn():
            try:
                w = Worker()
                w.wait_ready()
            except Exception:  # at interpreter exit, or out of memory: the next acquire() retries
                return
            with self._lock:
                self._idle.append(w)
        with self._lock:
            missing = max(0, n - len(self._idle))
        for _ in range(missing):
            threading.Thread(target=spawn, daemon=True, name="xray-lab-prewarm").start()

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    def shutdown(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for w in idle:
            w.close()


POOL = WorkerPool()


def train_in_worker(job) -> str | None:
    """Run `job` (a TrainingJob in this process) in a worker; mirror its progress into
    `job`'s own state so snapshot() works unchanged. Returns the worker's final state
    (done / stopped / failed), None if it never said."""
    from .tf_quiet import keras
    worker = POOL.acquire()
    healthy = False
    with tempfile.TemporaryDirectory(prefix="xray-lab-") as out_dir:
        try:
            worker.conn.send((job.config.to_dict(), job._dataset, out_dir))
            stop_sent = False
            final = None
            final_state = None
            while final is None:
                if job._stop.is_set() and not stop_sent:
                    worker.conn.send("stop")
                    stop_sent = True
                if worker.conn.poll(0.05):
                    kind, payload = worker.conn.recv()
                    if kind == "progress":
                        final_state = apply_remote(job, payload) or final_state
                    elif kind == "done":
                        final = payload
                elif not worker.alive():
                    raise RuntimeError(f"the training process died (exit code {worker.process.returncode}); "
                                       "the server may be out of memory")
            if final["model_path"]:
                job.model = keras.models.load_model(final["model_path"])
            job.test_predictions = final["test_predictions"]
            healthy = True
            return final_state
        except (EOFError, OSError, BrokenPipeError) as e:
            raise RuntimeError(f"lost the training process: {e}") from None
        finally:
            POOL.release(worker, healthy=healthy)


# ---- mirroring a worker's job into the server's TrainingJob ----------------------

def train_isolated(job) -> None:
    """What `TrainingJob._run` does for an isolated job: load the data here (so a bad
    dataset fails in one line, before a worker is taken), then train in a worker."""
    from .training import FAILED, LOADING, STOPPED
    job._set(state=LOADING)
    if job._dataset is None:
        from .data import load_dataset
        job._dataset = load_dataset(job.config.data)
    job.dataset = job._dataset
    job._dataset.split("train")  # fail here, in one line, rather than in the worker
    if job._stop.is_set():
        job._set(state=STOPPED)
        return
    if job.backend == "ray":
        from .ray_backend import train_in_ray
        final = train_in_ray(job)
    else:
        final = train_in_worker(job)
    job._set(state=final or FAILED, t_end=time.perf_counter())


def apply_remote(job, d: dict) -> str | None:
    """Mirror a worker's progress message into `job`'s state. Returns the run's final
    state when this message ends it (the server job shows EVALUATING meanwhile: the
    model still has to come back from the worker), else None."""
    from .training import DONE, EVALUATING, FAILED, STOPPED, TRAINING
    final = None
    with job._lock:
        state = d["state"]
        if state in (DONE, STOPPED):
            final, state = state, EVALUATING
        elif state == FAILED:
            final = FAILED
        if state == TRAINING and job._t0 is None:
            job._t0 = time.perf_counter()
        job._state = state
        job._epoch, job._step, job._steps_per_epoch = d["epoch"], d["step"], d["steps_per_epoch"]
        job._batch_loss += d["batch_loss"]
        job._batch_acc += d["batch_accuracy"]
        job._batch_x += d["batch_epoch"]
        job._history = d["history"]
        job._unit_stats = d["unit_stats"]
        job._error = d["error"]
        job._result = d["result"]
    if d["batch_loss"] and job.first_batch_at is None:
        job.first_batch_at = time.perf_counter()
    return final


if __name__ == "__main__":  # the child: python -m xray_core.worker FD
    _worker_main(Connection(int(sys.argv[1])))
