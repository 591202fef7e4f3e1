"""Derive the numbers in xray_core/data/phantom/stats.py from the real JSRT data.

    python scripts/derive_phantom_stats.py [--data ../shared/data] [--write]

Prints the module text (or overwrites xray_core/data/phantom/stats.py with --write).
Only summary numbers leave the data folder; the images are never committed.

- Geometry (where lungs, heart and clavicles sit, how big they are) comes from the
  label maps of the 150 *train* films (jsrt_films/train/*_labels.png); only means
  and spreads over them are kept. (It once came from jsrt_radiographs/, the 37
  test films: the phantom must not be tuned on the films it is judged on.)
- Intensity and texture per class come from the *train* patches only (centre
  pixel value, patch contrast, edge energy, band-pass texture, flat share), so the
  test patches are not used to tune the phantom's look.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np
from PIL import Image
from scipy import ndimage

LETTERS = "bclh"
FILM = 256
HERE = os.path.dirname(os.path.abspath(__file__))


def load_label_maps(data: str) -> list[np.ndarray]:
    paths = sorted(glob.glob(os.path.join(data, "jsrt_films", "train", "*_labels.png")))
    if not paths:
        sys.exit(f"no *_labels.png under {data}/jsrt_films/train")
    return [np.array(Image.open(p)) for p in paths]


def two_lungs(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the image-left and image-right lung fields (lung + clavicle over it)."""
    comp, n = ndimage.label(np.isin(lab, (1, 2)))
    sizes = ndimage.sum(np.ones_like(comp), comp, range(1, n + 1))
    big = np.argsort(sizes)[::-1][:2] + 1
    masks = [comp == b for b in big]
    masks.sort(key=lambda m: np.nonzero(m)[1].mean())
    return masks[0], masks[1]


def bbox(mask: np.ndarray) -> list[float]:
    """x0, x1, y0, y1 as fractions of the film side."""
    ys, xs = np.nonzero(mask)
    return [xs.min() / FILM, (xs.max() + 1) / FILM, ys.min() / FILM, (ys.max() + 1) / FILM]


def lung_profile(mask: np.ndarray, y0: float, y1: float) -> list[list[float]]:
    """Lateral/medial edge x of a lung at 9 heights between apex and base (fractions)."""
    out = []
    for t in np.linspace(0.05, 0.95, 9):
        row = mask[int(round((y0 + t * (y1 - y0)) * FILM))]
        xs = np.nonzero(row)[0]
        out.append([xs.min() / FILM, (xs.max() + 1) / FILM] if len(xs) else [np.nan, np.nan])
    return out


