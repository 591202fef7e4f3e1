"""How good are a model's anatomy maps on real films? Prints one JSON object.

    python scripts/measure_maps.py --model run.keras [--films DIR] [--stride 4]
        [--window] [--limit N]

--films holds NAME.png + NAME_labels.png pairs (default ../shared/data/jsrt_radiographs
next to the repo: the 37 JSRT test films, 256x256, label value = class index).
Reports the mean over films of pixel accuracy, the mean Dice per class (over the
films where the class occurs in either map), and milliseconds per film for
`anatomy_map` (the first film, which warms the model up, is excluded from timing
when there is more than one).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from xray_core.maps.inference import DEFAULT_SMOOTH  # noqa: E402  (after the sys.path line)

DEFAULT_FILMS = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "jsrt_radiographs"))


def pairs(films_dir: str) -> list[tuple[str, str]]:
    out = []
    for lab in sorted(glob.glob(os.path.join(films_dir, "*_labels.png"))):
        img = lab[: -len("_labels.png")] + ".png"
        if os.path.exists(img):
            out.append((img, lab))
    return out


def measure(model, films_dir: str, stride: int = 4, window: bool = False, smooth: float = DEFAULT_SMOOTH,
            limit: int | None = None) -> dict:
    import numpy as np
    from PIL import Image

    from xray_core import CLASSES
    from xray_core.errors import DataError
    from xray_core.data.images import read_image
    from xray_core.maps.inference import anatomy_map, evaluate_map

    todo = pairs(films_dir)[:limit] if limit else pairs(films_dir)
    if not todo:
        raise DataError(f"{films_dir}: no NAME.png + NAME_labels.png pairs found")
    accs, dice, times = [], {c: [] for c in CLASSES}, []
    for img_path, lab_path in todo:
        with open(img_path, "rb") as f:
            film = read_image(f.read(), os.path.basename(img_path))
        true = np.asarray(Image.open(lab_path))
        t0 = time.perf_counter()
        amap = anatomy_map(model, film, stride=stride, window=window, smooth=smooth)
        times.append(time.perf_counter() - t0)
        ev = evaluate_map(amap.labels, true)
        accs.append(ev["pixel_accuracy"])
        for c, d in ev["dice"].items():
            dice[c].append(d)
    timed = times[1:] if len(times) > 1 else times
    return {
        "films": len(todo),
        "stride": stride,
        "window": window,
        "smooth": smooth,
        "pixel_accuracy": round(float(np.mean(accs)), 4),
        "dice": {c: round(float(np.mean(v)), 4) for c, v in dice.items() if v},
        "mean_dice": round(float(np.mean([np.mean(v) for v in dice.values() if v])), 4),
        "ms_per_film": round(1000 * float(np.mean(timed)), 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Anatomy-map quality and speed on labelled films.")
    p.add_argument("--model", required=True, help="a saved .keras model")
    p.add_argument("--films", default=DEFAULT_FILMS, help="NAME.png + NAME_labels.png folder")
    p.add_argument("--stride", type=int, default=4)
    p.add_argument("--smooth", type=float, default=DEFAULT_SMOOTH,
                   help="Gaussian smoothing of the class probabilities, in film pixels (0 = off)")
    p.add_argument("--window", action="store_true",
                   help="re-apply the training window (percentiles + gamma) to each film")
    p.add_argument("--limit", type=int, help="only the first N films")
    a = p.parse_args(argv)

    from xray_core.errors import XrayLabError
    from xray_core.maps.inference import load_model
    try:
        model = load_model(a.model)
        print(json.dumps(measure(model, a.films, a.stride, a.window, a.smooth, a.limit), indent=2))
    except XrayLabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
