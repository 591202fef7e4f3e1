"""Data sources: the phantom, a folder of patches, or a .zip of one.

Public API (the app, the CLI and the benchmarks code against exactly this):

    load_dataset(source="phantom", seed=0) -> Dataset
    load_folder(path, seed=0) -> Dataset
    load_zip(path, seed=0) -> Dataset
    safe_extract(zip_path, dest_dir, max_members=..., max_total_bytes=..., max_ratio=...)
    to_patch(img) -> float32 (32, 32) array in [0, 1]
    clear_cache()

Where the parts live: the folder layouts understood and the scanning are in
`folders.py`, safe zip extraction in `zipsafe.py`, the image -> model input
convention (bit depth, scaling) in `preprocess.py`. This module decodes, caches
and splits.

Every image is opened header first: one claiming more than
`preprocess.MAX_PIXELS` pixels (a decompression bomb) is refused before any pixel
is decoded, with a one-line message naming the file inside the dataset.

Which splits you get (the split rule)
-------------------------------------
The radiograph id of a file is its name up to the first ``_`` (the whole name
when there is no ``_``). Every split made here moves whole radiographs, so one
film's patches never land in two splits.

* No split folders at all (layouts 2 and 3 in `folders.py`): the radiograph ids are shuffled with
  ``numpy.random.default_rng(seed)`` and split ~70/15/15 (train/validation/test)
  by patch count.
* Split folders present: they are used as they are. When ``train/`` is present
  and ``validation/`` and/or ``test/`` is missing, each missing split is carved
  from train: ~15% of train's patches (whole radiographs, chosen by the seed), so
  train alone becomes ~70/15/15. Train is never invented from validation or test:
  a folder with only ``test/`` gives a Dataset with only the test split (useful
  for evaluating a trained model) plus a warning.
* Every made split is listed in ``Dataset.warnings``, as is any class a split
  lacks (``"train: no 'heart' patches"``) and radiograph ids shared between
  given split folders.

The same folder loaded twice is cheap: decoded patches are cached (thread-safe,
a few datasets) under the folder's absolute path plus a signature of every
file's name, size and mtime; a zip is cached under its path, size and mtime.
A folder's decoded pixels are also kept on disk under the same key (cache.py), so
the next process (a CLI run, a restarted server) reads them back instead of decoding.
Changing the seed only redoes the (cheap) split. The arrays handed out are
shared with the cache and therefore read-only; copy before modifying in place.
"""
from __future__ import annotations

import os
import stat
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from xray_core import CLASSES, PATCH

from xray_core.data import zipsafe
from xray_core.data.cache import load_decoded, save_decoded
from xray_core.data.dataset import SPLITS, Dataset, Split
from xray_core.errors import ConfigError, DataError
from xray_core.data.folders import IMAGE_EXTS, Entry, Plan, scan
from xray_core.data.preprocess import TooManyPixels, first_frame, open_checked, to_model_input, to_pixels
from xray_core.data.zipsafe import MAX_MEMBERS, MAX_RATIO, MAX_TOTAL_BYTES, safe_extract

__all__ = [
    "load_dataset", "load_folder", "load_zip", "safe_extract", "to_patch", "clear_cache",
    "IMAGE_EXTS", "MAX_MEMBERS", "MAX_TOTAL_BYTES", "MAX_RATIO",
]

PathLike = Union[str, "os.PathLike[str]"]

VAL_FRACTION = 0.15
TEST_FRACTION = 0.15


# ---------------------------------------------------------------------------------
# one image -> one patch
# ---------------------------------------------------------------------------------
def to_patch(img: Image.Image) -> np.ndarray:
    """Any decoded PIL image -> float32 (32, 32) grayscale patch in [0, 1].

    `preprocess.to_pixels` then `preprocess.to_model_input`: for 8-bit images (L, RGB,
    P palette, 1, ...) exactly the course's ``img.convert('L').resize((32, 32),
    BICUBIC) / 255``; 16-bit, 32-bit and float images as that module documents.
    """
    return to_model_input(to_pixels(img))


def _read_patch(path: str, named: str) -> np.ndarray:
    """Decode one dataset file; `named` is its path inside the dataset (for messages)."""
    try:
        with open_checked(path) as im:
            return to_patch(first_frame(im))
    except TooManyPixels as e:
        raise DataError(f"{named}: {e}") from None
    except UnidentifiedImageError:
        why = "unknown or damaged image format"
    except Exception as e:   # truncated data, decoder errors
        why = (str(e) or type(e).__name__).replace(path, named)
    raise DataError(f"{named}: not a readable image ({why})")


@dataclass
class _Raw:
    name: str
    auto: bool
    parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    warnings: tuple[str, ...]


# ---------------------------------------------------------------------------------
# decoding (thread pool) and the cache
# ---------------------------------------------------------------------------------
_CHUNK = 512
# Bump when _read_patch's pixels change (preprocessing): decoded folders cached on disk
# under an older version are decoded again.
DECODE_VERSION = 1


