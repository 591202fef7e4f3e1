"""Whole films with their label maps: the data of a segmentation run (course Part 3).

A films dataset is what `../shared/data/jsrt_films` holds::

    train/JPCLN001.png            the film (any size, square; resized to 256x256)
    train/JPCLN001_labels.png     its label map, same size: pixel = class 0 background,
                                  1 clavicle, 2 lung, 3 heart
    validation/...  test/...

(`val/`, `valid/`, `training/`, `testing/` are accepted as split names; a lone top
folder, as in most zips, is stepped into.) Without `validation/` or `test/`, ~15 % of
train's films are set aside for each (by the seed); films directly in the top folder
are split ~70/15/15. A folder with only `test/` is fine for evaluating a model.

    load_films(source="phantom", seed=0) -> FilmDataset    "phantom", a folder or a .zip
    load_films_folder(path, seed=0) / load_films_zip(path, seed=0)
    phantom_films(n_train=150, n_val=30, n_test=37, seed=0) -> FilmDataset
    dataset_kind(path) -> "films" | "patches" | "unknown"  by file names (and one header)
    require_films(path) / require_patches(path)            refuse the other kind, one line

Every refusal is a one-line DataError naming the file: a film without its label map,
no label maps at all, a label map of another size than its film or with values outside
0..3 (a 0/255 mask, a coloured map), a patch dataset where films are expected (and,
through `require_patches`, films where patches are expected). Images are read through
`preprocess` (header first, pixel cap, the one bit-depth convention); zips through
`zipsafe.safe_extract`.

Arrays: `FilmSplit.x` float32 (N, 256, 256, 1) in [0, 1], `FilmSplit.y` uint8
(N, 256, 256) in 0..3, `FilmSplit.names` the films' names (no extension).
"""
from __future__ import annotations

import os
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from xray_core import CLASSES, FILM, LETTERS
from xray_core.data import zipsafe
from xray_core.data.dataset import SPLITS
from xray_core.data.folders import IMAGE_EXTS, ignored
from xray_core.data.preprocess import TooManyPixels, first_frame, from_u8, open_checked, to_pixels, to_u8
from xray_core.errors import ConfigError, DataError

__all__ = ["FilmSplit", "FilmDataset", "load_films", "load_films_folder", "load_films_zip",
           "phantom_films", "dataset_kind", "require_films", "require_patches", "LABELS_SUFFIX",
           "read_film", "read_label_map", "label_map_from_bytes"]

PathLike = Union[str, "os.PathLike[str]"]
LABELS_SUFFIX = "_labels"
N_CLASSES = len(CLASSES)
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15
PATCH_MAX_SIDE = 64            # an image this small (or smaller) is a patch, not a film
MAX_FILMS = 5000               # 5000 films of 256x256 float32 = 1.3 GB: enough for a class

_SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
                "valid": "validation", "test": "test", "testing": "test"}
_CLASS_DIRS = {n for c, l in zip(CLASSES, LETTERS) for n in (c, c + "s", l)}
_FILMS_LAYOUT = "expected train/ validation/ test/ with NAME.png and NAME_labels.png side by side"


@dataclass
class FilmSplit:
    x: np.ndarray          # float32 (N, 256, 256, 1) in [0, 1]
    y: np.ndarray          # uint8 (N, 256, 256), class index per pixel
    names: np.ndarray      # str (N,), the films' names without extension

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def class_counts(self) -> list[int]:
        """Pixels per class over the split."""
        return np.bincount(self.y.ravel(), minlength=N_CLASSES)[:N_CLASSES].astype(int).tolist()

    def take(self, n: int, seed: int = 0) -> "FilmSplit":
        """A deterministic subset of n films (a run's limit_train), chosen by the seed."""
        if n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return FilmSplit(self.x[idx], self.y[idx], self.names[idx])


