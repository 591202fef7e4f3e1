"""The ETA of a running job, from its own measured progress (the estimate before a run is
estimate.py's)."""
from __future__ import annotations


def eta_seconds(*, elapsed: float, epoch: int, step: int, steps: int, epochs: int,
                epoch_ends: list[float] = (), val_seconds: list[float] = (), n_val: int = 0,
                n_test: int = 0, batch_size: int = 1, first_step: float | None = None) -> float | None:
    """Seconds left in a running job, from its own measured progress.

    elapsed: since training started; epoch_ends: elapsed time at each finished epoch's
    end; val_seconds: how long each epoch's validation + probe took (both empty when
    only progress counts are known, e.g. a job mirrored from a worker); first_step:
    elapsed time at the end of the first batch, i.e. mostly Keras tracing the step,
    which is paid once and left out of every rate below.
    - From the 2nd epoch on: the wall time per epoch between epoch ends, which
      includes validation and the probe.
    - After one epoch: that epoch's wall time without the first step.
    - Before: the step rate after the first step, plus validation guessed as a
      forward pass (a third of a training step) per patch.
    Then the remaining test evaluation: one forward pass over the test split, per
    patch as long as validation took."""
    if steps <= 0 or (epoch == 0 and step == 0):
        return None
    done = epoch + step / steps                      # epochs' worth of training done
    once = min(first_step or 0.0, elapsed)           # the first step (trace), paid once
    if epoch_ends:
        n = len(epoch_ends)
        per_epoch = (epoch_ends[-1] - epoch_ends[0]) / (n - 1) if n >= 2 else max(epoch_ends[0] - once, 1e-9)
        val = val_seconds[-1] if val_seconds else 0.0
        train_part = max(per_epoch - val, 1e-9)
        in_epoch = max(elapsed - epoch_ends[-1], 0.0)
        left_this = max(per_epoch - in_epoch, train_part * (1 - step / steps) + val) if epoch < epochs else 0.0
        rest = left_this + max(epochs - epoch - 1, 0) * per_epoch
        per_patch_eval = val / n_val if n_val and val else train_part / (steps * batch_size) / 3
    elif epoch:
        per_epoch = max(elapsed - once, 1e-9) / done   # validation included, as measured
        rest = per_epoch * max(epochs - done, 0.0)
        per_patch_eval = per_epoch / (steps * batch_size + n_val) / 3
    else:
        rate = (elapsed - once) / (step - 1) if once and step > 1 else elapsed / step
        per_patch_eval = rate / batch_size / 3
        rest = rate * (steps * epochs - step) + epochs * n_val * per_patch_eval
    return max(rest + n_test * per_patch_eval, 0.0)
