import json
import threading

import numpy as np
import pytest

from xray_core.config import RunConfig
from xray_core.data.dataset import Dataset
from xray_core.train.callbacks import unit_share
from xray_core.train.job import DONE, FAILED, QUEUED, STOPPED, Scheduler, TrainingJob

from .conftest import make_split, wait_for

FAST = RunConfig(epochs=3, batch_size=32, lr=1e-3)


def test_metrics_stream_while_training(toy_dataset):
    job = TrainingJob(FAST.replace(epochs=30), toy_dataset, scheduler=Scheduler(2)).start()
    try:
        assert wait_for(lambda: len(job.snapshot().batch_loss) >= 3)
        mid = job.snapshot()
        assert mid.state == "training" and not mid.finished   # seen *during* training
        assert mid.steps_per_epoch == 20 and mid.eta is not None and mid.elapsed > 0
        assert len(mid.batch_loss) == len(mid.batch_accuracy) == len(mid.batch_epoch)
        assert wait_for(lambda: len(job.snapshot().history["loss"]) >= 2)
    finally:
        job.stop()
        job.join(60)


def test_full_run_results_and_per_batch_loss_is_exact(toy_dataset):
    job = TrainingJob(FAST, toy_dataset, scheduler=Scheduler(1)).run()
    s = job.snapshot()
    assert s.state == DONE and s.progress == 1.0
    assert len(s.history["val_accuracy"]) == 3 and len(s.batch_loss) == 3 * 20
    # Keras logs a running mean; the per-batch values we publish must average back to it.
    for e in range(3):
        assert np.isclose(np.mean(s.batch_loss[e * 20:(e + 1) * 20]), s.history["loss"][e], rtol=1e-3)
    assert np.std(s.batch_loss[20:40]) > 0  # real jitter, not a smoothed curve
    test = s.result["test"]
    assert test["accuracy"] > 0.6  # the toy data is learnable
    conf = np.array(test["confusion"])
    assert conf.shape == (4, 4) and conf.sum() == 128
    assert np.isclose(np.trace(conf) / conf.sum(), test["accuracy"])
    assert set(test["precision"]) == {"background", "clavicle", "lung", "heart"}
    assert s.result["timing"]["samples_per_second"] > 0


def test_stop_takes_effect_within_one_batch_and_keeps_the_model(toy_dataset):
    job = TrainingJob(FAST.replace(epochs=200, batch_size=8), toy_dataset, scheduler=Scheduler(1)).start()
    assert wait_for(lambda: len(job.snapshot().batch_loss) >= 5)
    seen_at_stop = len(job.snapshot().batch_loss)
    job.stop()
    job.join(60)
    s = job.snapshot()
    assert s.state == STOPPED
    assert len(s.batch_loss) <= seen_at_stop + 1
    assert s.result["test"]["n"] == 128          # what was learned is still evaluated
    assert job.model is not None


def test_a_failure_is_kept_with_its_message(toy_dataset):
    bad = make_split(64, 9)
    bad.y[:] = 7  # label outside 0..3: Keras raises inside fit
    job = TrainingJob(FAST, Dataset("bad", {"train": bad}), scheduler=Scheduler(1)).start().join(60)
    s = job.snapshot()
    assert s.state == FAILED and s.error and "7" in s.error and "\n" not in s.error
    no_train = TrainingJob(FAST, Dataset("only-test", {"test": bad}), scheduler=Scheduler(1)).run()
    assert no_train.snapshot().state == FAILED and "train" in no_train.snapshot().error


def test_jobs_beyond_the_cap_queue_and_report_their_position(toy_dataset):
    sched = Scheduler(cap=1)
    long = FAST.replace(epochs=500, batch_size=8)
    a = TrainingJob(long, toy_dataset, scheduler=sched).start()
    assert wait_for(lambda: a.snapshot().state == "training")
    b = TrainingJob(FAST, toy_dataset, scheduler=sched).start()
    c = TrainingJob(FAST, toy_dataset, scheduler=sched).start()
    assert wait_for(lambda: b.snapshot().queue_position == 1 and c.snapshot().queue_position == 2)
    assert b.snapshot().state == QUEUED
    c.stop()                                   # leaving the queue never touches the others
    c.join(10)
    assert c.snapshot().state == STOPPED and a.snapshot().state == "training"
    assert wait_for(lambda: b.snapshot().queue_position == 1)
    a.stop()
    a.join(60)
    b.join(60)
    assert b.snapshot().state == DONE and sched.status() == {"cap": 1, "running": 0, "waiting": 0, "held": 0}


