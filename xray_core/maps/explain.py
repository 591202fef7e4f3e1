"""Inside the network: why a patch got its label, and what each layer learned.

Works on any Keras model of this app (xray_core.models: FC `dense1…` or CNN `conv1…`)
or an uploaded .keras mapping 32x32x1 patches in [0, 1] to 4 softmax probabilities.
Patches are prepared exactly as the app prepares model input (`prepare_patch` calls
`images.patch_input`), so an explanation is about the very array the model classifies.

Why this label (each returns a float32 32x32 map, larger = more important for the
target class, which defaults to the predicted one):
- `integrated_gradients`: gradients along the straight path black → patch, all steps in
  one batched call; sums (nearly) to p(patch) - p(black) for the class.
- `gradient_x_input`: the first-order version (one gradient, times the pixel).
- `occlusion`: how much the class probability drops when a square of the patch is
  painted over (all positions in one batch).
- `grad_cam`: the last conv layer's feature maps weighted by their pooled gradient (CNNs).

What the layers learned:
- FC: `fc_units` (first-layer weights as 32x32 images ordered by influence, dead units
  marked) and `compare_fc` (two runs side by side).
- CNN: `conv_filters`, `feature_maps` (every conv layer, with activation histograms)
  and `batchnorm_rows` (the seed CNN's BatchNormalization(axis=1) vs channel-wise).

Everything is cached per (model, patch hash, what) in a small LRU so that re-opening a
view is free. No streamlit here.
"""
from __future__ import annotations

import hashlib
import itertools
import threading
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from xray_core import CLASSES, PATCH
from xray_core.errors import ConfigError, ImageError
from xray_core.data.images import patch_input
from xray_core.maps.inference import fit_batch, predict_patches

METHODS = ("saliency", "occlusion", "gradcam")
IG_STEPS = 32            # Riemann steps of integrated gradients (one batch)
CACHE_SIZE = 64          # explanations kept (each a few KB; feature maps up to ~1 MB)
HIST_BINS = 40

__all__ = [
    "METHODS", "prepare_patch", "film_patch", "probabilities", "explain", "integrated_gradients",
    "gradient_x_input", "occlusion", "grad_cam", "has_conv", "fc_units", "FCUnits",
    "compare_fc", "conv_filters", "feature_maps", "FeatureMaps", "batchnorm_rows",
    "rowwise_bn_layers", "deletion_curve", "deletion_test", "cache_clear", "model_key", "patch_key",
]


# ---- input, keys, cache ----------------------------------------------------------------

