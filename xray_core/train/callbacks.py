"""The Keras callbacks a training job streams through.

- `Stream`: publishes every batch's loss/accuracy and every epoch's metrics into the
  job's lock-protected state (what `TrainingJob.snapshot()` reads) and turns
  `job.stop()` into `model.stop_training` after the current batch.
- `UnitMonitor`: the share of dead / negative / saturated hidden units per epoch
  (FC models), measured on a fixed probe batch; `unit_share` does the counting.

They publish through the job's events (`batch_done`, `epoch_done`, ...): any object
with those methods will do (the estimate's calibration passes its own).
"""
from __future__ import annotations

import time
import numpy as np

from xray_core.data.dataset import Split

__all__ = ["Stream", "UnitMonitor", "unit_share"]

def _keras_callback_base():
    from xray_core.tf_quiet import keras
    return keras.callbacks.Callback


class Stream(_keras_callback_base()):
    """Publishes per-batch and per-epoch metrics into the job and honours stop().

    Keras logs a running mean over the epoch; the per-batch value is recovered
    exactly from consecutive means (weighted by batch sizes), so students see
    the real jitter of small batches at no extra compute."""

    def __init__(self, job, n: int, batch_size: int, val: Split | None = None, validate=None):
        """`validate(model, val) -> logs`: how the validation split is scored at each epoch's
        end (default: Keras' evaluate, `val_loss` and `val_accuracy`; a segmentation run
        adds its Dice per class, train/segment.py)."""
        super().__init__()
        self.job, self.n, self.bs, self.val, self.validate = job, n, batch_size, val, validate
        self._prev = (0.0, 0.0, 0)

    def on_epoch_begin(self, epoch, logs=None):
        self._prev = (0.0, 0.0, 0)
        self.job.epoch_began()

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        loss_mean, acc_mean = float(logs.get("loss", np.nan)), float(logs.get("accuracy", np.nan))
        seen = min((batch + 1) * self.bs, self.n)
        p_loss, p_acc, p_seen = self._prev
        b = seen - p_seen
        batch_loss = (loss_mean * seen - p_loss * p_seen) / b
        batch_acc = (acc_mean * seen - p_acc * p_seen) / b
        self._prev = (loss_mean, acc_mean, seen)
        self.job.batch_done(batch + 1, batch_loss, batch_acc, seen / self.n)
        if self.job.stop_requested:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.val is not None and not self.job.stop_requested:
            if self.validate is not None:
                logs.update(self.validate(self.model, self.val))
            else:
                res = self.model.evaluate(self.val.x, self.val.y, batch_size=512, verbose=0, return_dict=True)
                logs["val_loss"], logs["val_accuracy"] = res["loss"], res["accuracy"]
        self.job.epoch_done(epoch, logs)


class EpochClock(_keras_callback_base()):
    """When each epoch ended and how long its validation + probe took, for the ETA.
    Goes last in the callback list, so an epoch's end includes the others' work."""

    def __init__(self, job):
        super().__init__()
        self.job = job
        self._last_batch = None

    def on_train_batch_end(self, batch, logs=None):
        self._last_batch = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.job.epoch_clock(now, None if self._last_batch is None else now - self._last_batch)


class UnitMonitor(_keras_callback_base()):
    """Dead-unit monitor: share of hidden units that never fire on a fixed probe batch.

    ReLU: output exactly 0 on every probe sample ("dead": no gradient flows).
    LeakyReLU / ELU: negative on every probe sample (not dead: the slope still passes gradient).
    sigmoid / tanh: saturated (output within 0.02 of its bounds) on ≥ 90 % of samples."""

    def __init__(self, job, layer_names: list[str], probe_x: np.ndarray, activation: str):
        super().__init__()
        self.job, self.names, self.x, self.activation = job, layer_names, probe_x, activation
        self._probe = None

    def _measure(self, epoch: int) -> None:
        import keras
        if self._probe is None:
            outs = [self.model.get_layer(n).output for n in self.names]
            self._probe = keras.Model(self.model.input, outs)
        acts = self._probe(self.x, training=False)
        if not isinstance(acts, (list, tuple)):
            acts = [acts]
        shares = {}
        for name, a in zip(self.names, acts):
            shares[name] = unit_share(np.asarray(a), self.activation)
        kind = "saturated" if self.activation in ("sigmoid", "tanh") else (
            "dead" if self.activation == "relu" else "negative")
        self.job.unit_stats_measured({"epoch": epoch, "kind": kind, "layers": shares})

    def on_train_begin(self, logs=None):
        self._measure(0)

    def on_epoch_end(self, epoch, logs=None):
        self._measure(epoch + 1)


def unit_share(a: np.ndarray, activation: str) -> float:
    """Share of units (columns of a) that are dead / negative / saturated on the probe rows."""
    if activation == "relu":
        flags = np.all(a <= 0, axis=0)
    elif activation in ("leaky_relu", "elu"):
        flags = np.all(a < 0, axis=0)
    elif activation == "sigmoid":
        flags = np.mean((a < 0.02) | (a > 0.98), axis=0) >= 0.9
    else:  # tanh
        flags = np.mean(np.abs(a) > 0.98, axis=0) >= 0.9
    return float(np.mean(flags))