def test_same_seed_reproduces_the_run_other_seed_does_not(toy_dataset):
    cfg = FAST.replace(epochs=2, dropout=0.2)
    h1 = TrainingJob(cfg, toy_dataset, scheduler=Scheduler(1)).run().snapshot().batch_loss
    h2 = TrainingJob(cfg, toy_dataset, scheduler=Scheduler(1)).run().snapshot().batch_loss
    h3 = TrainingJob(cfg.replace(seed=1), toy_dataset, scheduler=Scheduler(1)).run().snapshot().batch_loss
    assert h1 == h2 and h1 != h3


def test_dead_unit_monitor_reports_each_epoch(toy_dataset):
    s = TrainingJob(FAST, toy_dataset, scheduler=Scheduler(1)).run().snapshot()
    assert [u["epoch"] for u in s.unit_stats] == [0, 1, 2, 3]
    assert set(s.unit_stats[0]["layers"]) == {"relu1", "relu2"} and s.unit_stats[0]["kind"] == "dead"
    assert all(0 <= v <= 1 for u in s.unit_stats for v in u["layers"].values())


def test_unit_share_rules():
    a = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    assert unit_share(a, "relu") == pytest.approx(1 / 3)  # only column 0 never fires
    assert unit_share(np.array([[-0.1, 0.2]] * 4), "leaky_relu") == 0.5
    assert unit_share(np.array([[0.999, 0.5]] * 10), "sigmoid") == 0.5
    assert unit_share(np.array([[-0.99, 0.1]] * 10), "tanh") == 0.5


def test_snapshots_from_many_readers_are_consistent(toy_dataset):
    job = TrainingJob(FAST.replace(epochs=4, batch_size=8), toy_dataset, scheduler=Scheduler(1)).start()
    problems = []

    def reader():
        while not job.snapshot().finished:
            s = job.snapshot()
            if not (len(s.batch_loss) == len(s.batch_accuracy) == len(s.batch_epoch)):
                problems.append("torn snapshot")

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for r in readers:
        r.start()
    job.join(120)
    for r in readers:
        r.join(10)
    assert not problems and job.snapshot().state == DONE


def test_saved_model_and_record_reload(toy_dataset, tmp_path):
    import keras
    job = TrainingJob(FAST.replace(epochs=1), toy_dataset, scheduler=Scheduler(1)).run()
    paths = job.save(tmp_path / "run")
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rec["config"]["epochs"] == 1 and rec["classes"] == ["background", "clavicle", "lung", "heart"]
    assert set(rec["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert rec["test"]["confusion"] and rec["timing"]["fit_seconds"] > 0 and rec["params"] == 353_254
    x = toy_dataset.split("test").x[:8]
    again = keras.models.load_model(paths["model"])
    assert np.allclose(again.predict(x, verbose=0), job.model.predict(x, verbose=0), atol=1e-6)


def test_stop_skips_validating_the_partial_epoch(toy_dataset):
    job = TrainingJob(FAST.replace(epochs=200, batch_size=8), toy_dataset, scheduler=Scheduler(1)).start()
    assert wait_for(lambda: len(job.snapshot().history["val_loss"]) >= 1 and job.snapshot().step > 3)
    job.stop()
    job.join(60)
    h = job.snapshot().history
    assert len(h["val_loss"]) == len(h["loss"]) - 1  # the epoch cut short is not validated


def test_the_global_tensorflow_seed_does_not_change_a_run(toy_dataset):
    import keras
    cfg = FAST.replace(epochs=2)
    keras.utils.set_random_seed(123)
    a = TrainingJob(cfg, toy_dataset, scheduler=Scheduler(1)).run().snapshot().batch_loss
    keras.utils.set_random_seed(456)
    b = TrainingJob(cfg, toy_dataset, scheduler=Scheduler(1)).run().snapshot().batch_loss
    assert a == b


def test_a_freed_trainer_slot_starts_the_next_job_while_the_owner_keeps_its_one_run():
    import threading

    from xray_core.errors import XrayLabError
    sched = Scheduler(cap=1)
    never = threading.Event()
    assert sched.acquire("a", never, owner="ws1", alone=True)
    started = []
    t = threading.Thread(target=lambda: started.append(sched.acquire("b", never, owner="ws2", alone=True)))
    t.start()
    assert wait_for(lambda: sched.position("b") == 1)
    sched.free("a")                            # a's worker is done; a still loads its model here
    t.join(10)
    assert started == [True]
    with pytest.raises(XrayLabError):          # ws1's run is still finishing: no second one yet
        sched.acquire("a2", never, owner="ws1", alone=True)
    sched.release("a")
    gone = threading.Event()
    gone.set()                                 # (b holds the slot: a2 would wait; it leaves at once)
    assert sched.acquire("a2", gone, owner="ws1", alone=True) is False      # no longer refused as Busy
