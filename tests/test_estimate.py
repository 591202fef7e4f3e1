"""xray_core.train.estimate: calibration cached per cost key and machine, learned ratios
preferred, every term of a run counted, no model built for a cached key, ETA."""
import json

import pytest

from xray_core.train import estimate as est
from xray_core import models
from xray_core.config import RunConfig
from xray_core.train.eta import eta_seconds

FC = RunConfig(arch="fc", epochs=2, batch_size=64, lr=1e-3)


@pytest.fixture(autouse=True)
def _fresh_memory():
    est.forget_memory()
    yield
    est.forget_memory()


@pytest.fixture
def fake_measure(monkeypatch):
    """Counts calibrations; fixed per-step costs so the arithmetic can be checked."""
    calls = []

    def measure(cfg):
        calls.append(est.cost_key(cfg))
        return {"step": 0.01, "trace": 1.0, "build": 0.5, "eval_call": 0.05, "eval_patch": 0.001,
                "predict_call": 0.03, "predict_patch": 0.002, "steps_timed": 3, "measured_at": 0.0}
    monkeypatch.setattr(est, "_measure", measure)
    return calls


def test_cost_key_tracks_only_what_changes_step_cost():
    k = est.cost_key(FC)
    assert est.cost_key(FC.replace(lr=0.5, epochs=9, seed=3, data="x", limit_train=10)) == k
    for change in ({"batch_size": 32}, {"activation": "tanh"}, {"batch_norm": True}, {"optimizer": "sgd"},
                   {"arch": "cnn"}):
        assert est.cost_key(FC.replace(**change)) != k, change
    cnn = RunConfig(arch="cnn")
    assert est.cost_key(cnn.replace(filters=(8, 8, 8, 8, 8))) != est.cost_key(cnn)
    assert est.cost_key(cnn.replace(cnn_mode="corrected")) != est.cost_key(cnn)
    assert est.cost_key(cnn.replace(padding="valid")) != est.cost_key(cnn)


