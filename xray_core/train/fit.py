"""Keras `fit` for one job, in the calling thread: what every trainer finally runs (the
worker process and the Ray actor run it too, in a job of their own).

Builds (or takes the pre-traced) model, streams every batch and epoch through the job's
events (callbacks.py), evaluates the test split, and writes the model once, to the
job's `model_path`.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from xray_core.train.states import DONE, EVALUATING, STOPPED

PROBE_SIZE = 256  # fixed probe batch for the dead-unit monitor
PREVIEW_FILM = 0  # the validation film whose predicted map a segmentation run publishes each epoch


class InThisThread:
    """The default trainer: Keras in the job's own thread (the CLI; the app without workers)."""
    name = backend = "local"

    def train(self, job) -> None:
        fit(job)


def fit(job) -> None:
    if job.config.arch == "segment":
        return fit_films(job)
    from xray_core.models import activation_layer_names, build_model
    from xray_core.train.batches import batches
    from xray_core.train.callbacks import EpochClock, Stream, UnitMonitor
    from xray_core.train.metrics import evaluate_predictions
    from xray_core.train.pretrace import fits

    cfg = job.config
    ds = job.load_data()
    train = ds.split("train")
    if cfg.limit_train:
        train = train.take(cfg.limit_train, seed=cfg.seed)
    val = ds.splits.get("validation") if ds.has("validation") else None
    n = len(train)
    steps = math.ceil(n / cfg.batch_size)
    if fits(job.prepared, cfg, n):
        model, job.pretraced = job.prepared, True
    else:
        model = build_model(cfg, steps_per_epoch=steps)
    job.prepared = None
    job.model = model
    n_test = len(ds.split("test")) if ds.has("test") else 0
    job.began_training(steps, n_val=len(val) if val is not None else 0, n_test=n_test)
    callbacks = [Stream(job, n, cfg.batch_size, val)]
    if job.probe and cfg.arch == "fc":
        names = activation_layer_names(model)
        probe_x = train.take(PROBE_SIZE, seed=cfg.seed + 1).x
        callbacks.append(UnitMonitor(job, names, probe_x, cfg.activation))
    callbacks.append(EpochClock(job))  # last: its epoch end comes after validation and probe
    fit_start = time.perf_counter()
    # Validation runs in Stream.on_epoch_end rather than via validation_data=, so that a
    # Stop does not first wait for Keras to validate the partial epoch (~6 s for a CNN).
    model.fit(batches(train, cfg.batch_size, cfg.seed), epochs=cfg.epochs, verbose=0,
              callbacks=callbacks, shuffle=False)  # batches() shuffles
    fit_seconds = time.perf_counter() - fit_start
    stopped = job.stop_requested
    epoch, step = job.progress_counts()
    epochs_run = epoch + (1 if step and epoch < cfg.epochs and stopped else 0)
    samples = epoch * n + (step * cfg.batch_size if stopped else 0)
    job.set_state(EVALUATING)
    result = {"timing": {"fit_seconds": fit_seconds,
                         "samples_per_second": samples / fit_seconds if fit_seconds else 0.0,
                         "epochs_run": epochs_run}}
    if ds.has("test"):
        test = ds.split("test")
        probs = model.predict(test.x, batch_size=1024, verbose=0)
        job.test_predictions = probs
        result["test"] = evaluate_predictions(test.y, probs)
    hist = job.snapshot().history
    if hist["accuracy"]:
        result["train_accuracy"] = hist["accuracy"][-1]
    if hist["val_accuracy"]:
        result["val_accuracy"] = hist["val_accuracy"][-1]
    result["params"] = int(model.count_params())
    if job.model_path is not None:
        write_model(model, job.model_path)
    job.finished(STOPPED if stopped else DONE, result=result)


def fit_films(job) -> None:
    """A segmentation run (arch segment): whole films and their label maps (data/films.py),
    augmented if asked (batches.film_batches), validated each epoch with Dice per class, tested
    against the prior (train/segment.py). Same events, same result keys as `fit`."""
    from xray_core.models import build_model
    from xray_core.train.batches import film_batches
    from xray_core.train.callbacks import EpochClock, Stream
    from xray_core.train.segment import test_result, validation_logs

    cfg = job.config
    ds = job.load_data()
    train = ds.split("train")
    if cfg.limit_train:
        train = train.take(cfg.limit_train, seed=cfg.seed)
    val = ds.splits.get("validation") if ds.has("validation") else None
    n = len(train)
    steps = math.ceil(n / cfg.batch_size)
    model = build_model(cfg, steps_per_epoch=steps)
    job.prepared = None
    job.model = model
    n_test = len(ds.split("test")) if ds.has("test") else 0
    job.began_training(steps, n_val=len(val) if val is not None else 0, n_test=n_test)
    # one validation film's map each epoch, for the live view (the first film: the same one every epoch)
    def publish(maps):
        job.preview_map(val.names[PREVIEW_FILM], PREVIEW_FILM, maps[PREVIEW_FILM])
    callbacks = [Stream(job, n, cfg.batch_size, val,
                        validate=lambda m, v: validation_logs(m, v, cfg.loss, preview=publish)),
                 EpochClock(job)]
    fit_start = time.perf_counter()
    model.fit(film_batches(train, cfg.batch_size, cfg.seed, augment=cfg.augment), epochs=cfg.epochs, verbose=0,
              callbacks=callbacks, shuffle=False)
    fit_seconds = time.perf_counter() - fit_start
    stopped = job.stop_requested
    epoch, step = job.progress_counts()
    epochs_run = epoch + (1 if step and epoch < cfg.epochs and stopped else 0)
    samples = epoch * n + (step * cfg.batch_size if stopped else 0)
    job.set_state(EVALUATING)
    result = {"timing": {"fit_seconds": fit_seconds,
                         "samples_per_second": samples / fit_seconds if fit_seconds else 0.0,
                         "epochs_run": epochs_run}}
    if ds.has("test"):
        result["test"] = test_result(model, train, ds.split("test"))
        result["timing"]["map_ms_per_film"] = result["test"]["map_ms_per_film"]
    job.test_predictions = None     # (patch runs keep theirs for the app's gallery of test patches)
    hist = job.snapshot().history
    if hist["accuracy"]:
        result["train_accuracy"] = hist["accuracy"][-1]
    if hist["val_accuracy"]:
        result["val_accuracy"] = hist["val_accuracy"][-1]
    result["params"] = int(model.count_params())
    if job.model_path is not None:
        write_model(model, job.model_path)
    job.finished(STOPPED if stopped else DONE, result=result)


def write_model(model, path: Path) -> None:
    """Save a model where it is kept: written beside, then renamed, so a reader never sees
    half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial.keras")
    model.save(tmp)
    os.replace(tmp, path)
