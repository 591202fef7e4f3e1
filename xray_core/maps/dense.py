"""Dense anatomy maps: one pass of a CNN over the whole film instead of one per patch.

A patch-by-patch map at stride 4 runs 4,096 overlapping 32x32 patches through the
network separately, although neighbouring patches share almost all their pixels.
For a network made only of 3x3 convolutions, per-channel batch norm, element-wise
activations, 2x2 max pooling and a dense head, the same numbers can be had from the
fully-convolutional form of the network, run once over the film:

- convolutions and batch norm run on the whole (padded) film;
- each 2x2 max pool either really subsamples (while the map is still finer than the
  requested stride) or, once it is not, becomes a stride-1 pool whose later layers
  use filters dilated by the pooling factor ("à trous", Holschneider et al. 1989;
  Long, Shelhamer & Darrell 2015 call its cousin shift-and-stitch);
- the dense head becomes convolutions: Flatten+Dense(512) is a side x side convolution
  over the last feature map (4x4 with 'same' convs, 1x1 with 'valid' ones; dilated like
  the layers before it), the later Dense layers are 1x1 convolutions.

Output (y, x) of the dense pass is then the network applied to the patch whose top
left corner is padded-film pixel (y*t, x*t), i.e. the patch centred on film pixel
(y*t, x*t). With 'valid' convolutions (`RunConfig.padding`, the `p2-corrected` preset)
that is exact: the patch network only ever reads real pixels of its patch, and so does
the film pass (`DensePlan.exact`; tests/test_dense.py checks it to 1e-5). With 'same'
convolutions it is not: a patch cut out of the film sees zeros beyond its own border,
whereas the whole-film pass sees the real neighbouring pixels there. Every feature of
the last conv layer depends on that border, so no shared computation can reproduce it
exactly; `anatomy_map` then measures on a sample how far the two differ and
re-evaluates patch-by-patch the grid points where the dense pass is unsure (small
margin between the two best classes), where that difference could flip a label.

Networks that are not translation-equivariant keep the patch path, with a reason:
the course's seed CNN (BatchNormalization(axis=1) learns one scale per image *row*,
so a row of the film is not treated like the same row of a patch) and FC models
(no convolution to share).

This module imports TensorFlow lazily (inference.py imports neither keras nor TF).
"""
from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from xray_core import CLASSES, PATCH
from xray_core.errors import log_once, one_line

_log = logging.getLogger(__name__)
POOL = 2          # the course's MaxPooling2D(2)
MAX_SHIFT = 8     # three pools: the dense grid can step by 1, 2, 4 or 8 film pixels


@dataclass(frozen=True)
class DensePlan:
    """The model as a list of steps the dense pass can run, or why it cannot."""
    ok: bool
    reason: str                    # why dense does (not) apply, one sentence
    steps: tuple = ()              # ("conv", W, b, act, padding) | ("bn", scale, shift) | ("act", layer)
                                   # | ("pool",) | ("head", Wsxs, b, act) | ("fc", W, b, act)
    pools: int = 0
    exact: bool = False            # no zero padding anywhere: dense == patch by patch (to rounding)


_plans: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_plans_lock = threading.Lock()


def dense_plan(model) -> DensePlan:
    """Cached per model (the weights are read once; a model trained further afterwards
    needs `forget(model)`)."""
    with _plans_lock:
        try:
            return _plans[model]
        except (KeyError, TypeError):
            pass
    try:
        plan = _make_plan(model)
    except Exception as e:   # a model this check did not foresee: patch by patch, and the note says why
        log_once(_log, "dense map: checking the model for the one-pass form failed", e)
        plan = _no(f"checking it for the one-pass form failed ({one_line(e)}).")
    with _plans_lock:
        try:
            _plans[model] = plan
        except TypeError:
            pass
    return plan


def forget(model) -> None:
    with _plans_lock:
        _plans.pop(model, None)


def _no(reason: str) -> DensePlan:
    return DensePlan(False, reason)