def geometry(maps: list[np.ndarray]) -> dict:
    rows: dict[str, list] = {k: [] for k in (
        "lung_r", "lung_l", "heart", "clav_r", "clav_l", "prof_r", "prof_l", "area", "heart_c")}
    for lab in maps:
        right, left = two_lungs(lab)   # image-left lung is the patient's right
        rows["lung_r"].append(bbox(right))
        rows["lung_l"].append(bbox(left))
        rows["prof_r"].append(lung_profile(right, *bbox(right)[2:]))
        rows["prof_l"].append(lung_profile(left, *bbox(left)[2:]))
        heart = lab == 3
        rows["heart"].append(bbox(heart))
        ys, xs = np.nonzero(heart)
        rows["heart_c"].append([xs.mean() / FILM, ys.mean() / FILM])
        clav = lab == 1
        rows["clav_r"].append(bbox(clav & (np.arange(FILM)[None, :] < FILM // 2)))
        rows["clav_l"].append(bbox(clav & (np.arange(FILM)[None, :] >= FILM // 2)))
        rows["area"].append([float((lab == c).mean()) for c in range(4)])
    out = {}
    for k, v in rows.items():
        a = np.array(v, dtype=float)
        out[k] = (np.nanmean(a, 0).round(4).tolist(), np.nanstd(a, 0).round(4).tolist())
    return out


def load_train_patches(data: str) -> tuple[np.ndarray, np.ndarray]:
    paths = sorted(glob.glob(os.path.join(data, "jsrt_patches", "train", "*.png")))
    if not paths:
        sys.exit(f"no train patches under {data}/jsrt_patches/train")
    x = np.stack([np.array(Image.open(p)) for p in paths]).astype(np.float32) / 255
    y = np.array([LETTERS.index(os.path.basename(p)[-5]) for p in paths])
    return x, y


def intensity(x: np.ndarray, y: np.ndarray) -> dict:
    """Per class: centre value mean/std and deciles, patch std, mean |gradient|."""
    out = {}
    for c, letter in enumerate(LETTERS):
        p = x[y == c]
        centre = p[:, 15:17, 15:17].mean((1, 2))
        out[letter] = {
            "centre_mean": round(float(centre.mean()), 4),
            "centre_std": round(float(centre.std()), 4),
            "centre_deciles": np.percentile(centre, np.arange(10, 100, 10)).round(3).tolist(),
            "patch_std": round(float(p.std((1, 2)).mean()), 4),
            "grad_x": round(float(np.abs(np.diff(p, axis=2)).mean()), 4),
            "grad_y": round(float(np.abs(np.diff(p, axis=1)).mean()), 4),
        }
    return out


TONE_REGIONS = ("lung", "wall", "heart", "abdomen")


def film_tones(film: np.ndarray, labels: np.ndarray) -> list[float] | None:
    """One film's grey levels (film in [0, 1]): the medians of the lungs, the chest wall beside
    them, the heart's core and the abdomen just under the heart's base (TONE_REGIONS)."""
    lung = ndimage.binary_erosion(labels == 2, iterations=4)
    heart = labels == 3
    core = ndimage.binary_erosion(heart, iterations=4)
    if not lung.any() or not core.any():
        return None
    rows, cols = np.nonzero(heart.any(1))[0], np.nonzero(heart.any(0))[0]
    abdomen = np.zeros_like(heart)
    abdomen[rows.max() + 6:rows.max() + 20, cols.min():cols.max()] = True
    abdomen &= labels == 0
    lung_rows = np.nonzero((labels == 2).any(1))[0]
    wall = np.zeros_like(heart)
    wall[lung_rows.min():lung_rows.max(), 8:labels.shape[1] - 8] = True
    wall &= ~ndimage.binary_dilation(labels > 0, iterations=3)
    if abdomen.sum() < 20 or wall.sum() < 20:
        return None
    return [float(np.median(film[m])) for m in (lung, wall, core, abdomen)]


def tones(data: str) -> dict:
    """Per region, (mean, std) over the train films of film_tones: how much real films'
    greys vary from film to film."""
    paths = sorted(glob.glob(os.path.join(data, "jsrt_films", "train", "*_labels.png")))
    rows = []
    for p in paths:
        film = np.array(Image.open(p.replace("_labels.png", ".png")).convert("L"), np.float32) / 255
        t = film_tones(film, np.array(Image.open(p)))
        if t is not None:
            rows.append(t)
    t = np.array(rows)
    return {k: (round(float(t[:, i].mean()), 4), round(float(t[:, i].std()), 4)) for i, k in enumerate(TONE_REGIONS)}


def band_stats(x: np.ndarray) -> dict:
    """Texture of a stack of patches (N, 32, 32) in [0, 1], as medians over patches:
    std in three spatial bands -- fine (pixel minus 1-px blur: noise, sharp edges),
    mid (1-px minus 3-px blur: rib and vessel margins), coarse (the 3-px blur itself:
    organ borders, gradients) -- mean |gradient| of the 1-px blur along x and y
    (vertical vs horizontal edges), and the share of flat patches (std < 0.05).
    The phantom's tests compare its own patches against these numbers."""
    b1 = ndimage.gaussian_filter(x, (0, 1, 1))
    b3 = ndimage.gaussian_filter(x, (0, 3, 3))
    return {
        "fine": round(float(np.median((x - b1).std((1, 2)))), 4),
        "mid": round(float(np.median((b1 - b3).std((1, 2)))), 4),
        "coarse": round(float(np.median(b3.std((1, 2)))), 4),
        "grad_x": round(float(np.abs(np.diff(b1, axis=2)).mean()), 4),
        "grad_y": round(float(np.abs(np.diff(b1, axis=1)).mean()), 4),
        "flat_share": round(float((x.std((1, 2)) < 0.05).mean()), 3),
        "mean_deciles": np.percentile(x.mean((1, 2)), [10, 50, 90]).round(3).tolist(),
    }


def texture(x: np.ndarray, y: np.ndarray) -> dict:
    return {letter: band_stats(x[y == c]) for c, letter in enumerate(LETTERS)}


def module_text(geo: dict, inten: dict, n_maps: int, n_patches: int, tex: dict | None = None,
                tone: dict | None = None) -> str:
    lines = [
        '"""Numbers measured from the real JSRT data; the phantom is drawn to match them.',
        "",
        "Generated by scripts/derive_phantom_stats.py -- edit that, not this file.",
        f"GEOMETRY: from the label maps of the {n_maps} train films, as (mean, std)",
        "over films, in fractions of the film side; bboxes are (x0, x1, y0, y1); '_r' is",
        "the patient's right = the image's left. LUNG_PROFILE_*: (lateral x, medial x)",
        "edges at 9 heights from apex (5 %) to base (95 %) for the image-left lung, and",
        "(medial x, lateral x) for the image-right one. AREA: fraction of the film per",
        "class (b, c, l, h).",
        f"INTENSITY: from the {n_patches} train patches only, per class letter: value at",
        "the centre pixel, mean in-patch std, and mean |neighbour difference| (in [0, 1]).",
        "TEXTURE: from the same train patches, per class letter (medians over patches):",
        "std in a fine / mid / coarse spatial band, |gradient| of the 1-px blur along x",
        "and y, share of flat patches (std < 0.05), deciles 10/50/90 of the patch mean.",
        "See band_stats() in the derive script; tests hold the phantom to these.",
        f"TONE: from the {n_maps} train films, per region, (mean, std) over films of its median",
        "grey (film_tones() in the derive script): how much real films vary from film to film.",
        '"""',
        "",
    ]
    names = {"lung_r": "LUNG_R", "lung_l": "LUNG_L", "heart": "HEART", "heart_c": "HEART_CENTROID",
             "clav_r": "CLAV_R", "clav_l": "CLAV_L", "prof_r": "LUNG_PROFILE_R",
             "prof_l": "LUNG_PROFILE_L", "area": "AREA"}
    for k, name in names.items():
        mean, std = geo[k]
        lines.append(f"{name} = ({_fmt(mean)},\n    {_fmt(std)})")
    lines.append("")
    lines.append("INTENSITY = {")
    for letter, d in inten.items():
        lines.append(f"    {letter!r}: {d!r},")
    lines.append("}")
    if tex is not None:
        lines.append("")
        lines.append("TEXTURE = {")
        for letter, d in tex.items():
            lines.append(f"    {letter!r}: {d!r},")
        lines.append("}")
    if tone is not None:
        lines.append("")
        lines.append(f"TONE = {tone!r}")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return repr(v).replace("nan", "float('nan')")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data"))
    ap.add_argument("--write", action="store_true", help="overwrite xray_core/data/phantom/stats.py")
    args = ap.parse_args()
    maps = load_label_maps(args.data)
    x, y = load_train_patches(args.data)
    text = module_text(geometry(maps), intensity(x, y), len(maps), len(y), texture(x, y), tones(args.data))
    if args.write:
        path = os.path.join(HERE, "..", "xray_core", "data", "phantom", "stats.py")
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {os.path.normpath(path)}")
    else:
        print(text)


if __name__ == "__main__":
    main()
