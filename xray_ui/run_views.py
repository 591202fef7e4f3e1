"""One run as the pages draw it, wherever it lives: a job training in this server
process (fresh snapshots twice a second) or a record in the run store (a run of an
earlier session, of a server that restarted, or training on another replica).

Pure adapter over xray_core.runs.store / recorder: no widgets here."""
from __future__ import annotations

import time
from dataclasses import dataclass

from xray_core.config import RunConfig
from xray_core.runs.store import JOB_STATE, RunRecord, RunStore
from xray_core.train.job import Snapshot, TrainingJob

from .session import job_for

# store state -> the job state names the status line and panels know
_SNAP_STATE = {"queued": "queued", "training": "training", "finished": "done", "stopped": "stopped",
               "failed": "failed", "interrupted": "interrupted"}
ENDED = ("finished", "stopped", "failed", "interrupted")


@dataclass
class RunView:
    rec: RunRecord
    number: int                   # 1, 2, … in the workspace, oldest first
    job: TrainingJob | None       # the job, when it was trained in this server process

    @property
    def id(self) -> str:
        return self.rec.id

    @property
    def label(self) -> str:
        return f"#{self.number} {self.rec.label}"

    @property
    def preset(self) -> str | None:
        return self.rec.preset

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.rec.config)

    @property
    def live_here(self) -> bool:
        """Training in this process: its charts come from the job itself."""
        return self.job is not None and not self.job.snapshot().finished

    @property
    def state(self) -> str:
        """The store's state name; a job of this process is more current than its record."""
        if self.job is not None:
            s = JOB_STATE.get(self.job.snapshot().state, "training")
            # the recorder is still writing the end (saving the model): say what the job says
            return s if self.rec.state in ("queued", "training") else self.rec.state
        return self.rec.state

    @property
    def active(self) -> bool:
        return self.state in ("queued", "training")

    def snapshot(self) -> Snapshot:
        if self.job is not None and (self.live_here or self.rec.state in ("queued", "training")):
            return self.job.snapshot()
        return snapshot_of(self.rec)

    def refresh(self, store: RunStore) -> "RunView":
        rec = store.get(self.id)
        return RunView(rec, self.number, job_for(self.id)) if rec is not None else self

    def state_text(self) -> str:
        r = self.rec
        if self.state == "interrupted":
            return f"interrupted at epoch {r.epochs_done}"
        return self.state


def snapshot_of(rec: RunRecord) -> Snapshot:
    """The same shape as a live job's snapshot, from the stored rows."""
    end = rec.finished_at or time.time()
    return Snapshot(job_id=rec.id, state=_SNAP_STATE.get(rec.state, rec.state),
                    queue_position=None, epoch=rec.epochs_done, epochs=rec.epochs, step=0, steps_per_epoch=0,
                    elapsed=end - rec.started_at if rec.started_at else 0.0, eta=None,
                    batch_loss=list(rec.batch_loss), batch_accuracy=[], batch_epoch=list(rec.batch_epoch),
                    history=rec.history, unit_stats=list(rec.unit_stats), error=rec.error, result=rec.result)


def workspace_views(store: RunStore, ws: str) -> list[RunView]:
    """The workspace's runs, oldest first (numbers stay put as new runs are added)."""
    recs = list(reversed(store.list_runs(ws)))
    return [RunView(r, i + 1, job_for(r.id)) for i, r in enumerate(recs)]