def test_calibration_cached_in_memory_and_on_disk_per_machine(fake_measure, tmp_path, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_HOME", str(tmp_path))
    e1 = est.estimate(FC, 640, 128, 128)
    assert e1["source"] == "measured" and fake_measure == [est.cost_key(FC)]
    est.estimate(FC.replace(epochs=7, lr=0.1), 640, 128, 128)     # same key: no new measurement
    assert len(fake_measure) == 1
    data = json.loads((tmp_path / "calibration.json").read_text())
    assert est.cost_key(FC) in data["machines"][est.machine_signature()]
    est.forget_memory()                                          # a fresh process reads the file
    assert est.cached_estimate(FC, 640, 128, 128) == e1
    assert len(fake_measure) == 1
    est.estimate(FC.replace(batch_size=32), 640, 128, 128)       # another key is measured
    assert len(fake_measure) == 2
    # another machine's calibration is not used
    est.forget_memory()
    monkeypatch.setattr(est, "machine_signature", lambda: "other cpu | 64 cpu | tf 9")
    assert est.cached_estimate(FC, 640, 128, 128) is None


def test_estimate_counts_startup_validation_probe_and_evaluation(fake_measure):
    e = est.estimate(FC, 640, 128, 100)
    steps = 10
    # validation and the probe: one call each per epoch, a fixed cost plus a cost per patch
    per_epoch = steps * 0.01 + (0.05 + 128 * 0.001) + (0.03 + est.PROBE_SIZE * 0.002)
    assert e["per_epoch"] == pytest.approx(per_epoch)
    assert e["fit"] == pytest.approx(1.0 + 2 * per_epoch)  # the first step's trace is inside fit
    assert e["startup"] == pytest.approx(est.HANDOFF_SECONDS + 0.5 + 1.0)   # hand-off + build + trace
    assert e["evaluation"] == pytest.approx(0.03 + 100 * 0.002)
    assert e["total"] == pytest.approx(est.HANDOFF_SECONDS + 0.5 + e["fit"] + e["evaluation"])
    no_val = est.estimate(FC, 640, 0, 0)
    assert no_val["per_epoch"] < e["per_epoch"] and no_val["total"] < e["total"]
    # the CNN has no dead-unit probe; limit_train counts
    cnn = RunConfig(arch="cnn", epochs=1, limit_train=64)
    ec = est.estimate(cnn, 9600, 0, 0)
    assert ec["per_epoch"] == pytest.approx(1 * 0.01) and ec["fit"] == pytest.approx(1.0 + 0.01)


def test_learned_ratio_preferred(fake_measure):
    e = est.estimate(FC, 640, 128, 100)
    est.learn(FC, 640, 128, 100, fit_seconds=e["fit"] * 2, total_seconds=e["total"] * 1.5)
    again = est.estimate(FC.replace(seed=5), 640, 128, 100)
    assert again["source"] == "learned"
    # a run counts half against the measurement: ratios 2 and 1.5 are learned as 1.5 and 1.25
    assert again["fit"] == pytest.approx(e["fit"] * 1.5)
    assert again["total"] == pytest.approx(e["total"] * 1.25)
    est.learn(FC, 640, 128, 100, fit_seconds=e["fit"] * 2, total_seconds=e["total"] * 1.5)
    assert est.estimate(FC, 640, 128, 100)["fit"] == pytest.approx(e["fit"] * 1.75)   # the running mean
    assert len(fake_measure) == 1
    est.forget_memory()                                          # learned ratios persist on disk
    assert est.cached_estimate(FC, 640, 128, 100)["source"] == "learned"


def test_no_keras_model_built_for_a_cached_key(fake_measure, monkeypatch):
    est.estimate(FC, 640, 128, 100)
    est.forget_memory()

    def boom(*a, **k):
        raise AssertionError("a model was built for a cached key")
    monkeypatch.setattr(models, "build_model", boom)
    monkeypatch.setattr(est, "_measure", boom)
    assert est.estimate(FC, 640, 128, 100)["source"] == "measured"
    assert est.page_estimate(FC, 640, 128, 100)["source"] == "measured"


def test_page_estimate_is_rough_then_measured_in_background(fake_measure):
    first = est.page_estimate(FC, 640, 128, 100)
    assert first["source"] == "rough"
    t = est._measuring.get(est.cost_key(FC))
    assert t is not None
    t.join(30)
    assert est.page_estimate(FC, 640, 128, 100)["source"] == "measured"
    assert fake_measure == [est.cost_key(FC)]


def test_what_fit_does_after_its_last_epoch_counts_once_not_per_epoch(fake_measure, monkeypatch):
    measure = est._measure
    monkeypatch.setattr(est, "_measure", lambda cfg: dict(measure(cfg), fit_end=0.7))
    two, four = est.estimate(FC.replace(epochs=2), 640), est.estimate(FC.replace(epochs=4), 640)
    assert two["fit"] == pytest.approx(1.0 + 2 * two["per_epoch"] + 0.7)
    assert four["fit"] - two["fit"] == pytest.approx(2 * two["per_epoch"])


def test_traces_of_validation_and_test_count_once(fake_measure, monkeypatch):
    measure = est._measure
    traces = {"eval_trace": 0.3, "eval_retrace": 0.2, "predict_trace": 0.4, "predict_retrace": 0.5}
    monkeypatch.setattr(est, "_measure", lambda cfg: dict(measure(cfg), **traces))
    per_epoch = 10 * 0.01 + (0.05 + 128 * 0.001) + (0.03 + est.PROBE_SIZE * 0.002)
    fc = est.estimate(FC, 640, 128, 100)               # 128 and 100 patches: short last batches
    assert fc["per_epoch"] == pytest.approx(per_epoch)
    assert fc["fit"] == pytest.approx(1.0 + 2 * per_epoch + 0.3 + 0.2)
    assert fc["evaluation"] == pytest.approx(0.03 + 100 * 0.002 + 0.5)   # the FC's probe traced predict
    whole = est.estimate(FC, 640, 1024, 2048)           # whole batches: no second trace
    per_epoch = 10 * 0.01 + (0.05 + 1024 * 0.001) + (0.03 + est.PROBE_SIZE * 0.002)
    assert whole["fit"] == pytest.approx(1.0 + 2 * per_epoch + 0.3)
    assert whole["evaluation"] == pytest.approx(0.03 + 2048 * 0.002)
    cnn = RunConfig(arch="cnn", epochs=1, limit_train=64)
    assert est.estimate(cnn, 9600, 0, 100)["evaluation"] == pytest.approx(0.03 + 100 * 0.002 + 0.4 + 0.5)


def test_real_calibration_builds_once(toy_dataset):
    """The real measurement on a tiny FC: positive per-step and trace times."""
    m = est.calibrate(FC.replace(batch_size=128))
    assert m["step"] > 0 and m["eval_patch"] > 0 and m["predict_patch"] > 0 and m["build"] > 0
    assert m["eval_call"] >= 0 and m["predict_call"] >= 0 and m["fit_end"] >= 0
    assert est.calibrate(FC.replace(batch_size=128)) is m or est.calibrate(FC.replace(batch_size=128)) == m


def test_eta_counts_validation_and_evaluation():
    base = dict(elapsed=10.0, epoch=2, step=0, steps=10, epochs=4, batch_size=64)
    # epochs ended at 4 s (trace) and 7 s: 3 s per epoch, 1 s of it validation of 100 patches
    eta = eta_seconds(**base, epoch_ends=[4.0, 7.0], val_seconds=[1.0, 1.0], n_val=100, n_test=200)
    # 3 s left of epoch 3 (elapsed 10 > 7 + 3 -> at least the train part + validation), then epoch 4
    assert eta == pytest.approx(max(3.0 - 3.0, 2.0 + 1.0) + 3.0 + 200 * 0.01)
    without_test = eta_seconds(**base, epoch_ends=[4.0, 7.0], val_seconds=[1.0, 1.0], n_val=100)
    assert eta - without_test == pytest.approx(2.0)
    # before any epoch ended: step rate plus a validation guess for every epoch
    early = eta_seconds(elapsed=1.0, epoch=0, step=5, steps=10, epochs=2, n_val=640, batch_size=64)
    no_val = eta_seconds(elapsed=1.0, epoch=0, step=5, steps=10, epochs=2, batch_size=64)
    assert no_val == pytest.approx(0.2 * 15) and early > no_val
    assert eta_seconds(elapsed=0.0, epoch=0, step=0, steps=10, epochs=2) is None
    # the first step's trace is paid once: left out of the rates
    traced = eta_seconds(elapsed=5.0, epoch=0, step=5, steps=10, epochs=2, first_step=4.2)
    assert traced == pytest.approx(0.2 * 15)
    one = eta_seconds(elapsed=8.0, epoch=1, step=0, steps=10, epochs=3, epoch_ends=[8.0],
                          val_seconds=[0.0], first_step=6.0)
    assert one == pytest.approx(2 * 2.0 + 0.0)


def test_job_eta_uses_measured_epochs(toy_dataset):
    from xray_core.train.job import TrainingJob
    job = TrainingJob(FC.replace(epochs=2), toy_dataset).run()
    assert len(job._epoch_ends) == 2 and len(job._val_seconds) == 2
    assert job._epoch_ends[1] > job._epoch_ends[0] > 0
    assert job._eta_sizes == (128, 128)


def test_worker_jobs_show_the_trainers_own_eta(toy_dataset):
    """A job trained in a worker (or on Ray) shows the ETA its trainer computed from its
    own epoch ends, counted down between messages, not a guess from batch arrivals."""
    import time
    from xray_core.train.job import TRAINING, TrainingJob
    trainer = TrainingJob(FC.replace(epochs=2), toy_dataset)
    trainer.began_training(10)            # as the trainer's own callbacks publish it
    for i in range(15):
        trainer.batch_done(i % 10 + 1, 1.0, 0.5, 0.1)
        if i == 9:
            trainer.epoch_done(0, {"loss": 1.0, "accuracy": 0.5})
            trainer.epoch_clock(time.perf_counter(), 0.1)
    assert trainer.snapshot().state == TRAINING
    d = trainer.delta(0)
    assert d["eta"] is not None and d["eta"] > 0
    server = TrainingJob(FC.replace(epochs=2), toy_dataset)
    d["eta"] = 42.0           # whatever the trainer said is what the server shows
    server.mirror(d)
    eta = server.snapshot().eta
    assert 41.0 < eta <= 42.0
    server._remote_eta = (42.0, time.perf_counter() - 10.0)  # ten seconds since that message
    assert server.snapshot().eta == pytest.approx(32.0, abs=0.5)


def test_cost_keys_of_calibrations_on_disk_stay_the_same():
    assert est.cost_key(RunConfig()) == "fc/relu/bs64/adam/nobn"
    assert est.cost_key(RunConfig(batch_norm=True, batch_size=32, optimizer="sgd")) == "fc/relu/bs32/sgd/bn"
    assert est.cost_key(RunConfig(arch="cnn")) == "cnn/relu/bs64/adam/seed/64-128-128-256-256"
    from xray_core.presets import PRESETS
    assert est.cost_key(PRESETS["p2-corrected"].config) == "cnn/relu/bs64/adam/corrected/32-64-64-128-128/valid"


def test_a_knob_flagged_step_cost_joins_the_cost_key(monkeypatch):
    import dataclasses
    from xray_core import config
    assert est.cost_key(FC.replace(dropout=0.5)) == est.cost_key(FC)   # not flagged: one calibration
    monkeypatch.setitem(config.KNOBS, "dropout", dataclasses.replace(config.KNOBS["dropout"], step_cost="do{value}"))
    assert est.cost_key(FC.replace(dropout=0.5)) != est.cost_key(FC)
    assert est.cost_key(FC.replace(dropout=0.5)) == "fc/relu/do0.5/bs64/adam/nobn"   # in table order
    monkeypatch.setitem(config.KNOBS, "batch_size", dataclasses.replace(config.KNOBS["batch_size"], step_cost=None))
    assert est.cost_key(FC.replace(batch_size=32)) == est.cost_key(FC)   # unflagged: no longer in the key


def test_a_unet_estimate_is_rough_until_this_machine_has_run_one_then_learned(tmp_path, monkeypatch):
    """U-Nets are never calibrated (the calibration trains on patches): their rough figure
    was measured on one machine; a finished U-Net run here corrects it for every U-Net."""
    monkeypatch.setenv("XRAY_LAB_HOME", str(tmp_path))
    unet = RunConfig(arch="segment", epochs=4, batch_size=4)
    rough = est.estimate(unet, 150, 30, 37)
    assert rough["source"] == "rough" and est.cached_estimate(unet, 150, 30, 37) is None
    # this machine ran it in half the rough time (a faster CPU than the constants' one)
    est.learn(unet, 150, 30, 37, fit_seconds=rough["fit"] * 0.5, total_seconds=rough["total"] * 0.5)
    again = est.estimate(unet.replace(seed=3), 150, 30, 37)
    assert again["source"] == "learned"
    assert again["fit"] == pytest.approx(rough["fit"] * 0.75)      # counts half, as for patch models
    assert again["total"] == pytest.approx(rough["total"] * 0.75)
    # one ratio for the machine: another U-Net's estimate (rough scales with its shape) follows it
    small = RunConfig(arch="segment", input_size=64, epochs=9, batch_size=8)
    assert est.estimate(small, 150, 30, 37)["fit"] == pytest.approx(est.rough_estimate(small, 150, 30, 37)["fit"] * 0.75)
    est.forget_memory()                                            # kept on disk, for this machine only
    assert est.cached_estimate(unet, 150, 30, 37)["source"] == "learned"
    monkeypatch.setattr(est, "machine_signature", lambda: "another CPU | 2 cpu | tf ?")
    est.forget_memory()
    assert est.cached_estimate(unet, 150, 30, 37) is None