@dataclass
class FilmDataset:
    name: str
    splits: dict[str, FilmSplit]
    warnings: list[str] = field(default_factory=list)
    kind: str = "films"

    def has(self, split: str) -> bool:
        return split in self.splits and len(self.splits[split]) > 0

    def split(self, name: str) -> FilmSplit:
        if not self.has(name):
            have = ", ".join(s for s in SPLITS if self.has(s)) or "none"
            raise DataError(f"{self.name}: has no '{name}' split (it has: {have})")
        return self.splits[name]

    def summary(self) -> dict:
        """Films per split and each class's share of the pixels, for the UI and the CLI."""
        out = {}
        for s in SPLITS:
            if s in self.splits:
                sp = self.splits[s]
                counts = np.array(sp.class_counts(), float)
                share = counts / max(1.0, counts.sum())
                out[s] = {"films": len(sp), "pixel_share": dict(zip(CLASSES, np.round(share, 4).tolist()))}
        return out


# ---------------------------------------------------------------------------------
# one file
# ---------------------------------------------------------------------------------
def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTS


def _is_label_name(name: str) -> bool:
    return _is_image(name) and os.path.splitext(name)[0].lower().endswith(LABELS_SUFFIX)


def _open(path: str, shown: str) -> Image.Image:
    try:
        return first_frame(open_checked(path))
    except TooManyPixels as e:
        raise DataError(f"{shown}: {e}") from None
    except UnidentifiedImageError:
        raise DataError(f"{shown}: not a readable image (unknown or damaged image format)") from None
    except Exception as e:   # truncated data, decoder errors
        why = str(e) or type(e).__name__
        why = (why.replace(path, shown) if isinstance(path, str) else why).splitlines()[0]
        raise DataError(f"{shown}: not a readable image ({why})") from None


def _resize_film(a: np.ndarray, side: int) -> np.ndarray:
    """uint8 square film -> side x side: BOX when shrinking (as the shared films were made),
    BILINEAR when enlarging."""
    if a.shape == (side, side):
        return a
    f = Image.Resampling.BOX if a.shape[0] > side else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(a).resize((side, side), f))


def read_film(path: str, shown: str, side: int | None = FILM) -> np.ndarray:
    """A film file -> uint8 (side, side) (as stored when side is None); square films only
    (its label map must match it)."""
    im = _open(path, shown)
    try:
        a = to_pixels(im)
    finally:
        im.close()
    if a.dtype != np.uint8:
        a = to_u8(a)
    h, w = a.shape
    if h != w:
        raise DataError(f"{shown}: film is {w}x{h}; films must be square (they are resized to {side}x{side})")
    if h <= PATCH_MAX_SIDE:
        raise DataError(f"{shown}: is {w}x{h}, a patch, not a whole film (films are e.g. 256x256)")
    return a if side is None else _resize_film(a, side)


def read_label_map(path: str, shown: str) -> np.ndarray:
    """A label map file -> uint8 (H, W), every value in 0..3 (DataError otherwise).

    Pixel values are class indices, read as stored: an 8-bit grey ('L') or palette ('P':
    the palette index) image, 16/32-bit integers, 1-bit, or RGB whose channels are equal."""
    im = _open(path, shown)
    try:
        mode = im.mode
        if mode in ("L", "P", "1") or mode.startswith("I"):
            a = np.asarray(im).astype(np.int64)
        elif mode in ("RGB", "RGBA", "LA"):
            rgb = np.asarray(im.convert("RGB")).astype(np.int64)
            if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                raise DataError(f"{shown}: a coloured label map; expected grey pixels whose value is the "
                                "class (0 background, 1 clavicle, 2 lung, 3 heart)")
            a = rgb[..., 0]
        else:
            raise DataError(f"{shown}: label map in image mode {mode}; expected 8-bit grey pixels "
                            "whose value is the class 0..3")
    finally:
        im.close()
    if a.ndim != 2:
        raise DataError(f"{shown}: label map is not a 2-D image (shape {a.shape})")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= N_CLASSES:
        bad = np.unique(a[(a < 0) | (a >= N_CLASSES)])
        shown_bad = ", ".join(map(str, bad[:4])) + (" ..." if len(bad) > 4 else "")
        hint = " (a 0/255 mask? save the class index, not white)" if hi == 255 else ""
        raise DataError(f"{shown}: label map has values outside 0..3 ({shown_bad}){hint}")
    return a.astype(np.uint8)


