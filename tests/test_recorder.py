"""The recorder mirrors a job into the store: on epoch and state changes, with heartbeats,
and at the end with the result and the model; a killed process leaves its epochs."""
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from xray_core.runs import recorder as rec_mod
from xray_core.config import RunConfig
from xray_core.runs.recorder import live_job, record_job, recorder_for
from xray_core.runs.store import RunStore
from xray_core.train.job import Snapshot, TrainingJob

from .conftest import wait_for

REPO = Path(__file__).resolve().parents[1]


class FakeModel:
    def save(self, path):
        Path(path).write_bytes(b"a keras file")


class FakeJob:
    """A job whose snapshots the test sets by hand."""

    def __init__(self, epochs=3):
        self.config = RunConfig(epochs=epochs).resolved()
        self.model = None
        self.model_path = None          # the recorder's view of a job: its public API only
        self.running = False
        self.dataset = None
        self._lock = threading.Lock()
        self.calls = 0
        self._snap = Snapshot(job_id="fake", state="queued", queue_position=1,
                              epoch=0, epochs=epochs, step=0, steps_per_epoch=10, elapsed=0.0, eta=None,
                              batch_loss=[], batch_accuracy=[], batch_epoch=[],
                              history={"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []},
                              unit_stats=[], error=None, result=None)

    @property
    def model_in_memory(self):
        return self.model is not None

    def snapshot(self):
        with self._lock:
            self.calls += 1
            return self._snap

    def set(self, **kw):
        with self._lock:
            self._snap = replace(self._snap, **kw)


@pytest.fixture
def store(tmp_path):
    s = RunStore(home=tmp_path / "home")
    yield s
    s.close()


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(rec_mod, "POLL", 0.02)
    monkeypatch.setattr(rec_mod, "HEARTBEAT", 0.2)


def test_writes_epochs_states_heartbeats_and_the_end(store, fast):
    job = FakeJob()
    rid = record_job(store, job, "ws")
    assert live_job(rid) is job and store.get(rid).state == "queued"
    job.set(state="loading")
    assert wait_for(lambda: store.get(rid).state == "training", 10)
    assert store.get(rid).started_at is not None
    job.set(state="training", epoch=1, history={"loss": [0.9], "accuracy": [0.5], "val_loss": [1.0],
                                                "val_accuracy": [0.4]},
            batch_loss=[1.0, 0.8], batch_epoch=[0.5, 1.0], unit_stats=[{"epoch": 1, "kind": "dead", "layers": {}}])
    assert wait_for(lambda: store.get(rid).epochs_done == 1, 10)
    got = store.get(rid)
    assert got.history["val_accuracy"] == [0.4] and got.batch_loss == [1.0, 0.8] and got.unit_stats
    hb = got.heartbeat_at
    assert wait_for(lambda: store.get(rid).heartbeat_at > hb, 10)      # nothing changed: still beats
    job.model = FakeModel()
    job.set(state="done", epoch=3, history={"loss": [0.9, 0.7, 0.6], "accuracy": [0.5, 0.6, 0.7],
                                            "val_loss": [1, 0.9, 0.8], "val_accuracy": [0.4, 0.5, 0.6]},
            result={"test": {"accuracy": 0.66, "loss": 0.8}, "train_accuracy": 0.7, "params": 353254})
    assert recorder_for(rid).join(10)
    done = store.get(rid)
    assert (done.state, done.epochs_done, done.test["accuracy"]) == ("finished", 3, 0.66)
    assert done.history["loss"] == [0.9, 0.7, 0.6] and done.finished_at is not None
    assert Path(done.model_path).read_bytes() == b"a keras file"
    assert not (store.models_dir / rid / "incoming.keras").exists()
    assert live_job(rid) is None


def test_it_polls_about_once_a_second_by_default(store):
    job = FakeJob()
    job.set(state="training")
    rid = record_job(store, job, "ws")
    time.sleep(2.5)
    job.set(state="failed", error="ConfigError: boom")
    assert recorder_for(rid).join(10)
    assert job.calls <= 6               # a snapshot per POLL (1 s): never a busy loop
    assert (store.get(rid).state, store.get(rid).error) == ("failed", "ConfigError: boom")


@pytest.mark.parametrize("final, kept", [("stopped", True), ("failed", False)])
def test_stopped_keeps_the_model_failed_does_not(store, fast, final, kept):
    job = FakeJob()
    job.model = FakeModel()
    rid = record_job(store, job, "ws")
    job.set(state=final, epoch=1, error="ValueError: x" if final == "failed" else None)
    assert recorder_for(rid).join(10)
    got = store.get(rid)
    assert got.state == final and (got.model_path is not None) == kept


def test_a_real_training_job_is_recorded(store, toy_dataset):
    job = TrainingJob(RunConfig(epochs=2, batch_size=64, lr=0.01), toy_dataset)
    rid = record_job(store, job, "ws", label="toy")
    job.start()
    assert recorder_for(rid).join(180)
    got = store.get(rid)
    snap = job.snapshot()
    assert (got.state, got.epochs_done, got.label) == ("finished", 2, "toy")
    assert got.history == snap.history and got.test == snap.result["test"]
    assert len(got.batch_loss) == len(snap.batch_loss) == 20 and got.unit_stats == snap.unit_stats
    from xray_core.maps.inference import load_model
    assert load_model(got.model_path).count_params() == 353_254


# A server that trains with the recorder on and is killed with -9 after 2 epochs.
KILLED = """
import sys, time
sys.path.insert(0, sys.argv[2])
from tests.conftest import make_split
from xray_core.config import RunConfig
from xray_core.data.dataset import Dataset
from xray_core.runs.recorder import record_job
from xray_core.runs.store import RunStore
from xray_core.train.job import TrainingJob
ds = Dataset("toy", {"train": make_split(640, 1), "validation": make_split(128, 2), "test": make_split(128, 3)})
job = TrainingJob(RunConfig(epochs=500, batch_size=32, lr=0.001), ds)
rid = record_job(RunStore(None, sys.argv[1]), job, "ws")
print(rid, flush=True)
job.run()
"""


def test_a_killed_server_leaves_an_interrupted_run_with_its_epochs(store):
    p = subprocess.Popen([sys.executable, "-c", KILLED, str(store.home), str(REPO)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        rid = p.stdout.readline().strip()
        assert rid, "the training process did not start"
        assert wait_for(lambda: store.get(rid).epochs_done >= 2, 180)
    finally:
        p.kill()
        p.wait(30)
    assert store.get(rid).state == "training"       # until someone looks
    assert store.recover() == [rid]
    got = store.get(rid)
    assert got.state == "interrupted" and got.epochs_done >= 2
    assert len(got.history["loss"]) == got.epochs_done and got.error.startswith(f"interrupted at epoch {got.epochs_done}")
