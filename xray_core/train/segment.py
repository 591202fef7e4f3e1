"""What a segmentation run (arch segment) measures, beside its Keras loss and pixel accuracy.

- `predict_probs(model, films)`: per-pixel probabilities in small batches (whole films are big).
- `validation_logs(model, val, loss)`: one pass over the validation films each epoch:
  `val_loss` (the run's own loss, over the validation films as one batch), `val_accuracy`
  (pixel accuracy) and `val_dice_<class>` (each film's Dice, averaged over the films):
  history keys the live charts and the run store read like any other.
- `test_result(model, train, test)`: the test films' pixel accuracy (also as `accuracy`,
  so every view that reads a run's `test.accuracy` works), cross-entropy `loss`, pixel
  confusion and per-class precision/recall (as patch runs), per-class Dice, the time to map
  one film, and the prior's figures side by side: each pixel's most frequent label over the
  training films (maps/prior.py), the map any model must beat.
"""
from __future__ import annotations

import time

import numpy as np

from xray_core import CLASSES
from xray_core.maps.prior import build_prior, score_maps
from xray_core.train.metrics import evaluate_predictions

FILM_BATCH = 8          # films per prediction call: 8 x 256 x 256 x 4 probabilities = 8 MB
DICE_KEYS = tuple(f"val_dice_{c}" for c in CLASSES)
_EPS = 1e-7


def predict_probs(model, films: np.ndarray, batch: int = FILM_BATCH) -> np.ndarray:
    """float32 (N, H, W, C) probabilities of films (N, H, W, 1)."""
    out = None
    for i in range(0, len(films), batch):
        p = np.asarray(model(films[i:i + batch], training=False), np.float32)
        if out is None:
            out = np.empty((len(films),) + p.shape[1:], np.float32)
        out[i:i + batch] = p
    return out if out is not None else np.zeros((0,) + films.shape[1:3] + (len(CLASSES),), np.float32)


def crossentropy(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean per-pixel cross-entropy of integer maps y (N, H, W) under probs (N, H, W, C)."""
    picked = np.take_along_axis(probs, y[..., None].astype(np.int64), axis=-1)[..., 0]
    return float(-np.mean(np.log(np.clip(picked, _EPS, 1.0))))


def soft_dice_loss(y: np.ndarray, probs: np.ndarray, smooth: float = 1.0) -> float:
    """1 - mean over classes of the soft Dice over all pixels (segmentation_loss's 'dice')."""
    c = probs.shape[-1]
    yi = y.reshape(-1).astype(np.int64)
    picked = np.take_along_axis(probs.reshape(-1, c), yi[:, None], axis=1)[:, 0]
    inter = np.bincount(yi, weights=picked, minlength=c)[:c]          # sum of p_c where truth is c
    total = np.bincount(yi, minlength=c)[:c] + probs.reshape(-1, c).sum(0, dtype=np.float64)
    return float(1.0 - np.mean((2.0 * inter + smooth) / (total + smooth)))


def loss_value(kind: str, y: np.ndarray, probs: np.ndarray) -> float:
    if kind == "crossentropy":
        return crossentropy(y, probs)
    if kind == "dice":
        return soft_dice_loss(y, probs)
    return crossentropy(y, probs) + soft_dice_loss(y, probs)


def validation_logs(model, val, loss: str, preview=None) -> dict:
    """`preview(maps)`: given the validation films' predicted maps (N, H, W) uint8, e.g. to
    publish one of them (they are already computed here: no extra pass)."""
    probs = predict_probs(model, val.x)
    maps = probs.argmax(-1).astype(np.uint8)
    if preview is not None:
        preview(maps)
    scores = score_maps(maps, val.y)
    logs = {"val_loss": loss_value(loss, val.y, probs), "val_accuracy": scores["pixel_accuracy"]}
    for key, c in zip(DICE_KEYS, CLASSES):
        d = scores["dice"][c]
        logs[key] = float(d) if np.isfinite(d) else 0.0
    return logs


def _clean(d: dict) -> dict:
    return {k: (float(v) if np.isfinite(v) else None) for k, v in d.items()}


def test_result(model, train, test) -> dict:
    """The test films' scores next to the prior's (see the module doc)."""
    t = time.perf_counter()
    probs = predict_probs(model, test.x)
    seconds = time.perf_counter() - t
    maps = probs.argmax(-1).astype(np.uint8)
    res = evaluate_predictions(test.y.reshape(-1), probs.reshape(-1, probs.shape[-1]))
    scores = score_maps(maps, test.y)
    prior = build_prior(train.y)
    prior_maps = np.broadcast_to(prior.labels(test.y.shape[1:]), test.y.shape)
    prior_scores = score_maps(prior_maps, test.y)
    res.update({
        "pixel_accuracy": scores["pixel_accuracy"], "dice": _clean(scores["dice"]),
        "dice_pooled": _clean(scores["dice_pooled"]), "films": len(test), "pixels": res.pop("n"),
        "map_ms_per_film": 1000.0 * seconds / max(1, len(test)),
        "prior": {"pixel_accuracy": prior_scores["pixel_accuracy"], "dice": _clean(prior_scores["dice"]),
                  "training_films": len(train)},
    })
    res["n"] = len(test)
    return res
