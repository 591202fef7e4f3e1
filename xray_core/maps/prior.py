"""The prior map, the scores of a map, and "use position": what the image adds.

The prior is the map that never looks at the film: for every pixel, how often each
label was there over a set of training label maps. Its most frequent label per pixel
(`Prior.labels`) already scores 0.87 pixel accuracy on the held-out real films
(jsrt_films/test, built from jsrt_films/train), more than a patch CNN's map: a 32x32
patch has no idea where on the film it is. Any map must beat it.

    build_prior(label_maps, smoothing=0.5) -> Prior        per-pixel label frequencies
    Prior.probabilities(size) / Prior.labels(size)        resized to any film size
    pixel_accuracy(pred, truth), dice(pred, truth)        one map against its label map
    confusion(preds, truths) -> (C, C) counts; score_maps(preds, truths) -> dict
    use_position(probs, prior, class_share=None)           model x prior / class share

"Use position" (Bayes, assuming what a patch looks like and where it sits are
independent given its class): p(c | patch, where) ∝ p(c | patch) · p(c | where) / p(c),
with p(c) the class frequency the model was trained with. The course's patch datasets
hold as many patches of each class (16 per class per film), so their p(c) is uniform:
the default. Pass the training set's class shares when they are not equal.

Pure numpy: a prior of 150 label maps is built in well under a second, and scores
of 37 maps come from one bincount.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xray_core import CLASSES

__all__ = ["Prior", "build_prior", "resize_planes", "pixel_accuracy", "dice", "confusion",
           "score_maps", "use_position"]

N_CLASSES = len(CLASSES)


def _maps(a, what: str) -> np.ndarray:
    """(N, H, W) integer label maps (a single (H, W) map becomes N = 1)."""
    a = np.asarray(a)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] == 0 or min(a.shape[1:]) < 1:
        raise ValueError(f"{what}: expected label maps (N, H, W), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what}: label maps must hold integer class indices, got {a.dtype}")
    return a


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights whose rows sum to 1: area averaging when shrinking, linear
    interpolation between pixel centres (edges held) when enlarging."""
    if n_in == n_out:
        return np.eye(n_in)
    m = np.zeros((n_out, n_in))
    if n_out < n_in:                                   # each output pixel covers [lo, hi) input
        edges = np.arange(n_out + 1) * (n_in / n_out)
        for i in range(n_out):
            lo, hi = edges[i], edges[i + 1]
            for j in range(int(np.floor(lo)), min(n_in, int(np.ceil(hi)))):
                m[i, j] = min(hi, j + 1) - max(lo, j)
    else:
        centres = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        centres = np.clip(centres, 0, n_in - 1)
        lo = np.floor(centres).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = centres - lo
        m[np.arange(n_out), lo] += 1 - frac
        m[np.arange(n_out), hi] += frac
    return m / m.sum(1, keepdims=True)


def resize_planes(planes: np.ndarray, size) -> np.ndarray:
    """(H, W, C) float planes -> (h, w, C) by `_resize_matrix` along each axis: a map of
    frequencies stays one (each pixel's values still sum to the same)."""
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    planes = np.asarray(planes, np.float64)
    if planes.shape[:2] == (h, w):
        return planes.copy()
    r, c = _resize_matrix(planes.shape[0], int(h)), _resize_matrix(planes.shape[1], int(w))
    return np.einsum("ih,hwc,jw->ijc", r, planes, c, optimize=True)


@dataclass(frozen=True)
class Prior:
    """Per-pixel label frequencies over `n_maps` training label maps."""
    freq: np.ndarray          # float32 (H, W, C), each pixel sums to 1
    class_share: np.ndarray   # float64 (C,): each class's share of all training pixels
    n_maps: int

    @property
    def size(self) -> tuple[int, int]:
        return int(self.freq.shape[0]), int(self.freq.shape[1])

    def probabilities(self, size=None) -> np.ndarray:
        """float32 (h, w, C): the frequencies at another film size (default: as built)."""
        if size is None:
            return self.freq
        return resize_planes(self.freq, size).astype(np.float32)

    def labels(self, size=None) -> np.ndarray:
        """uint8 (h, w): each pixel's most frequent label, the prior map."""
        return np.argmax(self.probabilities(size), axis=-1).astype(np.uint8)


def build_prior(label_maps, smoothing: float = 0.5, n_classes: int = N_CLASSES) -> Prior:
    """The prior from training label maps (N, H, W) of one size. `smoothing` adds that
    many pseudo-counts of every class at every pixel (so no class is ever impossible,
    which matters for `use_position`; 0 for raw frequencies)."""
    maps = _maps(label_maps, "build_prior")
    if maps.min() < 0 or maps.max() >= n_classes:
        raise ValueError(f"build_prior: label values must be 0..{n_classes - 1}, "
                         f"found {int(maps.min())}..{int(maps.max())}")
    if smoothing < 0:
        raise ValueError(f"build_prior: smoothing must be >= 0, got {smoothing}")
    n, h, w = maps.shape
    counts = np.stack([(maps == c).sum(0) for c in range(n_classes)], axis=-1).astype(np.float64)
    freq = (counts + smoothing) / (n + n_classes * smoothing)
    share = counts.reshape(-1, n_classes).sum(0)
    return Prior(freq.astype(np.float32), share / share.sum(), int(n))