def _make_plan(model) -> DensePlan:
    try:
        from keras import layers as L
    except ImportError as e:    # no usable Keras here: said, not taken for "not a Keras model"
        return _no(f"Keras cannot be imported here ({one_line(e)}).")
    if not hasattr(model, "layers"):
        return _no("the model is not a Keras model.")
    steps: list = []
    pools = 0
    flat = False
    n_conv = 0
    side = PATCH          # the patch's feature map, to read the dense head's kernel size
    padded = False        # a 'same' conv saw zeros beyond the patch: dense is then approximate
    for layer in model.layers:
        name = type(layer).__name__
        if isinstance(layer, L.InputLayer):
            continue
        if isinstance(layer, L.Dropout):          # identity at inference
            continue
        if isinstance(layer, L.Conv2D) and type(layer) is L.Conv2D:
            if flat:
                return _no(f"layer {layer.name} is a convolution after the flatten.")
            k = tuple(layer.kernel_size)
            if (k[0] % 2 == 0 or k[1] % 2 == 0 or tuple(layer.strides) != (1, 1)
                    or tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1
                    or layer.padding not in ("same", "valid")
                    or layer.data_format != "channels_last"):
                return _no(f"layer {layer.name} is not a stride-1, odd-sized 'same' or 'valid' convolution.")
            w = np.asarray(layer.kernel.numpy(), np.float32)
            b = np.asarray(layer.bias.numpy(), np.float32) if layer.use_bias else None
            if layer.padding == "valid":
                side -= k[0] - 1
            elif k != (1, 1):
                padded = True
            steps.append(("conv", w, b, layer.activation, layer.padding))
            n_conv += 1
            continue
        if isinstance(layer, L.BatchNormalization):
            axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
            rank = 2 if flat else 4
            if axis is None or axis % rank != rank - 1:
                # BN over image rows (the course's axis=1 on NHWC tensors): its scale for
                # patch row r would have to be applied to every film row r + y -- there is
                # no single pass over the film that does that.
                return _no(f"its BatchNormalization(axis={layer.axis}) normalises image rows, not channels, "
                           f"so the network is not the same at every position of the film.")
            gamma = layer.gamma.numpy() if layer.scale else 1.0
            beta = layer.beta.numpy() if layer.center else 0.0
            scale = np.asarray(gamma / np.sqrt(layer.moving_variance.numpy() + layer.epsilon), np.float32)
            shift = np.asarray(beta - layer.moving_mean.numpy() * scale, np.float32)
            prev = steps[-1] if steps else None
            if prev and prev[0] == "conv" and _is_linear(prev[3]):
                # conv then batch norm, nothing in between (the corrected CNN): fold the
                # norm into the filters, one pass over the film's feature map fewer
                w, b = prev[1] * scale, (prev[2] if prev[2] is not None else 0.0) * scale + shift
                steps[-1] = ("conv", w.astype(np.float32), np.asarray(b, np.float32), prev[3], prev[4])
            else:
                steps.append(("bn", scale, shift))
            continue
        if isinstance(layer, (L.Activation, L.LeakyReLU, L.ReLU, L.ELU)):
            steps.append(("act", layer))
            continue
        if isinstance(layer, L.MaxPooling2D):
            if (tuple(layer.pool_size) != (POOL, POOL) or tuple(layer.strides) != (POOL, POOL) or flat
                    or not (layer.padding == "valid" or side == 1)):
                return _no(f"layer {layer.name} is not a 2x2 max pool with stride 2.")
            if side == 1:       # 'valid' convs left a 1x1 map: this pool is the identity
                continue
            steps.append(("pool",))
            pools += 1
            side //= POOL
            continue
        if isinstance(layer, L.Flatten):
            if n_conv == 0:
                return _no("it has no convolution before its first dense layer (a fully connected model), "
                           "so there is no computation neighbouring patches could share.")
            flat = True
            continue
        if isinstance(layer, L.Dense):
            if not flat:
                return _no(f"dense layer {layer.name} comes before the flatten.")
            w = np.asarray(layer.kernel.numpy(), np.float32)
            b = np.asarray(layer.bias.numpy(), np.float32) if layer.use_bias else None
            if not any(s[0] in ("head", "fc") for s in steps):
                c = w.shape[0] // (side * side) if side > 0 else 0
                if c * side * side != w.shape[0]:
                    return _no(f"dense layer {layer.name} does not match the last feature map.")
                # Flatten is row-major over (row, col, channel): the dense kernel *is* a
                # side x side convolution kernel.
                steps.append(("head", w.reshape(side, side, c, w.shape[1]), b, layer.activation))
            else:
                steps.append(("fc", w, b, layer.activation))
            continue
        return _no(f"layer {layer.name} ({name}) has no fully-convolutional form here.")
    if not flat or not any(s[0] == "head" for s in steps):
        return _no("it has no convolutional layers followed by a dense head.")
    if pools > 3:
        return _no("it pools more than three times.")
    if not padded:
        return DensePlan(True, "Dense: a convolutional network with batch norm over channels and no zero "
                               "padding, so the whole film goes through its layers once (fully-convolutional "
                               "form) and gives exactly the patch-by-patch labels.", tuple(steps), pools, True)
    return DensePlan(True, "Dense: a convolutional network with batch norm over channels, so the whole film "
                           "goes through its layers once (fully-convolutional form); where its 'same' padding's "
                           "zero border could change a label, that point is checked patch by patch.",
                     tuple(steps), pools)


