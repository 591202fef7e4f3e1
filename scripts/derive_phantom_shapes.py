"""Derive the phantom's shape model (xray_core/data/phantom/shapes.npz) from real label maps.

    python scripts/derive_phantom_shapes.py [--data ../shared/data] [--modes 12]

A point-distribution model of the SCR study's kind, on signed distance maps instead of
landmarks: for each of the 150 *train* films (jsrt_films/train/*_labels.png) the signed
distance to the lung fields (lung + clavicle over it) and to the heart, truncated at
±32 px and shrunk to 64x64; their mean and the first `--modes` principal modes with
each mode's spread. Only those summaries are written (mean + 12 modes of 2x64x64,
float16); no film or label map leaves the data folder. The phantom draws a film's
lungs and heart as mean + sum(z_k * sd_k * mode_k), z_k ~ N(0, 1) clipped at ±2
(phantom/shapes.py).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np
from PIL import Image
from scipy import ndimage

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "xray_core", "data", "phantom", "shapes.npz")
SIDE, TRUNC = 64, 32.0


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Pixels to the outline: negative inside, positive outside, truncated at ±TRUNC."""
    d = ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)
    return np.clip(d, -TRUNC, TRUNC)


def shrink(a: np.ndarray) -> np.ndarray:
    k = a.shape[0] // SIDE
    return a.reshape(SIDE, k, SIDE, k).mean((1, 3))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data"))
    ap.add_argument("--modes", type=int, default=12)
    args = ap.parse_args()
    paths = sorted(glob.glob(os.path.join(args.data, "jsrt_films", "train", "*_labels.png")))
    if not paths:
        sys.exit(f"no *_labels.png under {args.data}/jsrt_films/train")
    rows = []
    for p in paths:
        lab = np.array(Image.open(p))
        lungs, heart = np.isin(lab, (1, 2)), lab == 3
        rows.append(np.concatenate([shrink(signed_distance(lungs)).ravel(),
                                    shrink(signed_distance(heart)).ravel()]))
    x = np.stack(rows)
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    sd = s / np.sqrt(len(x) - 1)
    k = args.modes
    share = float((s[:k] ** 2).sum() / (s ** 2).sum())
    np.savez_compressed(OUT, mean=mean.astype(np.float16), modes=vt[:k].astype(np.float16),
                        sd=sd[:k].astype(np.float32), side=SIDE, films=len(x))
    print(f"{len(x)} train label maps, {k} modes keep {share:.1%} of the variance -> {os.path.normpath(OUT)} "
          f"({os.path.getsize(OUT) / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
