"""Test metrics from predicted probabilities: accuracy, loss, confusion, precision, recall."""
from __future__ import annotations

import numpy as np

from xray_core import CLASSES


def evaluate_predictions(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, cross-entropy loss, confusion matrix (rows = true class) and per-class P/R."""
    k = len(CLASSES)
    y_true = np.asarray(y_true, dtype=int)
    pred = probs.argmax(axis=1)
    conf = np.zeros((k, k), dtype=int)
    np.add.at(conf, (y_true, pred), 1)
    eps = 1e-7
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], eps, 1.0))))
    tp = np.diag(conf).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(conf.sum(0) > 0, tp / conf.sum(0), np.nan)
        recall = np.where(conf.sum(1) > 0, tp / conf.sum(1), np.nan)
    clean = lambda a: [None if np.isnan(v) else float(v) for v in a]  # noqa: E731  (JSON has no NaN)
    return {"accuracy": float((pred == y_true).mean()) if len(y_true) else float("nan"),
            "loss": loss, "confusion": conf.tolist(),
            "precision": dict(zip(CLASSES, clean(precision))),
            "recall": dict(zip(CLASSES, clean(recall))), "n": int(len(y_true))}
