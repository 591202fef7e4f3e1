"""The built-in procedural chest phantom: synthetic frontal chest films + label maps.

Why: the app must work (and teach) without the real JSRT films, which cannot be
redistributed. Each film is drawn in a "density" space (how much tissue the beam
crossed: soft tissue, air in the lungs, heart, bone; `anatomy.py`), turned
into film brightness here, blurred, made noisy, then windowed like the shared real
data (2nd/99.5th percentile stretch, 8-bit) with gamma 0.5 (`preprocess.window`:
v ** 0.5, which suits this exposure curve; the real films' README calls its own
recipe "gamma 2"). The lungs' and heart's outlines come from a shape model of
the real train label maps (`shapes.py`), the clavicles from numbers measured on them
(`stats.py`), so patches and films cut from the phantom
look, to a small network, enough like real ones to transfer
(scripts/phantom_to_real.py measures that).

Public API: render_radiograph, cut_patches, build_phantom, phantom_radiographs,
write_phantom. Everything is deterministic from a seed.
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import numpy as np
from scipy import ndimage

from xray_core import FILM, LETTERS, PATCH
from xray_core.data.dataset import SPLITS, Dataset, Split
from xray_core.data.preprocess import from_u8, to_u8
from xray_core.data.preprocess import window as _stretch
from xray_core.data.phantom.anatomy import density, label_map, sample_anatomy
from xray_core import settings
from xray_core.data.cache import cache_dir  # noqa: F401  (ph.cache_dir: films.py)

# Bump when the drawing (here or in anatomy.py) changes so stale caches are not reused.
GENERATOR_VERSION = 41      # 20-34, 36-40: drawings tried on 2026-12-04 and not kept
DEFAULT_SIZES = (150, 30, 37)          # train / validation / test radiographs
HALF = PATCH // 2


# ---------------------------------------------------------------------------------
# Film: exposure curve, blur, noise, then the same windowing as the real data.
# ---------------------------------------------------------------------------------
def _expose(d: np.ndarray, a: dict, rng: np.random.Generator) -> np.ndarray:
    # Film response: a power curve whose steepness varies with exposure and film.
    img = np.clip(d, 0, None) ** rng.uniform(1.2, 1.8)
    img = ndimage.gaussian_filter(img, rng.uniform(0.3, 0.8))  # focal spot / scatter blur
    # Quantum noise grows with the signal: none where the beam hit the film unattenuated.
    img += rng.normal(0, rng.uniform(0.006, 0.012), img.shape) * np.sqrt(np.clip(img, 0, None))
    if a["marker"]:   # lead ID marker: a dark rectangle in a top corner
        w, h = int(rng.uniform(0.08, 0.16) * FILM), int(rng.uniform(0.02, 0.05) * FILM)
        x = int(rng.uniform(0.02, 0.1) * FILM)
        x = x if rng.random() < 0.5 else FILM - x - w
        img[:h, x:x + w] = img.min()
    return img


FILM_GAMMA = 0.5   # v ** 0.5 (preprocess.window's convention): brightens mid-tones


def window(img: np.ndarray) -> np.ndarray:
    """2nd/99.5th percentile stretch, gamma 0.5, 8-bit: the phantom's film."""
    return to_u8(_stretch(img, FILM_GAMMA))


def render_radiograph(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic chest film and its label map, both uint8 256x256."""
    a = sample_anatomy(rng)
    labels, masks = label_map(a)
    d = density(a, masks, labels, rng)
    return _tone(window(_expose(d, a, rng)), rng), labels


# Each film its own gamma and contrast. Real films' greys vary far more from film to film than
# one exposure curve gives (jsrt_films/train, per film: lung median 0.31 sd 0.10, abdomen 0.88
# sd 0.06; phantom v35 sd 0.08 and 0.02, stats.TONE): a U-Net trained on the phantom then missed
# the real films' darker hearts. The draw's width was tuned on the real *validation* films.
TONE_GAMMA, TONE_CONTRAST = 0.5, 0.25     # gamma e^U(-0.5, 0.5), contrast x U(0.75, 1.25)


def _tone(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f = (film.astype(np.float32) / 255.0) ** np.exp(rng.uniform(-TONE_GAMMA, TONE_GAMMA))
    m = f.mean()
    return to_u8(np.clip((f - m) * rng.uniform(1 - TONE_CONTRAST, 1 + TONE_CONTRAST) + m, 0, 1))


# ---------------------------------------------------------------------------------
# Patches, exactly like the shared data was cut.
# ---------------------------------------------------------------------------------
def patch_centres(labels: np.ndarray, rng: np.random.Generator, per_class: int = 16) -> np.ndarray:
    """(N, 2) row/col centres: per class, `per_class` pixels drawn uniformly from the
    class's region with centres at least 16 px from the border (with replacement only
    when the region is smaller than that)."""
    inner = np.zeros_like(labels, bool)
    inner[HALF:FILM - HALF + 1, HALF:FILM - HALF + 1] = True
    out = []
    for c in range(len(LETTERS)):
        rr, cc = np.nonzero((labels == c) & inner)
        if len(rr) == 0:
            continue
        pick = rng.choice(len(rr), per_class, replace=len(rr) < per_class)
        out.append(np.stack([rr[pick], cc[pick]], 1))
    return np.concatenate(out) if out else np.zeros((0, 2), int)


def cut_patches(film: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                per_class: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """32x32 uint8 patches centred on class pixels; label = class at the centre pixel
    (patch[16, 16]). Ordered by class, like the shared data's file numbering."""
    rc = patch_centres(labels, rng, per_class)
    offs = np.arange(-HALF, HALF)
    rows = rc[:, 0, None, None] + offs[None, :, None]
    cols = rc[:, 1, None, None] + offs[None, None, :]
    return film[rows, cols], labels[rc[:, 0], rc[:, 1]].astype(np.int64)


