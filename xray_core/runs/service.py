"""The one way to start a run: the Train page, the CLI, repeats, sweeps and studies all
call `start()`.

    run = service.start(config, workspace="abc", dataset=ds, backend="worker", store=store)
    run.job.snapshot()      # live progress, any time
    run.run_id              # its record in the run store, written as it trains

What `start` does, in order: validate the config; choose the trainer (`backend`: "thread"
= Keras in a thread of this process, "worker" = a recycled worker process, "ray" = an
actor on the Ray cluster; XRAY_LAB_BACKEND=ray sends every run there); create the run's
record and the place of its model in the store (the trainer writes the model there,
once); start the recorder that mirrors the job into the record; and queue the job, owned
by its workspace (and client), in the class queue (train/scheduler.py).
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

from xray_core import settings
from xray_core.config import RunConfig
from xray_core.data.dataset import Dataset
from xray_core.errors import ConfigError, StoreError
from xray_core.runs.recorder import RunRecorder, join_all, live_job, live_run_ids
from xray_core.runs.store import RunStore, check_workspace
from xray_core.train.job import TrainingJob, live_jobs
from xray_core.train.scheduler import SCHEDULER, Busy, Scheduler

BACKENDS = ("thread", "worker", "ray")


@dataclass
class Run:
    job: TrainingJob
    run_id: str | None            # None when no store was given (tests, benchmarks)
    recorder: RunRecorder | None

    def wait(self, timeout: float | None = None) -> "Run":
        """Until the job has ended and its end is written to the store."""
        self.job.join(timeout)
        if self.recorder is not None:
            self.recorder.join(timeout)
        return self


def default_backend(isolated: bool) -> str:
    """Ray when the server says so; else a worker process for a long-lived server, a thread
    for a one-shot process (the CLI)."""
    if settings.get("XRAY_LAB_BACKEND") == "ray":
        return "ray"
    return "worker" if isolated else "thread"


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return name


def trainer_for(backend: str):
    """The trainer a job is given. Backends are imported only when chosen (Ray is optional)."""
    check_backend(backend)
    if backend == "worker":
        from xray_core.train.backends.worker import InWorker
        return InWorker()
    if backend == "ray":
        from xray_core.train.backends.ray import OnRay
        return OnRay()
    from xray_core.train.fit import InThisThread
    return InThisThread()


def start(config: RunConfig, *, workspace: str, dataset: Dataset | None = None, backend: str = "thread",
          store: RunStore | None = None, preset: str | None = None, label: str | None = None,
          group_id: str | None = None, client: str | None = None, alone: bool = False,
          probe: bool = True, prepared=None, scheduler: Scheduler | None = None,
          begin: bool = True) -> Run:
    """Start one run (see the module's text). `alone`: refused while the workspace has
    another run (the Train page's one run at a time). `begin=False` leaves `job.start()`
    (or `job.run()` in the calling thread) to the caller."""
    config = config.validate().resolved()
    check_workspace(workspace)
    job_kw = dict(trainer=trainer_for(backend), owner=workspace, client=client, alone=alone,
                  probe=probe, prepared=prepared, scheduler=scheduler)
    run_id, recorder = None, None
    if store is not None:
        rec = store.create_run(workspace, config, preset=preset, label=label, group_id=group_id)
        run_id = rec.id
        job = TrainingJob(config, dataset, model_path=store.model_file(run_id), **job_kw)
        recorder = RunRecorder(store, job, run_id).start()
    else:
        job = TrainingJob(config, dataset, **job_kw)
    if begin:
        job.start()
    return Run(job, run_id, recorder)


def room(workspace: str, scheduler: Scheduler | None = None) -> int:
    """How many more runs this workspace may queue now."""
    s = scheduler or SCHEDULER
    return max(0, s.max_pending - s.pending(workspace))


def check_room(workspace: str, n: int, scheduler: Scheduler | None = None) -> None:
    """Refuse a group of n runs at once, in one line, when the workspace may not queue them."""
    left = room(workspace, scheduler)
    if n > left:
        raise Busy(f"{n} runs are more than your workspace may queue now ({left} of "
                   f"{(scheduler or SCHEDULER).max_pending}; XRAY_LAB_PENDING_PER_WORKSPACE): "
                   "use fewer seeds or values, or wait for your runs to finish.")


def stop_runs(run_ids, store: RunStore | None = None, by: str | None = None) -> int:
    """Stop these runs (the teacher's "stop", any workspace's; a student's ■ Stop): a run live
    in this process stops at once, and with `store` its stop flag is set too, so a run training
    on another server of this database stops within its recorder's poll (about a second).
    Finished or unknown ids are skipped. Returns how many were asked to stop."""
    n = 0
    for rid in run_ids:
        asked = False
        if store is not None:
            try:
                store.request_stop(rid, by=by)
                asked = True
            except StoreError:      # not queued or training any more, or deleted meanwhile
                pass
        job = live_job(rid)
        if job is not None and job.running:
            job.stop()
            asked = True
        n += asked
    return n


def recover(store: RunStore) -> list[str]:
    """Mark the runs whose process died as interrupted (this process's live runs are alive)."""
    return store.recover(live_run_ids())


def shutdown(timeout: float = 30.0) -> dict:
    """The server is going away: stop every live job (each keeps what it learned and is
    recorded as stopped), wait for the jobs and their recorders, and close the idle
    worker processes. Returns what it did, for the log."""
    jobs = [j for j in live_jobs() if j.running]
    for job in jobs:
        job.stop()
    end = time.monotonic() + timeout
    for job in jobs:
        job.join(max(0.0, end - time.monotonic()))
    recorders = join_all(max(0.0, end - time.monotonic()))
    closed = 0
    worker_mod = sys.modules.get("xray_core.train.backends.worker")
    if worker_mod is not None:           # only if this process ever used workers
        closed = worker_mod.POOL.shutdown()
    left = [t.name for t in threading.enumerate() if t.name.startswith("xray-") and t.is_alive()
            and t is not threading.current_thread()]
    return {"stopped": len(jobs), "recorders": recorders, "workers_closed": closed, "threads_left": left}


def live_runs(workspace: str | None = None) -> list[TrainingJob]:
    """This process's runs still queued or training (of one workspace, or all)."""
    return [j for j in live_jobs() if j.running and (workspace is None or j.owner == workspace)]


def cancel(workspace: str | None = None, *, queued_only: bool = False) -> int:
    """Stop this process's live runs of `workspace` (None: every workspace — the teacher's);
    with `queued_only`, only those still waiting. A stopped run keeps what it learned and is
    recorded as stopped. Returns how many were asked to stop."""
    from xray_core.train.states import QUEUED
    n = 0
    for job in live_runs(workspace):
        if queued_only and job.state != QUEUED:
            continue
        job.stop()
        n += 1
    return n