def label_map_from_bytes(data: bytes, name: str) -> np.ndarray:
    """An uploaded label map (NAME_labels.png, the Classify page) -> uint8 (H, W) in 0..3,
    with read_label_map's one-line refusals (not an image, coloured, values outside 0..3)."""
    import io
    if not data:
        raise DataError(f"{name}: empty file, not a label map")
    return read_label_map(io.BytesIO(data), name)


def _labels_to(y: np.ndarray, side: int) -> np.ndarray:
    if y.shape == (side, side):
        return y
    return np.asarray(Image.fromarray(y).resize((side, side), Image.Resampling.NEAREST))


# ---------------------------------------------------------------------------------
# what kind of dataset a folder or zip is (by names; one image header at most)
# ---------------------------------------------------------------------------------
def _descend(root: str) -> str:
    """Step into a lone sub-folder (a zip's top folder) up to three times."""
    for _ in range(3):
        entries = [e for e in os.scandir(root) if not ignored(e.name)]
        if len(entries) != 1 or not entries[0].is_dir():
            break
        low = entries[0].name.lower()
        if low in _SPLIT_NAMES or low in _CLASS_DIRS:
            break
        root = entries[0].path
    return root


def _kind_of_names(rels: list[str], small_image) -> str:
    """'films' | 'patches' | 'unknown' from relative file paths ('a/b/c.png'). One pass, one
    splitext per name: a course folder has ~14,000 names and this runs before every load."""
    images: list[tuple[list[str], str]] = []
    for r in rels:
        parts = r.split("/")
        if any(ignored(p) for p in parts):
            continue
        stem, ext = os.path.splitext(parts[-1])
        if ext.lower() not in IMAGE_EXTS:
            continue
        low = stem.lower()
        if low.endswith(LABELS_SUFFIX):      # a label map anywhere: whole films
            return "films"
        images.append((parts, low))
    if not images:
        return "unknown"
    if any(len(p) >= 2 and p[-2].lower() in _CLASS_DIRS for p, _ in images):
        return "patches"
    suffixes = {f"_{l}" for l in LETTERS}
    lettered = sum(1 for _, low in images if low[-2:] in suffixes)
    if lettered * 2 > len(images):
        return "patches"
    return "patches" if small_image(images[0][0]) else "unknown"


def dataset_kind(path: PathLike) -> str:
    """'films' (NAME_labels.png label maps beside films), 'patches' (the course's lettered
    patches or class folders) or 'unknown', for a folder or a .zip, without decoding images
    (one image's header at most). Callers refuse the kind they cannot use."""
    shown = os.fspath(path)
    if os.path.isdir(shown):
        root = _descend(shown)
        rels = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not ignored(d)]
            rel = os.path.relpath(dirpath, root)
            rels += [f if rel == "." else f"{rel}/{f}".replace(os.sep, "/") for f in filenames]

        def small(p):
            try:
                with open_checked(os.path.join(root, *p)) as im:
                    return max(im.size) <= PATCH_MAX_SIDE
            except Exception:
                return False
        return _kind_of_names(rels, small)
    if os.path.isfile(shown) and zipfile.is_zipfile(shown):
        with zipfile.ZipFile(shown) as zf:
            names = [i.filename.replace("\\", "/") for i in zf.infolist() if not i.is_dir()]
        return _kind_of_names(names, lambda p: False)
    return "unknown"


def require_films(path: PathLike) -> None:
    """DataError when `path` is a patch dataset (a segmentation run needs films)."""
    if dataset_kind(path) == "patches":
        raise DataError(f"{os.fspath(path)}: a patch dataset (32x32 patches, one label each), but a "
                        f"segmentation model needs whole films with label maps ({_FILMS_LAYOUT})")


def require_patches(path: PathLike) -> None:
    """DataError when `path` is a films dataset (a patch model needs patches)."""
    if dataset_kind(path) == "films":
        raise DataError(f"{os.fspath(path)}: whole films with label maps (NAME_labels.png), not patches; "
                        "train a segmentation model (arch segment) on it, or give a patch dataset")


