"""Any model's anatomy maps of a films dataset's split, scored against the label maps, beside
the prior's (`evaluate --data FILMS --split test`): what the image adds over position alone.

    evaluate_films(model, source, split="test", seed=0, stride=4) -> dict

A patch model's maps are also scored with "use position" (`position`: the model's
probabilities times the prior's, over the class share; maps/prior.use_position).

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
from xray_core.maps.prior import build_prior, score_maps, use_position


def _clean(d: dict) -> dict:
    return {k: (float(v) if np.isfinite(v) else None) for k, v in d.items()}


def evaluate_films(model, source: str = "phantom", split: str = "test", seed: int = 0, stride: int = 4) -> dict:
    from xray_core.data.films import load_films
    ds = load_films(source, seed=seed)
    films = ds.split(split)
    segment = is_segmentation_model(model)
    has_prior = ds.has("train") and split != "train"
    prior = build_prior(ds.split("train").y) if has_prior else None
    maps = np.empty(films.y.shape, np.uint8)
    # a patch model's map with "use position" (model x prior / class share): what context adds
    pos_maps = np.empty(films.y.shape, np.uint8) if prior is not None and not segment else None
    loss, seconds, method = 0.0, 0.0, None
    for i in range(len(films)):
        t = time.perf_counter()
        amap = anatomy_map(model, films.x[i, :, :, 0], stride=stride)
        seconds += time.perf_counter() - t
        method = amap.method
        maps[i] = amap.labels
        if pos_maps is not None:
            pos_maps[i] = use_position(amap.probs, prior).argmax(-1)
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
    if prior is not None:
        train = ds.split("train")
        pmaps = np.broadcast_to(prior.labels(films.y.shape[1:]), films.y.shape)
        ps = score_maps(pmaps, films.y)
        res["prior"] = {"pixel_accuracy": ps["pixel_accuracy"], "dice": _clean(ps["dice"]),
                        "training_films": len(train)}
        if pos_maps is not None:
            qs = score_maps(pos_maps, films.y)
            res["position"] = {"pixel_accuracy": qs["pixel_accuracy"], "dice": _clean(qs["dice"])}
    else:
        res["prior"] = None
        res["prior_note"] = (f"no prior: the dataset has no training films apart from the '{split}' split "
                             "(the prior is each pixel's most frequent label over the training films)")
    res["warnings"] = list(ds.warnings)
    return res