def _decode(entries: list[Entry], base: str) -> np.ndarray:
    n = len(entries)
    x = np.empty((n, PATCH, PATCH, 1), np.float32)

    def work(start: int) -> DataError | None:
        for i in range(start, min(start + _CHUNK, n)):
            try:
                x[i, :, :, 0] = _read_patch(entries[i].path, f"{base}/{entries[i].inside}")
            except DataError as e:
                return e
        return None

    starts = range(0, n, _CHUNK)
    workers = max(1, min(4, os.cpu_count() or 1, len(starts)))
    if workers == 1:
        errors = [work(s) for s in starts]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xraylab-decode") as pool:
            errors = list(pool.map(work, starts))
    for err in errors:          # the first bad file in sorted order, whatever finished first
        if err is not None:
            raise err
    return x


def _readonly(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.flags.writeable = False


def _build_raw(name: str, plan: Plan, base: str, disk_key: tuple | None = None) -> _Raw:
    """disk_key: keep the decoded pixels in the cache folder under this key (folders, whose
    scan signature covers every file's name, size and time; see cache.py)."""
    flat = [e for s in plan.parts for e in plan.parts[s]]
    x = load_decoded(disk_key, (len(flat), PATCH, PATCH, 1)) if disk_key else None
    if x is None:
        x = _decode(flat, base)
        if disk_key:
            save_decoded(disk_key, x)
    parts = {}
    at = 0
    for s, entries in plan.parts.items():
        n = len(entries)
        xs = x[at:at + n]
        ys = np.array([e.label for e in entries], dtype=np.int64)
        gs = np.array([e.group for e in entries], dtype=str)
        _readonly(xs, ys, gs)
        parts[s] = (xs, ys, gs)
        at += n
    return _Raw(name, plan.auto, parts, tuple(plan.warnings))



_CACHE_SIZE = 4
_cache: "OrderedDict[tuple, _Raw]" = OrderedDict()
_cache_lock = threading.Lock()
_inflight: dict[tuple, threading.Lock] = {}


def _cached(key: tuple, build: Callable[[], _Raw]) -> _Raw:
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        lock = _inflight.setdefault(key, threading.Lock())
    with lock:                      # one thread builds; the others wait for its result
        with _cache_lock:
            if key in _cache:
                return _cache[key]
        try:
            raw = build()
            with _cache_lock:
                _cache[key] = raw
                while len(_cache) > _CACHE_SIZE:
                    _cache.popitem(last=False)
            return raw
        finally:
            with _cache_lock:
                _inflight.pop(key, None)


def clear_cache() -> None:
    """Forget every decoded folder and zip."""
    with _cache_lock:
        _cache.clear()


# ---------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------
def _carve(groups: np.ndarray, fractions: list[tuple[str, float]], seed: int) -> dict[str, np.ndarray]:
    """Index arrays for each (name, fraction) plus "train" (the rest), by whole groups.

    Groups are shuffled by the seed; each carved split takes groups in that order
    while doing so brings its patch count closer to fraction * total (at least one
    group each, always leaving one for train).
    """
    uniq, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(uniq))
    owner = np.full(len(uniq), -1)
    total, pos = len(groups), 0
    for k, (_, frac) in enumerate(fractions):
        target, got = frac * total, 0
        keep = len(fractions) - k      # groups to leave: train + the later carved splits
        while pos < len(order) - keep:
            c = counts[order[pos]]
            if got and got + c / 2 > target:
                break
            owner[order[pos]] = k
            got += c
            pos += 1
    out = {name: np.flatnonzero(owner[inv] == k) for k, (name, _) in enumerate(fractions)}
    out["train"] = np.flatnonzero(owner[inv] == -1)
    return out


def _take(part: tuple[np.ndarray, np.ndarray, np.ndarray], idx: np.ndarray) -> Split:
    x, y, g = part[0][idx], part[1][idx], part[2][idx]
    _readonly(x, y, g)
    return Split(x, y, g)


