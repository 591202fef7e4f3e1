"""Training jobs on a Ray cluster: the same TrainingJob, run inside a Ray actor.

`XRAY_LAB_BACKEND=ray` (or `train --backend ray`) sends each job to an actor on the
cluster at `RAY_ADDRESS` (a local Ray is started on demand when it is unset). The
actor runs the very code a worker process runs (a `TrainingJob` in a thread of its
own) and the server polls it every `POLL_EVERY` seconds for what a reader would see
(`job.delta`), mirroring it into the job (`job.mirror`), exactly as a local worker does
(`InWorker`): the pages, the CLI and the run store cannot tell the two apart. The model
comes back as bytes and is written once, where the job keeps it (`job.model_path`).

- Datasets go to the object store once per dataset (`ray.put`), not once per job.
- A job asks for `XRAY_LAB_RAY_CPUS` CPUs (default 1) and, for CNNs on a cluster that
  has GPUs, one GPU; the app's concurrency cap follows the cluster's CPUs.
- Faults: a dead actor or node fails its job with a reason (no retry: a half-trained
  run restarted silently would show a curve that did not happen); an unreachable
  cluster fails the job in one line and the app keeps serving.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import weakref
from pathlib import Path

from xray_core import settings
from xray_core.errors import XrayLabError, one_line

_log = logging.getLogger(__name__)
START_TIMEOUT = 600.0     # seconds a job may wait for a node with room before it fails
POLL_EVERY = 0.1          # seconds between progress polls (the local worker sends every 0.1 s)
_lock = threading.Lock()
_datasets: dict = {}      # id(Dataset) -> (weakref to it, ObjectRef): each dataset is put once
_Trainer = None           # the actor class, made on first use (ray is an optional dependency)


def available() -> bool:
    try:
        import ray  # noqa: F401
        return True
    except ImportError:
        return False


def connect() -> None:
    """Connect this process to the cluster once (RAY_ADDRESS, or a local Ray started now)."""
    if not available():
        raise XrayLabError("the Ray backend needs Ray: pip install -r requirements-scale.txt")
    import ray
    with _lock:
        if ray.is_initialized():
            return
        address = os.environ.get("RAY_ADDRESS") or None
        if address and address != "auto":
            _check_reachable(address)
        repo = str(Path(__file__).resolve().parents[3])   # the checkout
        try:
            # The actors import xray_core: ship the package with the job (no install on the nodes).
            ray.init(address=address, logging_level="ERROR", log_to_driver=False,
                     include_dashboard=False, configure_logging=False,
                     runtime_env={"py_modules": [str(Path(repo) / "xray_core")],
                                  "env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3"}},
                     **({} if address else {"num_cpus": os.cpu_count() or 1,
                                            "object_store_memory": 200 * 1024 * 1024}))
        except Exception as e:
            raise XrayLabError(f"the Ray cluster at {address or 'localhost'} is unreachable: {one_line(e)}") from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """ray.init retries an absent cluster for minutes: look at its port first."""
    import socket
    host, _, port = address.replace("ray://", "").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        raise XrayLabError(f"the Ray cluster at {address} is unreachable ({one_line(e)}); "
                           "check RAY_ADDRESS or start it with `ray start --head`") from None


def cluster_cap() -> int:
    """How many jobs the cluster runs at once: its CPUs / CPUs per job (at least 1)."""
    import ray
    connect()
    cpus = ray.cluster_resources().get("CPU", 1)
    return max(1, int(cpus // _cpus_per_job()))


def _cpus_per_job() -> float:
    return settings.get("XRAY_LAB_RAY_CPUS")


def _dataset_ref(ds):
    import ray
    with _lock:
        for key in [k for k, (w, _) in _datasets.items() if w() is None]:
            del _datasets[key]          # datasets gone from this process free their object
        entry = _datasets.get(id(ds))
        if entry is None or entry[0]() is not ds:
            entry = (weakref.ref(ds), ray.put(ds))
            _datasets[id(ds)] = entry
        return entry[1]


def _trainer_class():
    global _Trainer
    if _Trainer is None:
        import ray

        # max_concurrency 2: a stop() runs at once, beside the poll() that is waiting for progress
        @ray.remote(max_restarts=0, max_task_retries=0, max_concurrency=2)
        class Trainer:
            """One job inside an actor: the same TrainingJob the worker processes run."""

            def __init__(self):
                from xray_core import models  # noqa: F401  -- TensorFlow imported once per actor, not per job
                self.job = None

            def begin(self, cfg_dict: dict, dataset, probe: bool) -> None:
                from xray_core.config import RunConfig
                from xray_core.train.job import Scheduler, TrainingJob
                self.job = TrainingJob(RunConfig.from_dict(cfg_dict), dataset, scheduler=Scheduler(1),
                                       probe=probe).start()

            def where(self) -> dict:
                import socket
                ctx = ray.get_runtime_context()
                return {"node_id": ctx.get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}

            def poll(self, sent: int) -> dict:
                self.job.join(POLL_EVERY)
                return self.job.delta(sent)

            def stop(self) -> int:
                """Returns how many batches had trained when the stop arrived (what the driver
                saw is up to a poll older)."""
                done = len(self.job.snapshot().batch_loss)
                self.job.stop()
                return done

            def finish(self) -> dict:
                self.job.join()
                model = None
                if self.job.model is not None and self.job.state != "failed":
                    with tempfile.TemporaryDirectory(prefix="xray-lab-ray-") as d:
                        path = Path(d) / "model.keras"
                        self.job.model.save(path)
                        model = path.read_bytes()
                out = {"model": model, "test_predictions": self.job.test_predictions}
                self.job = None      # the actor is reused for the next job: keep nothing of this one
                return out

        _Trainer = Trainer
    return _Trainer


# Idle actors (TensorFlow already imported) are reused for the next job, like local workers,
# but only briefly: an actor holds its CPUs while it lives, so an idle one would keep other
# replicas' and the CLI's jobs off the cluster.
_idle: dict = {}          # options key -> [(actor, idle since)]
MAX_IDLE = 4
_reaper: threading.Thread | None = None


def _idle_seconds() -> float:
    return settings.get("XRAY_LAB_RAY_IDLE_SECONDS")


def _kill(actor) -> None:
    import ray
    try:
        ray.kill(actor, no_restart=True)
    except Exception as e:   # gone already, or the cluster is: nothing left to free here
        _log.info("ray: could not kill an idle actor: %s", one_line(e))


def _reap() -> None:
    while True:
        time.sleep(2.0)
        now, expired = time.monotonic(), []
        with _lock:
            for key, pool in _idle.items():
                expired += [a for a, t in pool if now - t > _idle_seconds()]
                pool[:] = [(a, t) for a, t in pool if now - t <= _idle_seconds()]
        for actor in expired:
            _kill(actor)


def _acquire(opts: dict):
    key = repr(sorted(opts.items()))
    with _lock:
        if _idle.get(key):
            return key, _idle[key].pop()[0]
    return key, _trainer_class().options(**opts).remote()


def _release(key: str, actor, healthy: bool) -> None:
    global _reaper
    with _lock:
        pool = _idle.setdefault(key, [])
        if healthy and len(pool) < MAX_IDLE and _idle_seconds() > 0:
            pool.append((actor, time.monotonic()))
            if _reaper is None:
                _reaper = threading.Thread(target=_reap, daemon=True, name="xray-lab-ray-reaper")
                _reaper.start()
            return
    _kill(actor)


def _options(cfg) -> dict:
    import ray
    opts = {"num_cpus": _cpus_per_job()}
    if cfg.arch == "cnn" and ray.cluster_resources().get("GPU", 0) >= 1:
        opts["num_gpus"] = 1
    node = settings.get("XRAY_LAB_RAY_RESOURCE")   # e.g. "gpu_node": pin jobs to nodes that offer it
    if node:
        opts["resources"] = {node: 0.01}
    return opts


class OnRay:
    """The trainer for XRAY_LAB_BACKEND=ray: the job trains in an actor on the cluster."""
    name = backend = "ray"

    def train(self, job) -> None:
        job.finished(train_in_ray(job) or "failed")


def train_in_ray(job) -> str | None:
    """Run `job` (a TrainingJob of this process) in a Ray actor; mirror its progress into
    the job so snapshot() works unchanged. Returns the run's final state."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError, RayError

    from xray_core.tf_quiet import keras
    connect()
    final_state = None
    actor, key, healthy = None, None, False
    try:
        key, actor = _acquire(_options(job.config))
        # waited for: with max_concurrency 2 a poll() could otherwise run before the job exists
        ray.get(actor.begin.remote(job.config.to_dict(), _dataset_ref(job.dataset), job.probe),
                timeout=START_TIMEOUT)
        try:
            job.where = {"backend": "ray", **ray.get(actor.where.remote(), timeout=START_TIMEOUT)}
        except GetTimeoutError:
            raise XrayLabError(f"no Ray node had room for this job within {START_TIMEOUT:.0f} s "
                               "(the cluster is busy or lacks the CPUs/GPUs it asks for)") from None
        sent, stop_ref = 0, None
        while True:
            if job.stop_requested and stop_ref is None:
                stop_ref = actor.stop.remote()
            try:
                d = ray.get(actor.poll.remote(sent), timeout=60)
            except GetTimeoutError:
                raise XrayLabError("the Ray actor stopped answering (60 s); the job was ended") from None
            final_state = job.mirror(d) or final_state
            sent += len(d["batch_loss"])
            if d["state"] in ("done", "stopped", "failed"):
                break
        if stop_ref is not None:
            job.where["stop_arrived_at_batch"] = ray.get(stop_ref, timeout=60)
        final = ray.get(actor.finish.remote(), timeout=600)
        if final["model"] is not None and job.model_path is not None:
            tmp = job.model_path.with_name(job.model_path.stem + ".partial.keras")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(final["model"])
            os.replace(tmp, job.model_path)        # the one write of this run's model
        elif final["model"] is not None:
            with tempfile.TemporaryDirectory(prefix="ray-", dir=_tmp_root()) as d:
                path = Path(d) / "model.keras"
                path.write_bytes(final["model"])
                job.model = keras.models.load_model(path)
        job.test_predictions = final["test_predictions"]
        healthy = True
        return final_state
    except RayActorError as e:
        raise XrayLabError(f"the Ray worker running this job died ({_reason(e)}); the job was not retried") from None
    except RayError as e:
        raise XrayLabError(f"Ray failed this job: {one_line(e)}") from None
    finally:
        if actor is not None:
            _release(key, actor, healthy)


def _reason(e: Exception) -> str:
    text = one_line(e)
    for hint in ("node", "killed", "exited", "died", "SIGKILL", "OOM"):
        if hint.lower() in text.lower():
            return text[:160]
    return "its process exited"


def _tmp_root() -> str:
    d = settings.home() / "tmp"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return str(d)