# ---------------------------------------------------------------------------------
# Datasets: seeds, splits, cache, course-layout export.
# ---------------------------------------------------------------------------------
def _film_rng(seed: int, split: str, i: int, stream: int) -> np.random.Generator:
    """Film i of a split gets its own stream, so a split's films do not depend on the
    sizes of the other splits (phantom_radiographs can render test films alone)."""
    return np.random.default_rng([seed, SPLITS.index(split), i, stream])


def _split_films(split: str, n: int, seed: int, first_id: int):
    for i in range(n):
        film, labels = render_radiograph(_film_rng(seed, split, i, 0))
        yield f"PH{first_id + i:04d}", film, labels


def _split_sizes(n: int) -> tuple[int, int, int]:
    """Split n radiographs in proportion 150/30/37, each split >= 1 when n >= 3."""
    total = sum(DEFAULT_SIZES)
    val = max(round(n * DEFAULT_SIZES[1] / total), 1 if n >= 3 else 0)
    test = max(round(n * DEFAULT_SIZES[2] / total), 1 if n >= 2 else 0)
    return n - val - test, val, test


def _first_ids(sizes) -> list[int]:
    return [1 + sum(sizes[:k]) for k in range(len(SPLITS))]


def _build_split(split: str, n: int, seed: int, first_id: int) -> tuple:
    xs, ys, gs = [], [], []
    for i, (rid, film, labels) in enumerate(_split_films(split, n, seed, first_id)):
        x, y = cut_patches(film, labels, _film_rng(seed, split, i, 1))
        xs.append(x), ys.append(y), gs.append(np.full(len(y), rid))
    if not xs:
        return np.zeros((0, PATCH, PATCH), np.uint8), np.zeros(0, np.int64), np.zeros(0, "<U6")
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


_LOCK = threading.Lock()




def _cache_path(sizes, seed: int) -> Path:
    return cache_dir() / f"phantom_v{GENERATOR_VERSION}_s{seed}_{'_'.join(map(str, sizes))}.npz"


def _save_atomic(path: Path, arrays: dict) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)   # mkstemp makes it private; a cache can be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load(path: Path) -> dict | None:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):
        return None   # missing or unreadable: rebuild


def build_phantom(n_train: int = 150, n_val: int = 30, n_test: int = 37, seed: int = 0,
                  cache: bool = True) -> Dataset:
    """The phantom patch dataset: 64 patches per radiograph, split by radiograph,
    ids PH0001.. numbered train first. Cached on disk (XRAY_LAB_CACHE or
    ~/.cache/xray_lab) after the first build."""
    sizes = (int(n_train), int(n_val), int(n_test))
    path = _cache_path(sizes, seed)
    with _LOCK:
        arrays = _load(path) if cache else None
        if arrays is None:
            arrays = {}
            for split, n, first in zip(SPLITS, sizes, _first_ids(sizes)):
                x, y, g = _build_split(split, n, seed, first)
                arrays.update({f"{split}_x": x, f"{split}_y": y, f"{split}_g": g})
            if cache:
                _save_atomic(path, arrays)
    splits = {
        s: Split(from_u8(arrays[f"{s}_x"])[..., None],
                 arrays[f"{s}_y"].astype(np.int64), arrays[f"{s}_g"].astype(str))
        for s in SPLITS
    }
    return Dataset("phantom", splits)


def phantom_radiographs(n: int, seed: int, split: str = "test") -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first n films of a split as (id, film, labels): the same films (and ids)
    as build_phantom(seed=seed) with the default split sizes. Films and label maps
    are uint8 256×256 (film 0..255, labels 0..3)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    first = _first_ids(DEFAULT_SIZES)[SPLITS.index(split)]
    return list(_split_films(split, n, seed, first))


def write_phantom(out_dir, n_radiographs: int = 217, seed: int = 0) -> dict:
    """Write the course's folder layout: {train,validation,test}/PH0001_000_b.png
    plus radiographs/PH0001.png and PH0001_labels.png. Returns counts."""
    from PIL import Image

    out = Path(out_dir)
    sizes = _split_sizes(int(n_radiographs))
    counts: dict = {"radiographs": 0}
    (out / "radiographs").mkdir(parents=True, exist_ok=True)
    for split, n, first in zip(SPLITS, sizes, _first_ids(sizes)):
        (out / split).mkdir(parents=True, exist_ok=True)
        counts[split] = 0
        for i, (rid, film, labels) in enumerate(_split_films(split, n, seed, first)):
            Image.fromarray(film).save(out / "radiographs" / f"{rid}.png")
            Image.fromarray(labels).save(out / "radiographs" / f"{rid}_labels.png")
            x, y = cut_patches(film, labels, _film_rng(seed, split, i, 1))
            for j, (patch, c) in enumerate(zip(x, y)):
                Image.fromarray(patch).save(out / split / f"{rid}_{j:03d}_{LETTERS[c]}.png")
            counts[split] += len(y)
            counts["radiographs"] += 1
    return counts
