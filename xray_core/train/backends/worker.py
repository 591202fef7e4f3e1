"""Training in recycled child processes, for a long-lived classroom server.

Why not only threads: measured on this machine (bench/memory.py), Keras/TensorFlow
keep ≈12 MiB per trained model resident in the process for good — no in-process
release brings it back — and every training thread competes with the pages for
the server's GIL (bench/classroom.py: widget round trips up to 24 s under load).
A job marked `isolated` therefore trains in a worker process: the server keeps only
the streamed metrics and the final model, and a worker exits after
`XRAY_LAB_WORKER_RUNS` jobs (default 5), taking whatever Keras leaked with it.

The worker runs the very same `TrainingJob` code (in its own thread) and forwards
what a reader would see (`job.delta`): new per-batch values, per-epoch history and
progress, every 0.1 s. `stop` is forwarded the other way. On the server side, a job
given `trainer=InWorker()` hands itself to a worker and `job.mirror` takes each message
into its own state, so `job.snapshot()` works unchanged. The worker writes the model
once, where the job says (`job.model_path`: the run store's place for it).

Sharing a classroom server safely:
- Heartbeat: those progress messages are the worker's heartbeat while it trains; an
  idle worker answers a ping when it is handed a job. A worker silent for
  XRAY_LAB_WORKER_SILENT_SECONDS (default 20), or still training
  XRAY_LAB_STOP_SECONDS (default 10) after Stop, is killed; its job fails with a reason.
- A job training longer than XRAY_LAB_MAX_JOB_SECONDS (default 1800) is stopped like a
  Stop press: kept, marked stopped, with the reason in its error field.
- Each worker's TensorFlow uses cores // XRAY_LAB_MAX_JOBS threads (at least 1;
  XRAY_LAB_WORKER_THREADS overrides) so the trainers together do not oversubscribe.
- Workers run at a lower CPU priority (nice XRAY_LAB_WORKER_NICE, default 10), are the
  first the OOM killer takes (oom_score_adj 1000) and have a data-segment limit of
  XRAY_LAB_WORKER_MEM_MB (default 6000; TensorFlow and the course CNN peak near 3 GB of
  address space): a runaway job fails alone, never the server.
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
from pathlib import Path

import numpy as np

from xray_core import settings
from xray_core.errors import XrayLabError
from xray_core.train.scheduler import SCHEDULER
from xray_core.train.states import DONE, FINISHED, STOPPED

SEND_EVERY = 0.1                  # seconds between progress messages
PING_SECONDS = 5.0                # an idle worker must answer a ping within this
PREPARE_EVERY = 3.0               # seconds between two prepares asked of one idle worker
PREPARE_SECONDS = 60.0            # a prepare (a CNN traced on a busy machine) takes at most this
HUNG = "the training process stopped answering and was ended"


class WorkerError(XrayLabError):
    """A training process that died or hung: its job fails with this one line."""


def _max_runs() -> int:
    return settings.get("XRAY_LAB_WORKER_RUNS")


def silent_seconds() -> float:
    return settings.get("XRAY_LAB_WORKER_SILENT_SECONDS")


def stop_seconds() -> float:
    return settings.get("XRAY_LAB_STOP_SECONDS")


def max_job_seconds() -> float:
    return settings.get("XRAY_LAB_MAX_JOB_SECONDS")


def worker_threads() -> int:
    """TensorFlow threads per worker: the cores shared by the trainers that may run at once."""
    return settings.get("XRAY_LAB_WORKER_THREADS") or max(1, (os.cpu_count() or 1) // max(1, SCHEDULER.cap))


# ---- the child -------------------------------------------------------------------

def _limit_self() -> None:
    """Lower priority, first in line for the OOM killer, bounded memory. Runs before
    TensorFlow is imported, in the child only (never the server)."""
    try:
        os.nice(settings.get("XRAY_LAB_WORKER_NICE"))
    except OSError:
        pass
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")
    except OSError:          # not Linux, or not allowed: the limits below still apply
        pass
    mb = settings.get("XRAY_LAB_WORKER_MEM_MB")
    if mb > 0:
        try:
            import resource
            soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
            want = mb << 20
            if hard != resource.RLIM_INFINITY:
                want = min(want, hard)
            resource.setrlimit(resource.RLIMIT_DATA, (want, hard))
        except (ImportError, ValueError, OSError):
            pass


def _set_tf_threads() -> None:
    n = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0") or 0)
    if n > 0:
        import tensorflow as tf
        try:  # the env vars already did it if TensorFlow read them; this is belt and braces
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(int(os.environ["TF_NUM_INTEROP_THREADS"]))
        except (RuntimeError, KeyError, ValueError):
            pass


def _worker_main(conn) -> None:
    _limit_self()
    from xray_core import models  # noqa: F401  -- imports TensorFlow before saying ready
    _set_tf_threads()
    from xray_core.config import RunConfig
    from xray_core.train.job import Scheduler, TrainingJob
    warm_up()
    try:
        conn.send(("ready", os.getpid()))
    except OSError:                 # the server went away while we imported TensorFlow
        return
    datasets: dict = {}             # content id -> Dataset: sent once, kept for this worker's next jobs
    prepared = None                 # a model made for the config on a student's sidebar (pretrace.py)
    while True:
        try:
            msg = conn.recv()
        except EOFError:            # the server went away
            return
        if msg is None:
            return
        if msg == "ping":           # the idle heartbeat: asked for when a job is handed over
            conn.send(("pong", None))
            continue
        if msg == "stop":           # a Stop that arrived after the job had ended
            continue
        if msg[0] == "prepare":     # ("prepare", config dict, training patches, dataset): while idle
            prepared = None         # (one at a time: the last sidebar wins)
            if msg[3] is not None:  # the dataset comes along once, so the job need not carry it
                _dataset_from(msg[3], datasets)
            try:
                from xray_core.train.pretrace import prepare
                prepared = prepare(RunConfig.from_dict(msg[1]), msg[2])
            except Exception as e:  # only a head start: the job builds its own model instead
                print(f"xray-lab worker: prepare failed: {e!r}", file=sys.stderr)
            continue
        cfg_dict, data, model_path, probe = msg
        dataset = _dataset_from(data, datasets)
        # the model is written once, by the job's own trainer, at the path the server chose
        job = TrainingJob(RunConfig.from_dict(cfg_dict), dataset, scheduler=Scheduler(1), prepared=prepared,
                          probe=probe, model_path=model_path).start()
        prepared = None
        sent = 0
        while True:
            job.join(SEND_EVERY)
            while conn.poll():
                if conn.recv() == "stop":
                    job.stop()
            d = job.delta(sent)
            conn.send(("progress", d))
            sent += len(d["batch_loss"])
            if d["state"] in FINISHED:
                break
        written = job.state in (DONE, STOPPED) and model_path is not None and os.path.isfile(model_path)
        conn.send(("done", {"model_written": written, "test_predictions": job.test_predictions,
                            "pretraced": job.pretraced}))
        del job


def warm_up() -> float:
    """Train a throw-away FC model for one epoch on 128 random patches, before saying ready.

    A process's first Keras fit pays TensorFlow's one-time costs (the tf.function and
    autograph machinery, kernel registration, thread pools): ~0.6 s of the first live
    point of a worker's first job (first batch 1.3 s cold, 0.7 s after this, FC default,
    2-core VM). Paid here, while the worker waits idle. Every layer of a real run has its
    own seed, so this model changes nothing in the runs after it. Returns the seconds it took."""
    from xray_core.config import RunConfig
    from xray_core.data.dataset import Dataset, Split
    from xray_core.train.job import Scheduler, TrainingJob
    t = time.perf_counter()
    try:
        rng = np.random.default_rng(0)
        def split(n):
            return Split(rng.random((n, 32, 32, 1), dtype=np.float32), rng.integers(0, 4, n))
        ds = Dataset("warm-up", {"train": split(128), "validation": split(32), "test": split(32)})
        TrainingJob(RunConfig(epochs=1), ds, scheduler=Scheduler(1)).start().join(120)
    except Exception as e:   # only a head start: a real job would meet the same problem and say it
        print(f"xray-lab worker: warm-up failed: {e!r}", file=sys.stderr)
    return time.perf_counter() - t


KEEP_DATASETS = 2   # datasets a worker keeps between jobs (a class mostly trains on one or two)


def _dataset_from(data, datasets: dict):
    """("data", cid, Dataset): a dataset sent with the job, kept under its content id;
    ("cached", cid): one this worker already holds."""
    kind, cid = data[0], data[1]
    if kind == "data":
        datasets.pop(cid, None)
        datasets[cid] = data[2]
        while len(datasets) > KEEP_DATASETS:
            datasets.pop(next(iter(datasets)))
        return data[2]
    return datasets[cid]


def dataset_id(dataset) -> str:
    """A content id for a dataset (hash of its arrays), computed once per Dataset object."""
    cid = getattr(dataset, "_content_id", None)
    if cid is None:
        import hashlib
        h = hashlib.blake2b(dataset.name.encode(), digest_size=16)
        for name in sorted(dataset.splits):
            sp = dataset.splits[name]
            h.update(name.encode())
            h.update(memoryview(np.ascontiguousarray(sp.x)).cast("B"))
            h.update(memoryview(np.ascontiguousarray(sp.y)).cast("B"))
        cid = h.hexdigest()
        try:
            dataset._content_id = cid
        except AttributeError:
            pass
    return cid


# ---- the server side -------------------------------------------------------------

class Worker:
    """One child `python -m xray_core.train.backends.worker FD`, talking over a socket pair.

    Not multiprocessing's spawn: it re-imports the parent's __main__ in the child, and
    inside Streamlit (and AppTest) __main__ is the app script itself."""

    def __init__(self):
        parent, child = socket.socketpair()
        root = str(Path(__file__).resolve().parents[3])   # the checkout: xray_core/train/backends/worker.py
        # a student's run must not see the server's secrets (the teacher's password, the DB's URL)
        env = {k: v for k, v in os.environ.items() if k not in settings.secret_names()}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        threads = worker_threads()
        # read by TensorFlow (and oneDNN's OpenMP) when it initialises in the child
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(1 if threads <= 2 else 2),
                   OMP_NUM_THREADS=str(threads))
        self.threads = threads
        self.process = subprocess.Popen([sys.executable, "-m", "xray_core.train.backends.worker", str(child.fileno())],
                                        pass_fds=[child.fileno()], env=env, stdin=subprocess.DEVNULL)
        child.close()
        self.conn = Connection(parent.detach())
        self.runs = 0
        self.replaced = False     # its replacement was started during its last run
        self.datasets: list[str] = []     # content ids the child holds (its KEEP_DATASETS newest)
        self.prepared: str | None = None  # pretrace key of the model the child holds ready
        self.prepared_at = 0.0            # monotonic time of the last prepare sent
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

    def answers(self, timeout: float = PING_SECONDS) -> bool:
        """The idle heartbeat: drop anything stale, ping, expect a pong within `timeout`."""
        try:
            while self.conn.poll(0):
                self.conn.recv()
            self.conn.send("ping")
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if self.conn.poll(0.05):
                    if self.conn.recv()[0] == "pong":
                        return True
                elif not self.alive():
                    return False
        except (EOFError, OSError, ValueError):
            pass
        return False

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            pass

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
    `max_runs` jobs, then exits and is replaced in the background.

    Workers still starting count as on their way: a job waits for one rather than starting
    yet another. (Starting one imports TensorFlow, seconds of a core: with a class training,
    retiring workers, queued jobs and the page's prewarm each started their own, up to six
    at once on two cores, and trainers and pages slowed for tens of seconds.)"""

    def __init__(self, max_runs: int | None = None):
        self.max_runs = max_runs or _max_runs()
        self._idle: list[Worker] = []
        self.busy: set[Worker] = set()
        self._starting = 0                      # spawned in the background, not ready yet
        self._claimed = 0                       # ... of which jobs are waiting for this many
        self._lock = threading.Condition()
        self.started = 0                        # workers ever started (tests read it)

    def acquire(self, key: str | None = None) -> Worker:
        """An idle worker (the one holding a model prepared for `key`, if any), else a new one."""
        with self._lock:
            # a worker on its way, not yet claimed by another job, is sooner than a new one
            # (it has been importing for a while)
            if not self._idle and self._starting > self._claimed:
                self._claimed += 1
                while not self._idle and self._starting:
                    self._lock.wait(timeout=1.0)
                self._claimed -= 1
            # the worker holding this job's model ready, else the one asked to prepare longest
            # ago (a prepare for another config may still be running in a recent one)
            w = next((x for x in self._idle if key is not None and x.prepared == key), None)
            if w is None and self._idle:
                w = min(reversed(self._idle), key=lambda x: x.prepared_at)
            if w is not None:
                self._idle.remove(w)
            preparing = w is not None and time.monotonic() - w.prepared_at < PREPARE_SECONDS
            if w is not None:
                w.prepared = None        # the child uses or drops it with this job
        # a worker still preparing answers the ping when it is done
        if w is not None and not (w.alive() and w.answers(PING_SECONDS + (PREPARE_SECONDS if preparing else 0))):
            w.kill()                 # hung or dead while idle: replace it
            w.close()
            w = None
        if w is None:
            w = self._new_worker()
        w.wait_ready()
        with self._lock:
            self.busy.add(w)
            last_run = w.runs + 1 >= self.max_runs
            if last_run:                 # its replacement imports TensorFlow while it trains
                self._starting += 1
        if last_run:
            w.replaced = True
            self._start(1)
        return w

    def prepare(self, config, n: int, dataset=None) -> bool:
        """Have an idle worker get the model for `config` (on `n` training patches) ready, so
        that a Train with it starts without tracing (pretrace.py), and hold `dataset` (sent
        once per worker, as a job would: then the job sends only its id). Cheap to call on every
        page run: nothing is sent if a worker holds it already, and a worker is asked at most
        once every PREPARE_EVERY seconds (a class changing its sidebars must not keep the
        idle workers busy). Returns whether a worker was asked."""
        from xray_core.train.pretrace import key as pretrace_key
        k = pretrace_key(config, n)
        now = time.monotonic()
        with self._lock:
            if any(w.prepared == k for w in self._idle):
                return False
            # data that must go along is sent only to a worker not preparing now: the send
            # would wait (page and pool lock with it) until that worker reads again
            fresh = dataset is not None and dataset_id(dataset)
            free = [w for w in self._idle if now - w.prepared_at >= (
                PREPARE_SECONDS if fresh and fresh not in w.datasets else PREPARE_EVERY)]
            if not free:
                return False
            w = min(free, key=lambda x: x.prepared_at)    # the longest unasked
            try:   # under the lock: acquire() pops a worker before talking to it
                w.conn.send(("prepare", config.resolved().to_dict(), int(n),
                             None if dataset is None else _ship(w, dataset)))
            except (OSError, ValueError):
                return False
            w.prepared, w.prepared_at = k, now
            return True

    def _new_worker(self) -> Worker:
        w = Worker()
        with self._lock:
            self.started += 1
        return w

    def release(self, w: Worker, healthy: bool = True) -> None:
        w.runs += 1
        with self._lock:
            self.busy.discard(w)
        if healthy and w.runs < self.max_runs and w.alive():
            with self._lock:
                self._idle.append(w)
                self._lock.notify()
            return
        w.close()
        if not w.replaced:           # (a last run's replacement is already on its way)
            with self._lock:
                self._starting += 1
            self._start(1)

    def prewarm(self, n: int) -> None:
        """Have up to n idle workers (counting those starting) without waiting for them."""
        with self._lock:
            missing = max(0, n - len(self._idle) - self._starting)
            self._starting += missing
        self._start(missing)

    def _start(self, k: int) -> None:
        """Start k workers in the background (already counted in self._starting)."""
        def spawn():
            w = None
            try:
                w = self._new_worker()
                w.wait_ready()
            except Exception:  # at interpreter exit, or out of memory: the next acquire() retries
                w = None
            with self._lock:
                self._starting -= 1
                if w is not None:
                    self._idle.append(w)
                self._lock.notify_all()
        for _ in range(k):
            threading.Thread(target=spawn, daemon=True, name="xray-lab-prewarm").start()

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    def shutdown(self) -> int:
        """Close the idle workers (busy ones end with their jobs); returns how many."""
        with self._lock:
            idle, self._idle = self._idle, []
        for w in idle:
            w.close()
        return len(idle)


