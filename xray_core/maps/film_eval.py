"""Any model's anatomy maps of a films dataset's split, scored against the label maps, beside
the prior's (`evaluate --data FILMS --split test`): what the image adds over position alone.

    evaluate_films(model, source, split="test", seed=0, stride=4) -> dict

A segmentation model maps each film in one pass (inference.segment_map); a patch model
draws its anatomy map (inference.anatomy_map, dense where it can, at `stride`). The prior
is built from the dataset's training films (maps/prior.py); without a train split the
result says so instead of guessing.
"""
from __future__ import annotations

import time

import numpy as np

from xray_core import CLASSES
from xray_core.maps.inference import anatomy_map, is_segmentation_model
from xray_core.maps.prior import build_prior, score_maps


def _clean(d: dict) -> dict:
    return {k: (float(v) if np.isfinite(v) else None) for k, v in d.items()}


def evaluate_films(model, source: str = "phantom", split: str = "test", seed: int = 0, stride: int = 4) -> dict:
    from xray_core.data.films import load_films
    ds = load_films(source, seed=seed)
    films = ds.split(split)
    segment = is_segmentation_model(model)
    maps = np.empty(films.y.shape, np.uint8)
    loss, seconds, method = 0.0, 0.0, None
    for i in range(len(films)):
        t = time.perf_counter()
        amap = anatomy_map(model, films.x[i, :, :, 0], stride=stride)
        seconds += time.perf_counter() - t
        method = amap.method
        maps[i] = amap.labels
        picked = np.take_along_axis(amap.probs, films.y[i][..., None].astype(np.int64), axis=-1)
        loss += float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    scores = score_maps(maps, films.y)
    res = {
        "kind": "films", "segmentation_model": segment, "method": method,
        "accuracy": scores["pixel_accuracy"], "pixel_accuracy": scores["pixel_accuracy"],
        "loss": loss / max(1, len(films)),
        "dice": _clean(scores["dice"]), "dice_pooled": _clean(scores["dice_pooled"]),
        "n": len(films), "films": len(films), "map_ms_per_film": 1000.0 * seconds / max(1, len(films)),
        "classes": list(CLASSES), "split": split,
    }
    if ds.has("train") and split != "train":
        train = ds.split("train")
        prior = build_prior(train.y)
        pmaps = np.broadcast_to(prior.labels(films.y.shape[1:]), films.y.shape)
        ps = score_maps(pmaps, films.y)
        res["prior"] = {"pixel_accuracy": ps["pixel_accuracy"], "dice": _clean(ps["dice"]),
                        "training_films": len(train)}
    else:
        res["prior"] = None
        res["prior_note"] = (f"no prior: the dataset has no training films apart from the '{split}' split "
                             "(the prior is each pixel's most frequent label over the training films)")
    res["warnings"] = list(ds.warnings)
    return res