def _is_linear(act) -> bool:
    from keras import activations    # only asked by _make_plan, which has imported Keras
    return act is None or act is activations.linear or getattr(act, "__name__", "") == "linear"


def dense_grid(model, padded: np.ndarray, stride: int, n_rows: int, n_cols: int,
               plan: DensePlan | None = None) -> np.ndarray:
    """Class probabilities (n_rows, n_cols, 4) for the patches whose top-left corners are
    padded-film pixels (i*stride, j*stride): `padded` is the film (0..1 float) already
    padded by PATCH//2 on every side, as the patch path cuts it."""
    import tensorflow as tf
    plan = plan or dense_plan(model)
    if not plan.ok:
        raise ValueError(plan.reason)
    # The finest grid the network gives for free is 2**pools pixels; below the requested
    # stride's power-of-two factor (capped at that), pools really subsample; after, à trous.
    t = pool_factor(plan, stride)
    padded = np.asarray(padded, np.float32)
    if plan.exact:   # only the rows and columns the last patches reach: nothing beyond is ever read
        padded = padded[:(n_rows - 1) * stride + PATCH, :(n_cols - 1) * stride + PATCH]
    x = tf.constant(padded[None, :, :, None])
    out = _run(plan, x, t)
    out = out[0].numpy()
    step = stride // t
    grid = out[::step, ::step][:n_rows, :n_cols]
    if grid.shape[:2] != (n_rows, n_cols):     # cannot happen with PATCH//2 padding; be loud if it does
        raise ValueError(f"dense pass gave a {grid.shape[:2]} grid, expected {(n_rows, n_cols)}")
    return np.ascontiguousarray(grid, dtype=np.float32)


def pool_factor(plan: DensePlan, stride: int) -> int:
    """How much the dense pass really subsamples for `stride` (see dense_grid)."""
    t = 1
    while t < 2 ** plan.pools and stride % (t * 2) == 0:
        t *= 2
    return t


def dense_bytes(plan: DensePlan, rows: int, cols: int, stride: int) -> int:
    """Bytes the whole-film pass holds at its widest step (a step's input + output, float32;
    an à trous pool also its half-done maximum), for a padded film of rows x cols as
    dense_grid runs it: the same shape walk as _run, without running anything."""
    from xray_core.cost import FLOAT_BYTES
    t = pool_factor(plan, stride)
    h, w, c = rows, cols, 1
    sub, dil, peak = 1, 1, 0
    for s in plan.steps:
        kind, size_in = s[0], h * w * c
        extra = 0
        if kind in ("conv", "head"):
            kh, kw, _, c = s[1].shape
            if not (kind == "conv" and s[4] == "same"):
                h, w = h - (kh - 1) * dil, w - (kw - 1) * dil
        elif kind == "pool":
            if sub < t:
                h, w, sub = h // POOL, w // POOL, sub * POOL
            else:
                extra = (h - dil) * w * c
                h, w, dil = h - dil, w - dil, dil * POOL
        elif kind == "fc":
            c = s[1].shape[1]
        h, w = max(h, 0), max(w, 0)
        peak = max(peak, (size_in + extra + h * w * c) * FLOAT_BYTES)
    return peak


def _run(plan: DensePlan, x, t: int):
    import tensorflow as tf
    sub = 1        # how much the map has been subsampled so far
    dil = 1        # dilation of the following filters (pooling factors not subsampled)
    for s in plan.steps:
        kind = s[0]
        if kind in ("conv", "head"):   # the head (Flatten + Dense as a side x side conv) adds no padding
            w, b, act = s[1:4]
            pad = "SAME" if kind == "conv" and s[4] == "same" else "VALID"
            x = tf.nn.conv2d(x, w, strides=1, padding=pad, dilations=dil)
            if b is not None:
                x = x + b
            x = act(x)
        elif kind == "bn":
            x = x * s[1] + s[2]
        elif kind == "act":
            x = s[1](x)
        elif kind == "pool":
            if sub < t:
                x = tf.nn.max_pool2d(x, POOL, POOL, "VALID")
                sub *= POOL
            else:
                # stride-1 pool over offsets {0, dil} in each direction ('valid': the map
                # shrinks by dil; the padding leaves enough rows, see dense_grid)
                a = tf.maximum(x[:, :-dil], x[:, dil:])
                x = tf.maximum(a[:, :, :-dil], a[:, :, dil:])
                dil *= POOL
        elif kind == "fc":
            _, w, b, act = s
            x = tf.tensordot(x, w, axes=[[3], [0]])
            if b is not None:
                x = x + b
            x = act(x)
    return x