def prepare_patch(img: np.ndarray) -> np.ndarray:
    """The model's input for an image: float32 (32, 32) in [0, 1], via the app's one path."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return patch_input(a)


_keys: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_keys_lock = threading.Lock()


def model_key(model) -> str:
    """A stable id for a live model object (never reused, unlike id())."""
    with _keys_lock:
        k = _keys.get(model)
        if k is None:
            k = _keys[model] = uuid.uuid4().hex[:12]
        return k


def patch_key(patch: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(patch, dtype=np.float32).tobytes()).hexdigest()[:16]


_cache: "OrderedDict[tuple, object]" = OrderedDict()
_cache_lock = threading.Lock()


def _cached(key: tuple, compute):
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = compute()
    with _cache_lock:
        _cache[key] = value
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return value


def cache_clear() -> None:
    with _cache_lock:
        _cache.clear()


def _check_patch(patch) -> np.ndarray:
    p = np.asarray(patch, dtype=np.float32)
    if p.ndim == 3 and p.shape[-1] == 1:
        p = p[..., 0]
    if p.shape != (PATCH, PATCH):
        raise ImageError(f"a patch must be {PATCH}x{PATCH}, got shape {p.shape}; use prepare_patch()")
    if not np.all(np.isfinite(p)):
        raise ImageError("the patch contains NaN or infinite values")
    return np.clip(p, 0.0, 1.0)


def _target(model, patch: np.ndarray, target) -> int:
    if target is None:
        return int(np.argmax(probabilities(model, patch)))
    if isinstance(target, str):
        if target not in CLASSES:
            raise ConfigError(f"unknown class {target!r}: choose one of {', '.join(CLASSES)}")
        return CLASSES.index(target)
    t = int(target)
    if not 0 <= t < len(CLASSES):
        raise ConfigError(f"class index must be 0..{len(CLASSES) - 1}, got {target!r}")
    return t


def probabilities(model, patch: np.ndarray) -> np.ndarray:
    """(4,) class probabilities of the model on one prepared patch (cached)."""
    p = _check_patch(patch)
    return _cached((model_key(model), patch_key(p), "probs"),
                   lambda: predict_patches(model, p[None])[0])


def film_patch(film: np.ndarray, y: int, x: int) -> np.ndarray:
    """The 32x32 patch the anatomy map classified for film pixel (y, x): `film` is the map's
    film (AnatomyMap.film, film scale, 8-bit levels), reflection-padded by 16 px as there."""
    f = np.asarray(film, dtype=np.float32)
    if f.ndim != 2 or not (0 <= y < f.shape[0] and 0 <= x < f.shape[1]):
        raise ImageError(f"point ({x}, {y}) is outside the {f.shape[1]}x{f.shape[0]} film")
    half = PATCH // 2
    return np.ascontiguousarray(np.pad(f, half, mode="reflect")[y:y + PATCH, x:x + PATCH])


_sub_lock = threading.Lock()
_SUB_ATTR = "_xray_explain_parts"


def _submodel(model, name: str, build):
    """Keras sub-models and compiled functions per model, built once (under a lock: two
    sessions must not build the same one at once). Kept ON the model (bypassing Keras'
    attribute tracking, so saving is unaffected) rather than in a WeakKeyDictionary, whose
    values would reference their key and keep every explained model alive forever."""
    with _sub_lock:
        per = model.__dict__.get(_SUB_ATTR)
        if per is None:
            per = {}
            object.__setattr__(model, _SUB_ATTR, per)
        if name not in per:
            per[name] = build()
        return per[name]


# ---- gradients -------------------------------------------------------------------------

def _x4(x: np.ndarray):
    import tensorflow as tf
    return tf.convert_to_tensor(np.asarray(x, dtype=np.float32).reshape((-1, PATCH, PATCH, 1)))


def _class_gradients(model, x: np.ndarray, target: int) -> np.ndarray:
    """d p_target / d input for a batch (n, 32, 32): one forward+backward pass per chunk of
    patches whose activations fit modelcheck.BATCH_BYTES (inference.fit_batch)."""
    import tensorflow as tf
    fn = _submodel(model, "grad", lambda: _grad_function(model))
    x = np.asarray(x, dtype=np.float32).reshape((-1, PATCH, PATCH))
    step = fit_batch(model, max(1, len(x)), gradient=True)
    parts = [np.asarray(fn(_x4(x[i:i + step]), tf.constant(target, tf.int32)))[..., 0]
             for i in range(0, len(x), step)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _grad_function(model):
    """A compiled (tf.function) gradient: 1.5-2.5x faster than eager GradientTape for the
    CNNs on this CPU; one trace per model thanks to the fixed signature."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, PATCH, PATCH, 1], tf.float32),
                                  tf.TensorSpec([], tf.int32)])
    def grad(xt, target):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            score = tf.reduce_sum(tf.gather(model(xt, training=False), target, axis=1))
        return tape.gradient(score, xt)
    return grad


def integrated_gradients(model, patch: np.ndarray, target=None, steps: int = IG_STEPS) -> np.ndarray:
    """Integrated gradients from a black baseline (Sundararajan et al. 2017): the patch times
    the average gradient along black → patch (midpoint rule, `steps` points in one batch).
    Signed: positive pixels push the class probability up."""
    p = _check_patch(patch)
    t = _target(model, p, target)
    if not isinstance(steps, int) or not 2 <= steps <= 256:
        raise ConfigError(f"steps must be a whole number from 2 to 256, got {steps!r}")

    def compute():
        alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps
        grads = _class_gradients(model, alphas[:, None, None] * p[None], t)
        return (p * grads.mean(axis=0)).astype(np.float32)
    return _cached((model_key(model), patch_key(p), "ig", t, steps), compute)


def gradient_x_input(model, patch: np.ndarray, target=None) -> np.ndarray:
    p = _check_patch(patch)
    t = _target(model, p, target)
    return _cached((model_key(model), patch_key(p), "gxi", t),
                   lambda: (p * _class_gradients(model, p[None], t)[0]).astype(np.float32))


# ---- occlusion ------------------------------------------------------------------------

