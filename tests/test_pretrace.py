"""Pre-traced models (xray_core/pretrace.py): a model prepared in advance trains exactly as a
fresh build would, and only for the config and patch count it was made for."""
import numpy as np
import pytest

from xray_core.train import pretrace
from xray_core.config import RunConfig
from xray_core.train.job import DONE, Scheduler, TrainingJob
from xray_core.train.backends.worker import WorkerPool
from xray_core.train.backends.worker import InWorker

from .conftest import wait_for

FC = RunConfig(epochs=2, batch_size=32, lr=1e-3)


def _run(cfg, ds, prepared=None):
    job = TrainingJob(cfg, ds, scheduler=Scheduler(1), prepared=prepared).run()
    return job, job.snapshot()


@pytest.mark.parametrize("cfg", [
    FC.replace(limit_train=300),                                          # a short last batch
    FC.replace(dropout=0.3, batch_norm=True, activation="leaky_relu", seed=5, limit_train=256),  # whole batches
    RunConfig(arch="cnn", cnn_mode="corrected", epochs=1, batch_size=32, limit_train=96, filters=(4, 8, 8, 8, 8)),
    RunConfig(arch="cnn", cnn_mode="corrected", epochs=1, batch_size=32, limit_train=96, filters=(4, 8, 8, 8, 8),
              padding="valid", lr_schedule="cosine"),                  # p2-corrected's layout and schedule
], ids=["fc", "fc-dropout-bn", "cnn-corrected", "cnn-valid-cosine"])
def test_a_prepared_model_trains_exactly_as_a_fresh_build(cfg, toy_dataset):
    # the prepared model has trained one batch to trace its step: weights, batch-norm
    # statistics, dropout seed states and optimizer slots must all be put back
    prepared = pretrace.prepare(cfg, pretrace.n_train(cfg, toy_dataset))
    a_job, a = _run(cfg, toy_dataset, prepared)
    b_job, b = _run(cfg, toy_dataset)
    assert a_job.pretraced and not b_job.pretraced
    assert a.state == b.state == DONE
    np.testing.assert_allclose(a.batch_loss, b.batch_loss, rtol=1e-6)
    for wa, wb in zip(a_job.model.get_weights(), b_job.model.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)


def test_a_model_prepared_for_another_config_or_patch_count_is_not_used(toy_dataset):
    n = pretrace.n_train(FC, toy_dataset)
    for other, m in [(FC.replace(seed=1), n), (FC.replace(lr=1e-2), n), (FC, n - 1)]:
        job, s = _run(FC, toy_dataset, pretrace.prepare(other, m))
        assert not job.pretraced and s.state == DONE


def test_an_idle_worker_prepares_the_sidebar_model_and_the_job_takes_it(toy_dataset):
    import xray_core.train.backends.worker as w
    pool = WorkerPool(max_runs=5)
    real, w.POOL = w.POOL, pool
    try:
        pool.prewarm(1)
        assert wait_for(lambda: pool.idle_count() == 1, 120)
        n = pretrace.n_train(FC, toy_dataset)
        assert pool.prepare(FC, n, toy_dataset)
        assert not pool.prepare(FC, n, toy_dataset)   # it is held already: nothing sent again
        assert pool._idle[0].datasets == [w.dataset_id(toy_dataset)]   # the data went along, once
        a = TrainingJob(FC, toy_dataset, scheduler=Scheduler(1), trainer=InWorker()).start().join(180)
        assert a.pretraced
        # the worker dropped it with the job: the next job on another config builds its own
        b = TrainingJob(FC.replace(seed=2), toy_dataset, scheduler=Scheduler(1), trainer=InWorker()).start().join(180)
        assert not b.pretraced
    finally:
        w.POOL = real
        pool.shutdown()
    local = TrainingJob(FC, toy_dataset, scheduler=Scheduler(1)).run().snapshot()
    np.testing.assert_allclose(a.snapshot().history["loss"], local.history["loss"], rtol=1e-4)
    assert b.snapshot().state == DONE


def test_the_page_asks_for_no_prepared_model_while_runs_wait(monkeypatch, toy_dataset):
    """A queued run takes the next idle worker: a model traced for this sidebar (another seed,
    another setup) would only delay it. With nothing queued the page asks as before."""
    from xray_core.train import job as job_mod
    from xray_core.train.backends import worker
    from xray_ui import session
    asked = []
    monkeypatch.setattr(session, "BACKEND", "worker")
    monkeypatch.setattr(worker.POOL, "prepare", lambda cfg, n, ds=None: asked.append(n) or True)
    status = {"cap": 2, "running": 2, "waiting": 3, "held": 0}
    monkeypatch.setattr(job_mod.SCHEDULER, "status", lambda: dict(status))
    session.prepare_model(RunConfig(epochs=1), toy_dataset)
    assert asked == []
    status.update(waiting=0)
    session.prepare_model(RunConfig(epochs=1), toy_dataset)
    assert len(asked) == 1