def _assemble(raw: _Raw, seed: int) -> Dataset:
    warnings = list(raw.warnings)
    splits: dict[str, Split] = {}
    if raw.auto:
        part = raw.parts["all"]
        want = [("validation", VAL_FRACTION), ("test", TEST_FRACTION)]
        idx = _carve(part[2], want, seed)
        for s in SPLITS:
            if len(idx[s]):
                splits[s] = _take(part, idx[s])
        n_groups = len(np.unique(part[2]))
        warnings.append(f"no train/ validation/ test/ folders: split {n_groups} radiograph(s) "
                        f"~70/15/15 by radiograph id (seed {seed})")
        for s in SPLITS:
            if s not in splits:
                warnings.append(f"{s}: too few radiographs ({n_groups}) to make a {s} split")
    else:
        for s in SPLITS:
            if s in raw.parts:
                splits[s] = Split(*raw.parts[s])
        if "train" in raw.parts:
            missing = [s for s in ("validation", "test") if s not in raw.parts]
            if missing:
                part = raw.parts["train"]
                frac = {"validation": VAL_FRACTION, "test": TEST_FRACTION}
                idx = _carve(part[2], [(s, frac[s]) for s in missing], seed)
                splits["train"] = _take(part, idx["train"])
                for s in missing:
                    k = len(np.unique(part[2][idx[s]]))
                    if k:
                        splits[s] = _take(part, idx[s])
                        warnings.append(f"{s}: no {s}/ folder, so {k} train radiograph(s) "
                                        f"({len(idx[s])} patches) were set aside as {s} (seed {seed})")
                    else:
                        warnings.append(f"{s}: no {s}/ folder, and train has too few radiographs "
                                        f"to set some aside")
        else:
            have = ", ".join(s for s in SPLITS if s in splits)
            warnings.append(f"no train/ folder: this dataset only has {have} "
                            "(fine for evaluating a trained model, not for training)")
        present = [s for s in SPLITS if s in raw.parts]
        for i, a in enumerate(present):
            for b in present[i + 1:]:
                shared = np.intersect1d(raw.parts[a][2], raw.parts[b][2])
                if len(shared):
                    warnings.append(f"{a} and {b} share {len(shared)} radiograph id(s) (e.g. {shared[0]}): "
                                    "scores on them may look better than they are")
    order = {s: i for i, s in enumerate(SPLITS)}
    splits = dict(sorted(splits.items(), key=lambda kv: order[kv[0]]))
    for s, sp in splits.items():
        counts = sp.class_counts()
        for c, name in enumerate(CLASSES):
            if counts[c] == 0:
                warnings.append(f"{s}: no '{name}' patches")
    return Dataset(raw.name, splits, warnings)


# ---------------------------------------------------------------------------------
# public loaders
# ---------------------------------------------------------------------------------
def _check_seed(seed: int) -> int:
    if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}")
    return int(seed)


def load_folder(path: PathLike, seed: int = 0) -> Dataset:
    """A Dataset from a folder in any layout described in the module docstring."""
    seed = _check_seed(seed)
    shown = os.fspath(path)
    if not os.path.exists(shown):
        raise DataError(f"{shown}: no such file or folder")
    if not os.path.isdir(shown):
        raise DataError(f"{shown}: not a folder")
    name = Path(os.path.abspath(shown)).name or shown
    # a dataset under a data root (the only folders a browser can pick) is named as the picker
    # names it, never by its server folder; its files must stay inside that data root (else,
    # the CLI's own folders, inside the folder itself), links followed
    from xray_core.data import roots
    real = os.path.realpath(shown)
    picked = roots.name_of(shown)
    label = picked or shown
    within = [r for r in roots.roots() if roots._inside(real, [r])] or [real]
    try:
        plan = scan(shown, label, within)
    except PermissionError as e:
        raise DataError(f"{label}: permission denied ({os.path.basename(e.filename or '') or 'a file'})") from None
    key = ("folder", os.path.abspath(shown), plan.signature)
    raw = _cached(key, lambda: _build_raw(name, plan, picked or name, disk_key=(*key, DECODE_VERSION)))
    return _assemble(raw, seed)


UPLOAD_SHOWN = "your .zip"   # how messages name a zip uploaded through the app


def load_zip(path: PathLike, seed: int = 0) -> Dataset:
    """A Dataset from a .zip of any folder layout (with one top folder or none).

    Extracted with `safe_extract` (limits `zipsafe.MAX_MEMBERS`, `MAX_TOTAL_BYTES`,
    `MAX_RATIO`, read at call time) into a temporary folder that is removed afterwards.
    """
    seed = _check_seed(seed)
    shown = os.fspath(path)
    from xray_core.data.uploads import is_upload, private_tmp
    label = UPLOAD_SHOWN if is_upload(shown) else shown    # an upload's server path is nobody's business
    try:
        st = os.stat(shown)
    except FileNotFoundError:
        raise DataError(f"{label}: no such file or folder") from None
    except OSError as e:
        raise DataError(f"{label}: cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{label}: is a folder, not a zip file")
    name = Path(shown).stem or shown
    key = ("zip", os.path.abspath(shown), st.st_size, st.st_mtime_ns)

    def build() -> _Raw:
        with tempfile.TemporaryDirectory(prefix="xraylab-zip-", dir=private_tmp()) as tmp:
            safe_extract(shown, tmp, max_members=zipsafe.MAX_MEMBERS,
                         max_total_bytes=zipsafe.MAX_TOTAL_BYTES, max_ratio=zipsafe.MAX_RATIO, shown=label)
            plan = scan(tmp, label, [tmp])
            return _build_raw(name, plan, label if label == UPLOAD_SHOWN else Path(shown).name)

    return _assemble(_cached(key, build), seed)


def load_dataset(source: str = "phantom", seed: int = 0) -> Dataset:
    """"phantom" (the synthetic phantom), a folder path, or a path ending in .zip."""
    seed = _check_seed(seed)
    src = os.fspath(source)
    if src == "phantom":
        from xray_core.data.phantom.build import build_phantom   # lazy: the phantom is another module's job
        return build_phantom(seed=seed)
    if not src or not os.path.exists(src):
        raise DataError(f"{src}: no such file or folder")
    if os.path.isdir(src):
        return load_folder(src, seed)
    if src.lower().endswith(".zip"):
        return load_zip(src, seed)
    raise DataError(f"{src}: not a folder or a .zip file")
