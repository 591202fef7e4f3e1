"""Isolated jobs: the same streaming job, trained in a recycled worker process."""

import numpy as np

from xray_core.config import RunConfig
from xray_core.data.dataset import Dataset
from xray_core.train.job import DONE, FAILED, STOPPED, Scheduler, TrainingJob
from xray_core.train.backends.worker import WorkerPool
from xray_core.train.backends.worker import InWorker

from .conftest import make_split, wait_for

FAST = RunConfig(epochs=3, batch_size=32, lr=1e-3)


def test_isolated_job_streams_and_returns_a_usable_model(toy_dataset):
    job = TrainingJob(FAST.replace(epochs=30), toy_dataset, scheduler=Scheduler(2), trainer=InWorker()).start()
    assert wait_for(lambda: len(job.snapshot().batch_loss) >= 3)
    assert job.snapshot().state == "training"     # seen while the worker trains
    job.stop()
    job.join(120)
    s = job.snapshot()
    assert s.state == STOPPED and s.result["test"]["n"] == 128
    probs = job.model.predict(toy_dataset.split("test").x[:5], verbose=0)
    assert probs.shape == (5, 4) and job.test_predictions.shape == (128, 4)


def test_isolated_run_matches_the_in_process_run(toy_dataset):
    a = TrainingJob(FAST, toy_dataset, scheduler=Scheduler(1), trainer=InWorker()).start().join(180).snapshot()
    b = TrainingJob(FAST, toy_dataset, scheduler=Scheduler(1)).run().snapshot()
    assert a.state == b.state == DONE
    assert len(a.batch_loss) == len(b.batch_loss) == 60
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-4)
    assert a.unit_stats and len(a.unit_stats) == len(b.unit_stats)
    assert a.result["test"]["confusion"] == b.result["test"]["confusion"]


def test_a_failure_in_the_worker_is_kept(toy_dataset):
    bad = make_split(64, 9)
    bad.y[:] = 7
    s = TrainingJob(FAST, Dataset("bad", {"train": bad}), scheduler=Scheduler(1),
                    trainer=InWorker()).start().join(120).snapshot()
    assert s.state == FAILED and "7" in s.error and "\n" not in s.error


def test_workers_are_recycled_after_max_runs(toy_dataset, monkeypatch):
    pool = WorkerPool(max_runs=2)
    monkeypatch.setattr("xray_core.train.backends.worker.POOL", pool)
    try:
        first = pool.acquire()
        pool.release(first)
        last = pool.acquire()                 # its second and last run
        assert last is first
        assert wait_for(lambda: pool.started == 2)   # its replacement starts meanwhile
        pool.release(last)                    # retired: no second replacement
        fresh = pool.acquire()
        assert fresh.pid != first.pid and pool.started == 2
        pool.release(fresh)
        assert wait_for(lambda: pool.idle_count() >= 1)
    finally:
        pool.shutdown()


def test_a_job_waits_for_a_starting_worker_instead_of_starting_another():
    pool = WorkerPool(max_runs=5)
    try:
        pool.prewarm(1)
        pool.prewarm(1)                 # one is already on its way: nothing more starts
        w = pool.acquire()              # waits for that one (it has been importing for a while)
        assert pool.started == 1 and pool.busy == {w}
        pool.prewarm(1)                 # none idle, none starting: one more
        pool.release(w)
        assert wait_for(lambda: pool.idle_count() == 2)
        pool.prewarm(2)                 # two idle already
        assert pool.started == 2
        # two jobs take the two idle ones; each retired worker gets its own replacement
        a, b = pool.acquire(), pool.acquire()
        pool.release(a, healthy=False)  # retired: a replacement starts
        pool.release(b, healthy=False)  # and another one (not "one idle is enough")
        assert wait_for(lambda: pool.idle_count() == 2) and pool.started == 4
    finally:
        pool.shutdown()


def test_a_worker_that_dies_fails_the_job_with_a_reason(toy_dataset, monkeypatch):
    pool = WorkerPool(max_runs=5)
    monkeypatch.setattr("xray_core.train.backends.worker.POOL", pool)
    job = TrainingJob(FAST.replace(epochs=500, batch_size=8), toy_dataset, scheduler=Scheduler(1),
                      trainer=InWorker()).start()
    assert wait_for(lambda: len(job.snapshot().batch_loss) > 0)
    for w in list(pool.busy):
        w.process.kill()
    job.join(60)
    s = job.snapshot()
    assert s.state == FAILED and "training process" in s.error
    pool.shutdown()


def test_a_dataset_reaches_a_worker_once_then_goes_by_its_content_id(toy_dataset):
    from types import SimpleNamespace

    from xray_core.train.backends import worker as w
    fake = SimpleNamespace(datasets=[])          # what the server knows the child holds
    kept: dict = {}                              # what the child holds
    first = w._ship(fake, toy_dataset)
    assert first[0] == "data" and first[2] is toy_dataset
    again = w._ship(fake, toy_dataset)
    assert again == ("cached", first[1])         # the second job sends 32 bytes, not the arrays
    assert w._dataset_from(first, kept) is toy_dataset and w._dataset_from(again, kept) is toy_dataset
    # same arrays under another object: same id; other arrays: another id, sent again
    copy = Dataset(toy_dataset.name, dict(toy_dataset.splits))
    assert w.dataset_id(copy) == first[1]
    other = Dataset("other", {"train": make_split(64, 3)})
    sent = w._ship(fake, other)
    assert sent[0] == "data"
    w._dataset_from(sent, kept)
    third = Dataset("third", {"train": make_split(64, 4)})
    w._dataset_from(w._ship(fake, third), kept)  # evicts the oldest on both sides alike
    assert set(kept) == set(fake.datasets) and first[1] not in kept
    assert w._ship(fake, toy_dataset)[0] == "data"


def test_jobs_on_one_dataset_in_one_worker_train_alike(toy_dataset):
    """The second job gets the dataset from the worker's own copy and trains the same."""
    pool = WorkerPool(max_runs=5)
    import xray_core.train.backends.worker as w
    real, w.POOL = w.POOL, pool
    try:
        a = TrainingJob(FAST, toy_dataset, scheduler=Scheduler(1), trainer=InWorker()).start().join(180).snapshot()
        assert [x.datasets for x in pool._idle] == [[w.dataset_id(toy_dataset)]]
        b = TrainingJob(FAST, toy_dataset, scheduler=Scheduler(1), trainer=InWorker()).start().join(180).snapshot()
    finally:
        w.POOL = real
        pool.shutdown()
    assert a.state == b.state == DONE
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-5)
