"""Pre-traced models: the first live point sooner after a click on Train (issue 10).

Keras traces a model's train step on its first batch (≈ 0.5 s for the course's FC net on
this 2-core CPU, seconds for a CNN): most of the time between the click and the first
point of the live chart. While a training process waits idle, it can build the model of
the config on the student's sidebar, train it on one batch of random patches (which
traces the step) and put every variable back: weights, batch-norm statistics, the
dropout layers' seed states, the optimizer's slots and step count. The model then starts
exactly where a fresh build starts (tests/test_pretrace.py checks the curves are the
same), and when the student presses Train with that config, the job takes it and its
first batch needs no trace.

A prepared model fits one job: the same config (seed included) and the same number of
training patches (the learning-rate schedule and the batches' shapes depend on it).
"""
from __future__ import annotations

import json
import math

import numpy as np

from xray_core.config import RunConfig


def n_train(config: RunConfig, dataset) -> int:
    """Training patches the job will see (what TrainingJob takes from the split)."""
    n = len(dataset.split("train"))
    return min(n, config.limit_train) if config.limit_train else n


def key(config: RunConfig, n: int) -> str:
    """What a prepared model must match to be used: the whole config and the patch count."""
    return json.dumps([config.resolved().to_dict(), int(n)], sort_keys=True)


def prepare(config: RunConfig, n: int):
    """A compiled model for `config`, its train step traced, its state as freshly built."""
    from xray_core.data.dataset import Split
    from xray_core.models import build_model
    from xray_core.train.batches import batches
    cfg = config.resolved()
    if cfg.arch == "segment":       # whole films: no head start yet (its job builds its own model)
        return None
    bs = cfg.batch_size
    model = build_model(cfg, steps_per_epoch=math.ceil(n / bs))
    model.optimizer.build(model.trainable_variables)
    saved = [v.numpy() for v in model.variables]
    saved_opt = [v.numpy() for v in model.optimizer.variables]
    # the batches must have the job's shape: a static batch size when every batch is whole,
    # else an unknown one (the last batch is short) -- another shape would trace again
    m = bs if n % bs == 0 else bs + 1
    rng = np.random.default_rng(0)
    warm = Split(rng.random((m, 32, 32, 1), dtype=np.float32), rng.integers(0, 4, m))
    model.fit(batches(warm, bs, 0), epochs=1, verbose=0, shuffle=False)
    for v, a in zip(model.variables, saved):
        v.assign(a)
    for v, a in zip(model.optimizer.variables, saved_opt):
        v.assign(a)
    model.stop_training = False
    model.xray_pretrace_key = key(cfg, n)
    return model


def fits(model, config: RunConfig, n: int) -> bool:
    return model is not None and getattr(model, "xray_pretrace_key", None) == key(config, n)