POOL = WorkerPool()


def _ship(worker: Worker, dataset) -> tuple:
    """The dataset reaches a worker once: later jobs on it send only its content id."""
    cid = dataset_id(dataset)
    if cid in worker.datasets:
        return ("cached", cid)
    worker.datasets.append(cid)
    del worker.datasets[:-KEEP_DATASETS]
    return ("data", cid, dataset)


class InWorker:
    """The trainer of a long-lived server: the job trains in a recycled worker process."""
    name, backend = "worker", "local"

    def __init__(self, pool: "WorkerPool | None" = None):
        self.pool = pool

    def train(self, job) -> None:
        job.finished(train_in_worker(job, self.pool or POOL) or "failed")


def train_in_worker(job, pool: "WorkerPool") -> str | None:
    """Run `job` (a TrainingJob in this process) in a worker; mirror its progress into the
    job (job.mirror) so snapshot() works unchanged. Watches the worker: silent too long, or
    still training too long after Stop -> killed, the job fails with HUNG; over the job
    time limit -> stopped like a Stop press, with the reason kept. Returns the worker's
    final state (done / stopped / failed), None if it never said."""
    from xray_core.train.pretrace import key as pretrace_key, n_train
    worker = pool.acquire(pretrace_key(job.config, n_train(job.config, job.dataset)))
    healthy = released = False
    limit = max_job_seconds()
    # without a place in the run store the model comes back through a file under the home
    tmp = None if job.model_path is not None else tempfile.TemporaryDirectory(
        prefix="worker-", dir=_tmp_root())
    model_path = job.model_path or Path(tmp.name) / "model.keras"
    try:
        worker.conn.send((job.config.to_dict(), _ship(worker, job.dataset), str(model_path), job.probe))
        last_heard = time.monotonic()
        started: float | None = None          # the time limit counts training time
        stop_sent_at: float | None = None
        training = True
        over_time = False
        final = None
        final_state = None
        while final is None:
            now = time.monotonic()
            if not over_time and started is not None and now - started > limit:
                over_time = True
                job.stop()
            if job.stop_requested and stop_sent_at is None:
                worker.conn.send("stop")
                stop_sent_at = now
            if worker.conn.poll(0.05):
                kind, payload = worker.conn.recv()
                last_heard = time.monotonic()
                if kind == "progress":
                    final_state = job.mirror(payload) or final_state
                    training = payload["state"] in ("queued", "loading", "training")
                    if started is None and payload["state"] == "training":
                        started = last_heard
                elif kind == "done":
                    final = payload
                    job.pretraced = bool(payload.get("pretraced"))
                    # the worker is free, and so is its trainer slot: the next job starts
                    # while this one finishes here
                    pool.release(worker, healthy=True)
                    released = True
                    job.trainer_done()
            elif not worker.alive():
                raise WorkerError(f"the training process died (exit code {worker.process.returncode}); "
                                  "the server may be out of memory")
            # (read each time: cheap, and a test can tighten them once the job runs)
            if final is None and (time.monotonic() - last_heard > silent_seconds() or (
                    stop_sent_at is not None and training
                    and time.monotonic() - stop_sent_at > stop_seconds())):
                worker.kill()
                raise WorkerError(HUNG)
        if final["model_written"] and tmp is not None:
            from xray_core.tf_quiet import keras
            job.model = keras.models.load_model(model_path)
        job.test_predictions = final["test_predictions"]
        if over_time:
            job.note(f"Stopped: the run reached the server's time limit of "
                     f"{limit / 60:g} minutes (XRAY_LAB_MAX_JOB_SECONDS).")
        healthy = True
        return final_state
    except (EOFError, OSError, BrokenPipeError) as e:
        raise WorkerError(f"lost the training process: {e}") from None
    finally:
        if not released:
            pool.release(worker, healthy=healthy)
        if tmp is not None:
            tmp.cleanup()


def _tmp_root() -> str:
    """Temporary files live under the home (the server's own folder), not in /tmp."""
    d = settings.home() / "tmp"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return str(d)


if __name__ == "__main__":  # the child: python -m xray_core.train.backends.worker FD
    _worker_main(Connection(int(sys.argv[1])))
