"""Mirrors live training jobs into the run store, without touching the training thread.

A `RunRecorder` is a daemon thread per job that polls `job.snapshot()` (a copy taken
under the job's lock in well under a millisecond) about once a second and writes to
the store only when something a reader needs changed: a new epoch or state (with the
batch trace), a heartbeat at most every `HEARTBEAT` seconds, and at the end the result.
At each poll it also reads the run's stop flag (`store.stop_requested`): a stop asked on
any server of this database (the teacher's board, a student's ■ Stop on another replica)
stops the job here, within about a second.
The model is not the recorder's to write: the trainer wrote it where the store keeps it
(`job.model_path`, see runs/service.py); the end only records it. Keras callbacks stay
exactly as they were, so training speed is unchanged (the streaming benchmark measures it).

`live_job(run_id)` gives back a job still running in this process, so a page reloaded
in the browser can re-attach to it and keep drawing its live charts.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from xray_core.errors import one_line
from xray_core.runs.store import JOB_STATE, RunStore, StoreError
from xray_core.train.estimate import learn_from_job

POLL = 1.0          # seconds between snapshots
HEARTBEAT = 5.0     # at most this long between writes while a run is alive
_RETRIES = 5        # final write attempts (the DB may be briefly locked or unreachable)

_LIVE: dict[str, "RunRecorder"] = {}
_LIVE_LOCK = threading.Lock()


class RunRecorder:
    def __init__(self, store: RunStore, job, run_id: str):
        self.store, self.job, self.run_id = store, job, run_id
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self.error: str | None = None   # last store error, for diagnostics

    def start(self) -> "RunRecorder":
        if self._thread is None:
            with _LIVE_LOCK:
                _LIVE[self.run_id] = self
            self._thread = threading.Thread(target=self._loop, name=f"xray-rec-{self.run_id}", daemon=True)
            self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the run's end is written; True when done."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _sleep(self) -> None:
        if self.job.running:
            self.job.join(POLL)     # wakes at once when training ends
        else:
            self._wake.wait(POLL)

    def _progress(self, snap, state: str, started_at: float | None) -> None:
        self.store.update_progress(
            self.run_id, state=state, epochs_done=snap.epoch, history=snap.history,
            batch_loss=snap.batch_loss, batch_epoch=snap.batch_epoch, unit_stats=snap.unit_stats,
            started_at=started_at)

    def _loop(self) -> None:
        try:
            last_key, last_write, n_batches, started_sent = None, 0.0, -1, False
            stop_sent = False
            while True:
                snap = self.job.snapshot()
                state = JOB_STATE.get(snap.state, "training")
                if state not in ("queued", "training"):
                    break
                if not stop_sent and self._stop_asked():
                    self.job.stop()      # the job ends as "stopped"; the loop then writes its end
                    stop_sent = True
                now = time.time()
                key = (state, snap.epoch)
                due = now - last_write >= HEARTBEAT
                if key != last_key or (due and len(snap.batch_loss) != n_batches):
                    started = now if state == "training" and not started_sent else None
                    if self._try(self._progress, snap, state, started):
                        last_key, last_write, n_batches = key, now, len(snap.batch_loss)
                        started_sent = started_sent or started is not None
                elif due:
                    if self._try(self.store.heartbeat, self.run_id):
                        last_write = now
                self._sleep()
            self._finish(snap, state)
        finally:
            with _LIVE_LOCK:
                if _LIVE.get(self.run_id) is self:
                    del _LIVE[self.run_id]

    def _stop_asked(self) -> bool:
        """The store's stop flag; a store hiccup reads as "not asked" (the next poll asks again)."""
        try:
            return self.store.stop_requested(self.run_id)
        except Exception as e:
            self.error = one_line(e)
            return False

    def _try(self, fn, *args) -> bool:
        try:
            fn(*args)
            return True
        except Exception as e:  # a store hiccup must not end the recording; the next poll retries
            self.error = one_line(e)
            print(f"xray-lab: run {self.run_id}: store write failed: {self.error}", file=sys.stderr)
            return False

    def _finish(self, snap, state: str) -> None:
        model_src = None
        kept = self.job.model_path
        if kept is not None and state in ("finished", "stopped") and kept.is_file():
            model_src = kept        # written by the trainer where the store keeps it
        elif kept is None and self.job.model_in_memory and state in ("finished", "stopped"):
            # a job made without the service (record_job): its model lives only in memory
            tmp = self.store.models_dir / self.run_id / "incoming.keras"
            try:
                tmp.parent.mkdir(parents=True, exist_ok=True)
                self.job.model.save(tmp)
                model_src = tmp
            except Exception as e:  # the record matters more than the file: keep going without it
                self.error = f"model not saved: {one_line(e)}"
                Path(tmp).unlink(missing_ok=True)
        for attempt in range(_RETRIES):
            try:
                self.store.finish(self.run_id, state, result=snap.result, error=snap.error, model_src=model_src,
                                  epochs_done=snap.epoch, history=snap.history, batch_loss=snap.batch_loss,
                                  batch_epoch=snap.batch_epoch, unit_stats=snap.unit_stats)
                if state == "finished":
                    self._learn()
                return
            except StoreError:
                return  # the run was deleted meanwhile
            except Exception as e:
                self.error = one_line(e)
                time.sleep(min(2 ** attempt, 10))
        print(f"xray-lab: run {self.run_id}: could not record its end: {self.error}", file=sys.stderr)


    def _learn(self) -> None:
        """A finished run's real times correct later estimates of the same model (app and CLI alike)."""
        try:
            learn_from_job(self.job)
        except Exception as e:  # an estimate must never cost a record
            print(f"xray-lab: run {self.run_id}: the estimate did not learn from it: {one_line(e)}",
                  file=sys.stderr)


def record_job(store: RunStore, job, workspace: str, *, preset: str | None = None, label: str | None = None,
               group_id: str | None = None) -> str:
    """Create the run's record and start mirroring `job` into it; returns the run id.
    Starting the job itself stays the caller's (before or after this call)."""
    rec = store.create_run(workspace, job.config, preset=preset, label=label, group_id=group_id)
    RunRecorder(store, job, rec.id).start()
    return rec.id


def recorder_for(run_id: str) -> RunRecorder | None:
    with _LIVE_LOCK:
        return _LIVE.get(run_id)


def live_job(run_id: str):
    """The job still running (or being written) in THIS process for `run_id`, else None."""
    rec = recorder_for(run_id)
    return rec.job if rec is not None else None


def live_run_ids() -> set[str]:
    with _LIVE_LOCK:
        return set(_LIVE)


def join_all(timeout: float) -> int:
    """Wait (up to `timeout` in all) for every recorder of this process to write its run's
    end; returns how many there were."""
    with _LIVE_LOCK:
        recs = list(_LIVE.values())
    end = time.monotonic() + timeout
    for r in recs:
        r.join(max(0.0, end - time.monotonic()))
    return len(recs)