def occlusion(model, patch: np.ndarray, target=None, size: int = 8, stride: int | None = None,
              fill: float | str = "mean") -> np.ndarray:
    """Paint a size x size square (the patch's mean grey by default) at every stride-th
    position, all in one batch; a pixel's importance is the average drop of the class
    probability over the squares that covered it (negative: hiding it helped the class)."""
    p = _check_patch(patch)
    t = _target(model, p, target)
    if not isinstance(size, int) or not 2 <= size <= PATCH // 2:
        raise ConfigError(f"occlusion size must be 2..{PATCH // 2} pixels, got {size!r}")
    if stride is None:   # CNNs cost ~100x an FC per patch: coarser grid keeps a view under 2 s
        stride = 4 if has_conv(model) else 2
    if not isinstance(stride, int) or not 1 <= stride <= size:
        raise ConfigError(f"occlusion stride must be 1..{size}, got {stride!r}")
    value = float(p.mean()) if fill == "mean" else float(fill)

    def compute():
        starts = list(range(0, PATCH - size + 1, stride))
        if starts[-1] != PATCH - size:
            starts.append(PATCH - size)
        pos = list(itertools.product(starts, starts))
        batch = np.repeat(p[None], len(pos), axis=0)
        for k, (i, j) in enumerate(pos):
            batch[k, i:i + size, j:j + size] = value
        base = float(probabilities(model, p)[t])
        drops = base - predict_patches(model, batch)[:, t]
        total = np.zeros((PATCH, PATCH), np.float32)
        count = np.zeros((PATCH, PATCH), np.float32)
        for d, (i, j) in zip(drops, pos):
            total[i:i + size, j:j + size] += d
            count[i:i + size, j:j + size] += 1
        return total / np.maximum(count, 1)
    return _cached((model_key(model), patch_key(p), "occ", t, size, stride, value), compute)


# ---- Grad-CAM --------------------------------------------------------------------------

def _layer_kind(layer) -> str:
    return type(layer).__name__


def has_conv(model) -> bool:
    return any(_layer_kind(l) == "Conv2D" for l in model.layers)


