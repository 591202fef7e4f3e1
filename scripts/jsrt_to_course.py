"""Convert the public JSRT radiographs + SCR organ masks into the course layout.

Sources (free for research and education; register and download them yourself,
they may not be redistributed with the app):
- JSRT digital image database (Japanese Society of Radiological Technology,
  Shiraishi et al., AJR 2000): 247 chest films, `JPCLN001.IMG` ... `JPCNN093.IMG`,
  each 2048x2048 pixels, 12-bit values stored as big-endian 16-bit words, no header.
  In the raw files a HIGH value is DARK (air); they are inverted here so that bone
  is bright, as on a film (`--no-invert` keeps them as stored).
- SCR "Segmentation in Chest Radiographs" masks (van Ginneken, Stegmann, Loog,
  MedIA 2006): one folder per organ ("left lung", "right lung", "heart",
  "left clavicle", "right clavicle") holding `<RADIOGRAPH>.gif` (any size; usually
  1024x1024, non-zero = organ). Masks may sit under fold1/fold2/...: the folder
  is searched recursively.

What it writes is exactly what ../shared/data/README.md describes:
- each radiograph resized to 256x256 (box filter), intensity windowed at the 2nd and
  99.5th percentiles, gamma 2, 8-bit (xray_core.data.images.to_film, window=True: the
  same recipe the app applies to raw films);
- a label map: 0 background, 1 clavicle, 2 lung, 3 heart (lung first, heart over
  lung, clavicle over lung), masks resized with nearest neighbour;
- 16 patches of 32x32 per class per radiograph, centred on pixels drawn uniformly
  from that class's region, centres at least 16 px from the border, label = class at
  the centre; named `<RADIOGRAPH>_<NNN>_<letter>.png` (b, c, l, h; NNN 000..063 in
  that class order, the course's naming: class letter at name[-5]);
- split by patient (one film per patient in JSRT): train 150, validation 30,
  test 37 films by default (in proportion when there are fewer), drawn with --seed;
- `jsrt_radiographs/<RADIOGRAPH>.png` + `<RADIOGRAPH>_labels.png` for the test films.

    python scripts/jsrt_to_course.py --images JSRT/ --masks SCR/ --out data/
    python -m xray_core train --data data/jsrt_patches --preset p1-task1
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from xray_core.data.images import to_film  # noqa: E402

SIDE = 2048                  # JSRT films are 2048 x 2048
FILM = 256
PATCH = 32
PER_CLASS = 16
LETTERS = "bclh"             # background, clavicle, lung, heart (class index order)
ORGANS = {"left lung": 2, "right lung": 2, "heart": 3, "left clavicle": 1, "right clavicle": 1}
PAINT_ORDER = (2, 3, 1)      # lung, then heart over lung, then clavicle over lung
SPLITS = (("train", 150), ("validation", 30), ("test", 37))


class ConvertError(Exception):
    pass


def read_img(path: str, invert: bool = True) -> np.ndarray:
    """A JSRT .IMG as float32 (2048, 2048) in [0, 1], bone bright unless invert=False."""
    raw = np.fromfile(path, dtype=">u2")
    if raw.size != SIDE * SIDE:
        raise ConvertError(f"{path}: {raw.size * 2} bytes, expected {SIDE * SIDE * 2} "
                           f"(2048x2048 big-endian 16-bit)")
    a = np.minimum(raw.reshape(SIDE, SIDE), 4095).astype(np.float32) / np.float32(4095.0)
    return 1.0 - a if invert else a


def find_masks(mask_root: str) -> dict[str, dict[str, str]]:
    """{radiograph name: {organ: mask path}} from folders named after the organs."""
    out: dict[str, dict[str, str]] = {}
    for dirpath, _, files in os.walk(mask_root):
        organ = os.path.basename(dirpath).lower()
        if organ not in ORGANS:
            continue
        for f in files:
            stem, ext = os.path.splitext(f)
            if ext.lower() in (".gif", ".png", ".bmp", ".tif", ".tiff"):
                out.setdefault(stem.upper(), {})[organ] = os.path.join(dirpath, f)
    return out


def label_map(masks: dict[str, str]) -> np.ndarray:
    """uint8 (256, 256): 0 background, 1 clavicle, 2 lung, 3 heart."""
    labels = np.zeros((FILM, FILM), np.uint8)
    for cls in PAINT_ORDER:
        for organ, path in masks.items():
            if ORGANS[organ] != cls:
                continue
            with Image.open(path) as im:
                m = np.asarray(im.convert("L").resize((FILM, FILM), Image.Resampling.NEAREST)) > 0
            labels[m] = cls
    return labels


def film_u8(img: np.ndarray) -> np.ndarray:
    """256x256 8-bit film: box-filter resize, 2nd..99.5th percentile window, gamma 2."""
    f = to_film(img, window=True, gamma=2.0)
    return np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)


def patches(film: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
    """(index, class, 32x32 patch) for 16 centres per class drawn uniformly from the class's
    region, at least 16 px from the border (so the patch fits without padding)."""
    half = PATCH // 2
    inner = np.zeros_like(labels, dtype=bool)
    inner[half:FILM - half + 1, half:FILM - half + 1] = True
    k = 0
    for cls in range(len(LETTERS)):
        ys, xs = np.nonzero((labels == cls) & inner)
        if len(ys) == 0:
            raise ConvertError(f"no pixel of class {LETTERS[cls]} at least {half} px from the border")
        pick = rng.choice(len(ys), size=PER_CLASS, replace=len(ys) < PER_CLASS)
        for i in pick:
            y, x = int(ys[i]), int(xs[i])
            yield k, cls, film[y - half:y + half, x - half:x + half]
            k += 1


def split_names(names: list[str], seed: int) -> dict[str, list[str]]:
    """Films to splits: 150/30/37 of 217 as in the course, in proportion for fewer films."""
    names = sorted(names)
    order = list(np.random.default_rng(seed).permutation(len(names)))
    total = sum(n for _, n in SPLITS)
    n = len(names)
    if n < len(SPLITS):
        raise ConvertError(f"need at least {len(SPLITS)} radiographs with masks, found {n}")
    n_val = max(1, round(n * SPLITS[1][1] / total)) if n < total else SPLITS[1][1]
    n_test = max(1, round(n * SPLITS[2][1] / total)) if n < total else SPLITS[2][1]
    n_train = min(n - n_val - n_test, SPLITS[0][1])
    picked = [names[i] for i in order]
    return {"train": sorted(picked[:n_train]),
            "validation": sorted(picked[n_train:n_train + n_val]),
            "test": sorted(picked[n_train + n_val:n_train + n_val + n_test])}


def convert(images: str, masks: str, out: str, seed: int = 0, invert: bool = True) -> dict:
    imgs = {}
    for dirpath, _, files in os.walk(images):
        for f in files:
            if f.upper().endswith(".IMG"):
                imgs[os.path.splitext(f)[0].upper()] = os.path.join(dirpath, f)
    found = find_masks(masks)
    usable = sorted(n for n in imgs if len(found.get(n, {})) == len(ORGANS))
    if not usable:
        raise ConvertError(f"no radiograph in {images} has all five SCR masks in {masks}")
    splits = split_names(usable, seed)
    rng = np.random.default_rng(seed)
    counts = {}
    for split, names in splits.items():
        d = os.path.join(out, "jsrt_patches", split)
        os.makedirs(d, exist_ok=True)
        for name in names:
            film = film_u8(read_img(imgs[name], invert))
            labels = label_map(found[name])
            for k, cls, p in patches(film, labels, rng):
                Image.fromarray(p).save(os.path.join(d, f"{name}_{k:03d}_{LETTERS[cls]}.png"))
            if split == "test":
                rd = os.path.join(out, "jsrt_radiographs")
                os.makedirs(rd, exist_ok=True)
                Image.fromarray(film).save(os.path.join(rd, f"{name}.png"))
                Image.fromarray(labels).save(os.path.join(rd, f"{name}_labels.png"))
        counts[split] = len(names)
    return {"radiographs": counts, "patches": {s: n * PER_CLASS * len(LETTERS) for s, n in counts.items()},
            "skipped_without_masks": sorted(set(imgs) - set(usable))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", required=True, help="folder with the JSRT .IMG files (searched recursively)")
    ap.add_argument("--masks", required=True, help="folder with the SCR masks (organ-named subfolders)")
    ap.add_argument("--out", required=True, help="writes OUT/jsrt_patches and OUT/jsrt_radiographs")
    ap.add_argument("--seed", type=int, default=0, help="split and patch-centre draws")
    ap.add_argument("--no-invert", action="store_true", help="keep JSRT's raw polarity (air bright)")
    a = ap.parse_args(argv)
    try:
        res = convert(a.images, a.masks, a.out, a.seed, invert=not a.no_invert)
    except (ConvertError, OSError) as e:
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        return 1
    print(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