# ---- scores -----------------------------------------------------------------------------
def confusion(preds, truths, n_classes: int = N_CLASSES) -> np.ndarray:
    """(N, C, C) pixel counts per map: [k, true class, predicted class]."""
    p, t = _maps(preds, "confusion"), _maps(truths, "confusion")
    if p.shape != t.shape:
        raise ValueError(f"confusion: maps of shape {p.shape} against label maps of shape {t.shape}")
    n = p.shape[0]
    idx = (np.arange(n)[:, None] * n_classes * n_classes
           + t.reshape(n, -1).astype(np.int64) * n_classes + p.reshape(n, -1).astype(np.int64))
    if idx.size and (min(p.min(), t.min()) < 0 or max(p.max(), t.max()) >= n_classes):
        raise ValueError(f"confusion: label values must be 0..{n_classes - 1}")
    return np.bincount(idx.ravel(), minlength=n * n_classes * n_classes).reshape(n, n_classes, n_classes)


def pixel_accuracy(pred, truth) -> float:
    """Share of pixels whose label is right (over all maps given)."""
    p, t = _maps(pred, "pixel_accuracy"), _maps(truth, "pixel_accuracy")
    if p.shape != t.shape:
        raise ValueError(f"pixel_accuracy: maps of shape {p.shape} against label maps of shape {t.shape}")
    return float(np.mean(p == t))


def _dice_from(conf: np.ndarray) -> np.ndarray:
    """(N, C) Dice per map and class from (N, C, C) confusions; NaN where the class is
    in neither the map nor its label map (nothing to overlap)."""
    inter = np.diagonal(conf, axis1=1, axis2=2).astype(np.float64)
    total = conf.sum(2) + conf.sum(1)                  # |truth c| + |pred c|
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * inter / total, np.nan)


def dice(pred, truth, n_classes: int = N_CLASSES) -> np.ndarray:
    """(C,) Dice 2|A∩B| / (|A| + |B|) of each class for one map against its label map
    (NaN for a class in neither). Given several maps: the mean over the maps."""
    return _nanmean(_dice_from(confusion(pred, truth, n_classes)))


def _nanmean(d: np.ndarray) -> np.ndarray:
    """Mean over axis 0 leaving NaNs out; NaN (no warning) where a column is all NaN."""
    ok = ~np.isnan(d)
    n = ok.sum(0)
    return np.where(n > 0, np.where(ok, d, 0).sum(0) / np.maximum(n, 1), np.nan)


def score_maps(preds, truths, n_classes: int = N_CLASSES) -> dict:
    """Scores of maps against their label maps: {"pixel_accuracy": over all pixels,
    "dice": {class: mean over the maps of each map's Dice (maps where the class is in
    neither are left out)}, "dice_pooled": {class: Dice of all pixels together},
    "maps": N}."""
    conf = confusion(preds, truths, n_classes)
    total = conf.sum()
    per = _dice_from(conf)
    pooled = _dice_from(conf.sum(0, keepdims=True))[0]
    mean = _nanmean(per)
    names = CLASSES if n_classes == N_CLASSES else tuple(str(c) for c in range(n_classes))
    return {
        "pixel_accuracy": float(np.trace(conf.sum(0)) / total) if total else float("nan"),
        "dice": {c: float(v) for c, v in zip(names, mean)},
        "dice_pooled": {c: float(v) for c, v in zip(names, pooled)},
        "maps": int(conf.shape[0]),
    }


# ---- use position -----------------------------------------------------------------------
def use_position(probs, prior: Prior, class_share=None) -> np.ndarray:
    """A patch model's per-pixel probabilities (H, W, C) (or (N, H, W, C)) combined with
    the prior at the same size: probs x prior / class_share, normalised per pixel.
    class_share: the class frequencies the model was trained with (default uniform, as the
    course's balanced patches). Returns float32 of probs' shape; argmax(-1) is the map."""
    p = np.asarray(probs, np.float64)
    if p.ndim not in (3, 4) or p.shape[-1] != prior.freq.shape[-1]:
        raise ValueError(f"use_position: expected probabilities (H, W, {prior.freq.shape[-1]}), "
                         f"got shape {p.shape}")
    q = prior.probabilities(p.shape[-3:-1]).astype(np.float64)
    c = p.shape[-1]
    share = np.full(c, 1.0 / c) if class_share is None else np.asarray(class_share, np.float64)
    if share.shape != (c,) or not np.all(share > 0):
        raise ValueError(f"use_position: class_share must be {c} numbers > 0, got {class_share!r}")
    post = p * q / share
    s = post.sum(-1, keepdims=True)
    post = np.where(s > 0, post / np.where(s > 0, s, 1), q)   # a pixel the model ruled out entirely: prior
    return post.astype(np.float32)