def grad_cam(model, patch: np.ndarray, target=None, layer: str | None = None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) on the last conv layer: its feature maps weighted by
    the spatially averaged gradient of the class probability, ReLU'd, upsampled to 32x32.
    With 'valid' convolutions the last conv's map is 1x1 (nothing to localise): the last
    conv layer whose map is larger than that is used."""
    import keras
    import tensorflow as tf
    convs = [l for l in model.layers if _layer_kind(l) == "Conv2D"]
    if not convs:
        raise ConfigError("Grad-CAM needs a convolutional layer; this is a fully connected model "
                          "(use saliency or occlusion)")
    wide = [l for l in convs if min(int(d or 0) for d in tuple(l.output.shape)[1:3]) > 1]
    conv = model.get_layer(layer) if layer else (wide or convs)[-1]
    p = _check_patch(patch)
    t = _target(model, p, target)

    def compute():
        sub = _submodel(model, f"cam:{conv.name}",
                        lambda: keras.Model(model.inputs, [conv.output, model.outputs[0]]))
        with tf.GradientTape() as tape:
            a, out = sub(_x4(p[None]), training=False)
            score = out[:, t]
        g = np.asarray(tape.gradient(score, a))[0]
        a = np.asarray(a)[0]
        cam = np.maximum((a * g.mean(axis=(0, 1))[None, None, :]).sum(-1), 0)
        up = tf.image.resize(cam[None, :, :, None].astype(np.float32), (PATCH, PATCH), method="bilinear")
        return np.asarray(up)[0, :, :, 0].astype(np.float32)
    return _cached((model_key(model), patch_key(p), "cam", t, conv.name), compute)


def explain(model, patch: np.ndarray, method: str = "saliency", target=None) -> np.ndarray:
    """The one entry point of the CLI and the page: a 32x32 map for `method`
    ("saliency" = integrated gradients, "occlusion", "gradcam"), larger = more important."""
    if method == "saliency":
        return integrated_gradients(model, patch, target)
    if method == "occlusion":
        return occlusion(model, patch, target)
    if method == "gradcam":
        return grad_cam(model, patch, target)
    raise ConfigError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")


# ---- faithfulness: the deletion test -----------------------------------------------------

def deletion_curve(model, patch: np.ndarray, saliency: np.ndarray, fractions=(0.05, 0.1, 0.2),
                   target=None, fill: float = 0.0, rng: np.random.Generator | None = None,
                   random_draws: int = 0) -> dict:
    """Probability of the target class after setting the most important k pixels to `fill`
    (black, the saliency baseline), for each fraction; with random_draws > 0 also the mean
    over that many random sets of the same size. All variants in one batch."""
    p = _check_patch(patch)
    t = _target(model, p, target)
    order = np.argsort(-np.asarray(saliency, dtype=np.float64).ravel(), kind="stable")
    rng = rng or np.random.default_rng(0)
    batch, tags = [], []
    for f in fractions:
        k = max(1, int(round(f * p.size)))
        x = p.ravel().copy()
        x[order[:k]] = fill
        batch.append(x), tags.append(("top", f))
        for _ in range(random_draws):
            x = p.ravel().copy()
            x[rng.choice(p.size, size=k, replace=False)] = fill
            batch.append(x), tags.append(("random", f))
    probs = predict_patches(model, np.stack(batch).reshape(-1, PATCH, PATCH))[:, t]
    out = {"base": float(probabilities(model, p)[t]), "top": {}, "random": {}}
    for (kind, f), v in zip(tags, probs):
        out[kind].setdefault(f, []).append(float(v))
    out["top"] = {f: v[0] for f, v in out["top"].items()}
    out["random"] = {f: float(np.mean(v)) for f, v in out["random"].items()}
    return out


def deletion_test(model, patches: np.ndarray, method: str = "saliency", fraction: float = 0.1,
                  draws: int = 5, seed: int = 0) -> dict:
    """The faithfulness figure: over several patches, how much the predicted class's
    probability drops when the `fraction` most important pixels (by `method`) are set to
    black, vs the same number of random pixels (mean of `draws` random sets per patch)."""
    rng = np.random.default_rng(seed)
    top, rand = [], []
    for q in np.asarray(patches, dtype=np.float32).reshape(-1, PATCH, PATCH):
        s = explain(model, q, method)
        c = deletion_curve(model, q, s, fractions=(fraction,), rng=rng, random_draws=draws)
        top.append(c["base"] - c["top"][fraction])
        rand.append(c["base"] - c["random"][fraction])
    top, rand = np.asarray(top), np.asarray(rand)
    return {"method": method, "fraction": fraction, "patches": int(len(top)), "draws": draws,
            "drop_top": float(top.mean()), "drop_random": float(rand.mean()),
            "ratio": float(top.mean() / max(rand.mean(), 1e-6)),
            "share_top_beats_random": float(np.mean(top > rand))}


# ---- FC: first-layer weights --------------------------------------------------------------

@dataclass
class FCUnits:
    layer: str                  # the first Dense layer, e.g. "dense1"
    activation_layer: str | None
    activation: str             # relu, leaky_relu, elu, ... (what "dead" means depends on it)
    images: np.ndarray          # (units, 32, 32) incoming weights of each unit, as a picture
    order: np.ndarray           # unit indices, most influential first
    influence: np.ndarray       # (units,) see fc_units
    dead: np.ndarray            # (units,) bool: never fires on the probe batch
    dead_kind: str              # "dead" (ReLU: output 0, no gradient) or "never positive"
    mean_activation: np.ndarray = field(repr=False, default=None)

    @property
    def dead_share(self) -> float:
        return float(np.mean(self.dead))


def _dense_layers(model):
    return [l for l in model.layers if _layer_kind(l) == "Dense"]


def _activation_name(layer) -> str:
    kind = _layer_kind(layer)
    if kind == "LeakyReLU":
        return "leaky_relu"
    if kind == "ReLU":
        return "relu"
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", "linear")


def _first_activation_after(model, start) -> object | None:
    """The first layer after `start` that applies a non-linearity (the unit's output)."""
    layers = model.layers
    for l in layers[layers.index(start) + 1:]:
        kind = _layer_kind(l)
        if kind in ("Dense", "Conv2D", "Flatten", "MaxPooling2D"):
            return None
        if kind in ("Activation", "LeakyReLU", "ReLU", "ELU"):
            return l
    return None


def fc_units(model, probe: np.ndarray) -> FCUnits:
    """First-layer weights as 32x32 images, most influential unit first, dead ones marked.

    influence_j = mean |a_j| over the probe batch × ||W2[j, :]||: a unit moves the
    prediction only if it fires on real patches AND the next layer listens to it, so
    incoming-weight norm alone would rank dead units (large weights, zero output) first.
    Dead: ReLU output 0 on every probe patch; for LeakyReLU/ELU "never positive"
    (the training monitor's definitions, xray_core/training.py unit_share)."""
    dense = _dense_layers(model)
    if has_conv(model) or len(dense) < 2:
        raise ConfigError("first-layer weight images are for fully connected models")
    probe = np.asarray(probe, dtype=np.float32).reshape(-1, PATCH, PATCH)
    probe = probe[:fit_batch(model, max(1, len(probe)))]     # one pass: as many as fit BATCH_BYTES
    first, second = dense[0], dense[1]
    act_layer = _first_activation_after(model, first)
    act = _activation_name(act_layer) if act_layer is not None else _activation_name(first)
    key = (model_key(model), patch_key(probe), "fc_units")

    def compute():
        import keras
        out_layer = act_layer or first
        sub = _submodel(model, f"act:{out_layer.name}",
                        lambda: keras.Model(model.inputs, out_layer.output))
        a = np.asarray(sub(_x4(probe), training=False)).reshape(len(probe), -1)
        w1 = np.asarray(first.get_weights()[0])          # (1024, units)
        w2 = np.asarray(second.get_weights()[0])         # (units, next)
        influence = np.abs(a).mean(axis=0) * np.linalg.norm(w2, axis=1)
        if act == "relu":
            dead, kind = np.all(a <= 0, axis=0), "dead"
        else:
            dead, kind = np.all(a < 0, axis=0), "never positive"
        order = np.argsort(-influence, kind="stable")
        return FCUnits(first.name, act_layer.name if act_layer else None, act,
                       w1.T.reshape(-1, PATCH, PATCH).astype(np.float32), order,
                       influence.astype(np.float32), dead, kind, a.mean(axis=0))
    return _cached(key, compute)


def compare_fc(model_a, model_b, probe: np.ndarray, top: int = 20) -> dict:
    """Two FC runs side by side: dead shares and how alike their first-layer weight images are.

    Hidden units have no fixed order between runs, so each unit of A is matched to its most
    similar unit of B (|cosine| of the weight images; a unit and its negation detect the
    same pattern). `similarity_top` is that mean over A's `top` most influential units."""
    ua, ub = fc_units(model_a, probe), fc_units(model_b, probe)
    wa = ua.images.reshape(len(ua.images), -1)
    wb = ub.images.reshape(len(ub.images), -1)
    wa = wa / np.maximum(np.linalg.norm(wa, axis=1, keepdims=True), 1e-12)
    wb = wb / np.maximum(np.linalg.norm(wb, axis=1, keepdims=True), 1e-12)
    best = np.abs(wa @ wb.T).max(axis=1)
    return {
        "dead_share": [ua.dead_share, ub.dead_share],
        "dead_kind": [ua.dead_kind, ub.dead_kind],
        "activation": [ua.activation, ub.activation],
        "similarity_mean": float(best.mean()),
        "similarity_top": float(best[ua.order[:top]].mean()),
        "best_match": best,
    }


# ---- CNN: filters, feature maps, batch norm ----------------------------------------------

def conv_filters(model) -> np.ndarray:
    """The first conv layer's kernels as (filters, kh, kw) (single input channel)."""
    convs = [l for l in model.layers if _layer_kind(l) == "Conv2D"]
    if not convs:
        raise ConfigError("this model has no convolutional layer (it is fully connected)")
    k = np.asarray(convs[0].get_weights()[0])   # (kh, kw, in, out)
    return np.transpose(k.mean(axis=2), (2, 0, 1)).astype(np.float32)


@dataclass
class FeatureMaps:
    names: list[str]            # e.g. conv1 … conv5 (the layer whose output is shown)
    shown: list[str]            # the layer actually read: conv's activation output
    maps: list[np.ndarray]      # (H, W, C) per conv layer, for the patch
    hist: list[tuple[np.ndarray, np.ndarray]]   # (counts, edges) of every value of the layer
    zero_share: list[float]     # share of activations <= 0 (ReLU: switched off)


def _conv_outputs(model):
    """For every Conv2D: the layer whose output is its activated feature map."""
    out = []
    for conv in (l for l in model.layers if _layer_kind(l) == "Conv2D"):
        fn = getattr(conv.activation, "__name__", "linear")
        shown = conv if fn != "linear" else (_first_activation_after(model, conv) or conv)
        out.append((conv.name, shown))
    return out


def feature_maps(model, patch: np.ndarray) -> FeatureMaps:
    """Every conv layer's (activated) feature maps for one patch, in one forward pass."""
    import keras
    pairs = _conv_outputs(model)
    if not pairs:
        raise ConfigError("this model has no convolutional layer (it is fully connected)")
    p = _check_patch(patch)

    def compute():
        sub = _submodel(model, "fmaps", lambda: keras.Model(model.inputs, [s.output for _, s in pairs]))
        outs = sub(_x4(p[None]), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        maps = [np.asarray(o)[0].astype(np.float32) for o in outs]
        hist = [np.histogram(m.ravel(), bins=HIST_BINS) for m in maps]
        return FeatureMaps([n for n, _ in pairs], [s.name for _, s in pairs], maps, hist,
                           [float(np.mean(m <= 0)) for m in maps])
    return _cached((model_key(model), patch_key(p), "fmaps"), compute)


def rowwise_bn_layers(model) -> list[str]:
    """BatchNormalization layers normalising image rows (axis 1 of NHWC): the seed CNN's."""
    out = []
    for l in model.layers:
        if _layer_kind(l) == "BatchNormalization":
            axis = l.axis if isinstance(l.axis, (list, tuple)) else [l.axis]
            if list(axis) == [1]:
                out.append(l.name)
    return out


def batchnorm_rows(model, patches: np.ndarray, layer: str | None = None, index: int = 0) -> dict:
    """What the seed CNN's row-wise batch norm does to a feature map, next to channel-wise.

    Takes the tensor entering the BN layer for a batch of patches (`index` = the patch to
    show) and normalises it two ways with the batch's statistics, as batch norm does in
    training: per image ROW (mean/var over batch, width, channels: the seed CNN) and per
    CHANNEL (over batch, height, width: what BN is meant to do). Also the model's own output
    (its moving statistics, gamma, beta). Returns the maps of the most active channel and
    the per-row means (the vertical profile the row-wise version flattens) plus, per channel,
    the spread of channel means before/after (channels of different scale: row-wise keeps
    their imbalance, channel-wise equalises it)."""
    import keras
    names = rowwise_bn_layers(model)
    if not names:
        raise ConfigError("this model has no row-wise BatchNormalization(axis=1) (only the seed CNN has)")
    name = layer or names[0]
    bn = model.get_layer(name)
    x = np.stack([_check_patch(q) for q in np.asarray(patches).reshape(-1, PATCH, PATCH)])
    if not 0 <= index < len(x):
        raise ConfigError(f"index {index} out of range for {len(x)} patches")
    # one pass, as many patches as fit BATCH_BYTES; the float64 copies below take ~6x the float32 maps
    x = x[:max(index + 1, fit_batch(model, len(x)) // 6)]

    def compute():
        sub = _submodel(model, f"bn:{name}", lambda: keras.Model(model.inputs, [bn.input, bn.output]))
        a, out = sub(_x4(x), training=False)
        a, out = np.asarray(a, np.float64), np.asarray(out, np.float64)
        eps = 1e-3
        row = (a - a.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(a.var(axis=(0, 2, 3), keepdims=True) + eps)
        chan = (a - a.mean(axis=(0, 1, 2), keepdims=True)) / np.sqrt(a.var(axis=(0, 1, 2), keepdims=True) + eps)
        c = int(np.argmax(a[index].mean(axis=(0, 1))))
        return {
            "layer": name, "channel": c, "channels": int(a.shape[-1]), "rows": int(a.shape[1]),
            "before": a[index, :, :, c].astype(np.float32),
            "model": out[index, :, :, c].astype(np.float32),
            "rowwise": row[index, :, :, c].astype(np.float32),
            "channelwise": chan[index, :, :, c].astype(np.float32),
            "row_profile": {k: v[index].mean(axis=(1, 2)).astype(np.float32)
                            for k, v in (("before", a), ("model", out), ("rowwise", row), ("channelwise", chan))},
            "channel_mean_spread": {k: float(v.mean(axis=(0, 1, 2)).std())
                                    for k, v in (("before", a), ("rowwise", row), ("channelwise", chan))},
        }
    return _cached((model_key(model), patch_key(x), "bnrows", name, index), compute)