# ---------------------------------------------------------------------------------
# a folder of films
# ---------------------------------------------------------------------------------
def _pairs(folder: str, shown: str, warnings: list[str]) -> list[tuple[str, str, str, str, str]]:
    """(name, film path, film shown, labels path, labels shown) for each film of a folder."""
    files = sorted(e for e in os.listdir(folder) if not ignored(e))
    images = [f for f in files if _is_image(f) and os.path.isfile(os.path.join(folder, f))]
    labels = {os.path.splitext(f)[0][:-len(LABELS_SUFFIX)].lower(): f for f in images if _is_label_name(f)}
    films = [f for f in images if not _is_label_name(f)]
    others = [f for f in files if f not in images and not os.path.isdir(os.path.join(folder, f))]
    if others:
        warnings.append(f"{shown}: skipped {len(others)} file(s) that are not images (e.g. {others[0]})")
    if films and not labels:
        raise DataError(f"{shown}: films but no label maps ({_FILMS_LAYOUT}; "
                        f"e.g. {os.path.splitext(films[0])[0]}{LABELS_SUFFIX}.png)")
    out, seen = [], set()
    for f in films:
        stem = os.path.splitext(f)[0]
        lab = labels.get(stem.lower())
        if lab is None:
            raise DataError(f"{shown}/{f}: film without its label map "
                            f"(expected {shown}/{stem}{LABELS_SUFFIX}.png beside it)")
        if stem.lower() in seen:
            raise DataError(f"{shown}/{f}: two films named {stem} (different extensions); keep one")
        seen.add(stem.lower())
        out.append((stem, os.path.join(folder, f), f"{shown}/{f}", os.path.join(folder, lab), f"{shown}/{lab}"))
    orphans = sorted(set(labels) - seen)
    if orphans:
        warnings.append(f"{shown}: {len(orphans)} label map(s) without a film, ignored "
                        f"(e.g. {labels[orphans[0]]})")
    return out


def _read_split(pairs, side: int) -> FilmSplit:
    n = len(pairs)
    x = np.empty((n, side, side, 1), np.float32)
    y = np.empty((n, side, side), np.uint8)
    for i, (_, fp, fs, lp, ls) in enumerate(pairs):
        film = read_film(fp, fs, side=None)          # as stored: its label map must match it
        lab = read_label_map(lp, ls)
        if lab.shape != film.shape:
            raise DataError(f"{ls}: label map is {lab.shape[1]}x{lab.shape[0]} but its film is "
                            f"{film.shape[1]}x{film.shape[0]}; they must be the same size")
        x[i, :, :, 0] = from_u8(_resize_film(film, side))
        y[i] = _labels_to(lab, side)
    return FilmSplit(x, y, np.array([p[0] for p in pairs], dtype=str))


def _take(sp: FilmSplit, idx: np.ndarray) -> FilmSplit:
    return FilmSplit(sp.x[idx], sp.y[idx], sp.names[idx])


def _carve(n: int, fractions: list[tuple[str, float]], seed: int) -> dict[str, np.ndarray]:
    """Whole films set aside by the seed for each (name, fraction); train keeps the rest
    (at least one film each when there are enough, always one left for train)."""
    order = np.random.default_rng(seed).permutation(n)
    out, at = {}, 0
    for k, (name, frac) in enumerate(fractions):
        take = max(1, int(round(frac * n))) if n - at > len(fractions) - k else 0
        take = min(take, max(0, n - at - (len(fractions) - k)))
        out[name] = np.sort(order[at:at + take])
        at += take
    out["train"] = np.sort(order[at:])
    return out


def _check_seed(seed) -> int:
    if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}")
    return int(seed)


def _load_tree(root: str, shown: str, name: str, seed: int, side: int) -> FilmDataset:
    kind = dataset_kind(root)
    if kind == "patches":
        raise DataError(f"{shown}: a patch dataset (32x32 patches, one label each), but a segmentation "
                        f"model needs whole films with label maps ({_FILMS_LAYOUT})")
    base = _descend(root)
    rel = os.path.relpath(base, root)
    shown_base = shown if rel == "." else f"{shown}/{rel}".replace(os.sep, "/")
    warnings: list[str] = []
    split_dirs: dict[str, str] = {}
    for e in sorted(os.listdir(base)):
        p = os.path.join(base, e)
        if ignored(e) or not os.path.isdir(p):
            continue
        s = _SPLIT_NAMES.get(e.lower())
        if s is None:
            warnings.append(f"{shown_base}/{e}/: not a split folder (train, validation, test), ignored")
        elif s in split_dirs:
            raise DataError(f"{shown_base}: both '{os.path.basename(split_dirs[s])}/' and '{e}/' look like "
                            f"the {s} split; keep only one")
        else:
            split_dirs[s] = p
    parts: dict[str, list] = {}
    if split_dirs:
        for s in SPLITS:
            if s in split_dirs:
                d = split_dirs[s]
                pairs = _pairs(d, f"{shown_base}/{os.path.basename(d)}", warnings)
                if pairs:
                    parts[s] = pairs
                else:
                    warnings.append(f"{shown_base}/{os.path.basename(d)}: no films, so no {s} split")
    else:
        pairs = _pairs(base, shown_base, warnings)
        if pairs:
            parts["all"] = pairs
    if not parts:
        raise DataError(f"{shown}: no films found ({_FILMS_LAYOUT})")
    total = sum(len(p) for p in parts.values())
    if total > MAX_FILMS:
        raise DataError(f"{shown}: {total} films, more than the {MAX_FILMS} a films dataset may hold")
    read = {s: _read_split(p, side) for s, p in parts.items()}
    splits: dict[str, FilmSplit] = {}
    if "all" in read:
        idx = _carve(len(read["all"]), [("validation", VAL_FRACTION), ("test", TEST_FRACTION)], seed)
        for s in SPLITS:
            if len(idx[s]):
                splits[s] = _take(read["all"], idx[s])
        warnings.append(f"no train/ validation/ test/ folders: split {total} film(s) ~70/15/15 (seed {seed})")
    else:
        splits.update(read)
        if "train" in read:
            missing = [s for s in ("validation", "test") if s not in read]
            if missing:
                frac = {"validation": VAL_FRACTION, "test": TEST_FRACTION}
                idx = _carve(len(read["train"]), [(s, frac[s]) for s in missing], seed)
                splits["train"] = _take(read["train"], idx["train"])
                for s in missing:
                    if len(idx[s]):
                        splits[s] = _take(read["train"], idx[s])
                        warnings.append(f"{s}: no {s}/ folder, so {len(idx[s])} train film(s) were set "
                                        f"aside as {s} (seed {seed})")
                    else:
                        warnings.append(f"{s}: no {s}/ folder, and train has too few films to set some aside")
        else:
            have = ", ".join(s for s in SPLITS if s in read)
            warnings.append(f"no train/ folder: this dataset only has {have} "
                            "(fine for evaluating a trained model, not for training)")
        present = [s for s in SPLITS if s in read]
        for i, a in enumerate(present):
            for b in present[i + 1:]:
                shared = np.intersect1d(read[a].names, read[b].names)
                if len(shared):
                    warnings.append(f"{a} and {b} share {len(shared)} film name(s) (e.g. {shared[0]}): "
                                    "scores on them may look better than they are")
    splits = {s: splits[s] for s in SPLITS if s in splits}
    for s, sp in splits.items():
        for c, cname in enumerate(CLASSES):
            if sp.class_counts()[c] == 0:
                warnings.append(f"{s}: no '{cname}' pixels in any label map")
    return FilmDataset(name, splits, warnings)


def load_films_folder(path: PathLike, seed: int = 0, side: int = FILM) -> FilmDataset:
    """A FilmDataset from a folder in the layout of the module docstring."""
    seed = _check_seed(seed)
    shown = os.fspath(path)
    if not os.path.exists(shown):
        raise DataError(f"{shown}: no such file or folder")
    if not os.path.isdir(shown):
        raise DataError(f"{shown}: not a folder")
    name = Path(os.path.abspath(shown)).name or shown
    try:
        return _load_tree(shown, shown.rstrip("/") or shown, name, seed, side)
    except PermissionError as e:
        raise DataError(f"{e.filename or shown}: permission denied") from None


def load_films_zip(path: PathLike, seed: int = 0, side: int = FILM) -> FilmDataset:
    """A FilmDataset from a .zip of the films layout, extracted with `zipsafe.safe_extract`
    (its limits read at call time) into a temporary folder removed afterwards."""
    seed = _check_seed(seed)
    shown = os.fspath(path)
    try:
        st = os.stat(shown)
    except FileNotFoundError:
        raise DataError(f"{shown}: no such file or folder") from None
    except OSError as e:
        raise DataError(f"{shown}: cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{shown}: is a folder, not a zip file")
    from xray_core.data.uploads import private_tmp     # under the home, not the shared /tmp
    with tempfile.TemporaryDirectory(prefix="xraylab-films-", dir=private_tmp()) as tmp:
        zipsafe.safe_extract(shown, tmp, max_members=zipsafe.MAX_MEMBERS,
                             max_total_bytes=zipsafe.MAX_TOTAL_BYTES, max_ratio=zipsafe.MAX_RATIO)
        return _load_tree(tmp, shown, Path(shown).stem or shown, seed, side)


def load_films(source: PathLike = "phantom", seed: int = 0) -> FilmDataset:
    """"phantom" (the built-in phantom's films), a films folder, or a .zip of one."""
    seed = _check_seed(seed)
    src = os.fspath(source)
    if src == "phantom":
        return phantom_films(seed=seed)
    if not src or not os.path.exists(src):
        raise DataError(f"{src}: no such file or folder")
    if os.path.isdir(src):
        return load_films_folder(src, seed)
    if src.lower().endswith(".zip"):
        return load_films_zip(src, seed)
    raise DataError(f"{src}: not a folder or a .zip file")


# ---------------------------------------------------------------------------------
# the built-in phantom's films
# ---------------------------------------------------------------------------------
def phantom_films(n_train: int = 150, n_val: int = 30, n_test: int = 37, seed: int = 0,
                  cache: bool = True) -> FilmDataset:
    """The phantom's films with their label maps, the same films (and ids, PH0001.. train
    first) whose patches `build_phantom` cuts with the same sizes and seed. Rendering the
    default 217 takes ~15 s; cached on disk (the phantom's cache folder) afterwards."""
    from xray_core.data.phantom import build as ph   # lazy: scipy and the drawing code

    seed = _check_seed(seed)
    sizes = tuple(int(v) for v in (n_train, n_val, n_test))
    if any(v < 0 for v in sizes) or sum(sizes) == 0 or sum(sizes) > MAX_FILMS:
        raise ConfigError(f"phantom film counts must be >= 0 with 1..{MAX_FILMS} in all, got {sizes}")
    path = ph.cache_dir() / (f"phantom_films_v{ph.GENERATOR_VERSION}_s{seed}_"
                             f"{'_'.join(map(str, sizes))}.npz")
    arrays = ph._load(path) if cache else None
    if arrays is None:
        arrays = {}
        for split, n, first in zip(SPLITS, sizes, ph._first_ids(sizes)):
            rows = list(ph._split_films(split, n, seed, first))
            arrays[f"{split}_x"] = (np.stack([r[1] for r in rows]) if rows
                                    else np.zeros((0, FILM, FILM), np.uint8))
            arrays[f"{split}_y"] = (np.stack([r[2] for r in rows]) if rows
                                    else np.zeros((0, FILM, FILM), np.uint8))
            arrays[f"{split}_n"] = np.array([r[0] for r in rows], dtype=str)
        if cache:
            ph._save_atomic(path, arrays)
    splits = {s: FilmSplit(from_u8(arrays[f"{s}_x"])[..., None], arrays[f"{s}_y"].astype(np.uint8),
                           arrays[f"{s}_n"].astype(str))
              for s in SPLITS if len(arrays[f"{s}_y"])}
    return FilmDataset("phantom", splits)
