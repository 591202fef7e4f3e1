"""Data sources: the phantom, a folder of patches, or a .zip of one.

Public API (the app, the CLI and the benchmarks code against exactly this):

    load_dataset(source="phantom", seed=0) -> Dataset
    load_folder(path, seed=0) -> Dataset
    load_zip(path, seed=0) -> Dataset
    safe_extract(zip_path, dest_dir, max_members=..., max_total_bytes=..., max_ratio=...)
    to_patch(img) -> float32 (32, 32) array in [0, 1]
    clear_cache()

Folder layouts understood (folder names are case-insensitive)
-------------------------------------------------------------
1. Course layout: ``train/``, ``validation/`` (or ``val/``, ``valid/``) and ``test/``
   holding image files whose class letter b, c, l or h sits just before the
   extension (the course's ``fn[-5]``), e.g. ``train/JPCLN001_000_b.png``.
2. Class folders: one sub-folder per class, named ``background``, ``clavicle``,
   ``lung``, ``heart`` (plural ``-s`` accepted) or ``b``, ``c``, ``l``, ``h``; either
   at the top (no split folders) or inside each split folder
   (``train/lung/x.png``). A split folder may mix both styles.
3. Lettered images directly in the top folder (no split or class folders) are
   treated like case 2 without split folders.

If the folder holds nothing but one other folder (a zip's top folder, say), that
folder is used instead (up to three levels). Image extensions: png, jpg, jpeg,
bmp, tif, tiff, gif. Dotfiles, ``__MACOSX/``, ``Thumbs.db``, ``desktop.ini`` are
ignored; other non-image files are skipped with a warning.

Which splits you get (the split rule)
-------------------------------------
The radiograph id of a file is its name up to the first ``_`` (the whole name
when there is no ``_``). Every split made here moves whole radiographs, so one
film's patches never land in two splits.

* No split folders at all (cases 2 and 3): the radiograph ids are shuffled with
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
Changing the seed only redoes the (cheap) split. The arrays handed out are
shared with the cache and therefore read-only; copy before modifying in place.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
import threading
import zipfile
import zlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import CLASSES, LETTERS, PATCH
from .dataset import SPLITS, Dataset, Split
from .errors import ConfigError, DataError

__all__ = [
    "load_dataset", "load_folder", "load_zip", "safe_extract", "to_patch", "clear_cache",
    "IMAGE_EXTS", "MAX_MEMBERS", "MAX_TOTAL_BYTES", "MAX_RATIO",
]

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"})

# zip limits (read at call time by load_zip, so tests can lower them)
MAX_MEMBERS = 100_000
MAX_TOTAL_BYTES = 1 << 30          # 1 GiB uncompressed
MAX_RATIO = 200                    # per member, uncompressed : compressed
# The ratio limit applies to members larger than this: a small, very regular file
# (a black BMP) legitimately compresses 1000:1, and the total-size bound caps the rest.
RATIO_MIN_BYTES = 1 << 20

VAL_FRACTION = 0.15
TEST_FRACTION = 0.15

_SPLIT_NAMES = {
    "train": "train", "training": "train",
    "validation": "validation", "val": "validation", "valid": "validation",
    "test": "test", "testing": "test",
}
_CLASS_NAMES: dict[str, int] = {}
for _i, (_name, _letter) in enumerate(zip(CLASSES, LETTERS)):
    _CLASS_NAMES[_name] = _i
    _CLASS_NAMES[_name + "s"] = _i
    _CLASS_NAMES[_letter] = _i
_SILENT = {"__macosx", "thumbs.db", "desktop.ini"}

_NO_IMAGES = ("no images found (expected train/ validation/ test/ with files ending "
              "_b/_c/_l/_h, or class folders)")


# ---------------------------------------------------------------------------------
# one image -> one patch
# ---------------------------------------------------------------------------------
def to_patch(img: Image.Image) -> np.ndarray:
    """Any PIL image -> float32 (32, 32) grayscale patch in [0, 1].

    Same as the course's ``img.convert('L').resize((32, 32), BICUBIC) / 255`` for
    8-bit images (L, RGB, P palette, 1, CMYK, ...). Alpha (RGBA, LA, PA) is *not*
    composited: the colour channels are converted as stored, exactly what
    ``convert('L')`` does. 16-bit and float images are resized in float so they
    keep their precision: ``I;16*`` is divided by 65535; ``I`` (32-bit int) and
    ``F`` (float) are min-max scaled to [0, 1] over the image's own finite range
    (a constant image becomes all zeros). Multi-frame files use the first frame.
    """
    mode = img.mode
    if mode.startswith("I;16"):
        a = np.asarray(img).astype(np.float32) / 65535.0
        return _resize_float(a)
    if mode in ("I", "F"):
        a = np.asarray(img).astype(np.float64)
        finite = np.isfinite(a)
        if not finite.any():
            return np.zeros((PATCH, PATCH), np.float32)
        lo, hi = float(a[finite].min()), float(a[finite].max())
        a = np.where(finite, a, lo)
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        return _resize_float(a.astype(np.float32))
    if mode != "L":
        try:
            img = img.convert("L")
        except (ValueError, OSError):      # modes without a direct path to L (LAB, HSV, ...)
            img = img.convert("RGB").convert("L")
    if img.size != (PATCH, PATCH):
        img = img.resize((PATCH, PATCH), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / np.float32(255.0)


def _resize_float(a: np.ndarray) -> np.ndarray:
    if a.shape != (PATCH, PATCH):
        im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))   # mode F
        a = np.asarray(im.resize((PATCH, PATCH), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(a, 0.0, 1.0).astype(np.float32)   # bicubic overshoots a little


def _read_patch(path: str, shown: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            return to_patch(im)
    except UnidentifiedImageError:
        why = "unknown or damaged image format"
    except Exception as e:   # truncated data, decompression bomb, decoder errors
        why = (str(e) or type(e).__name__).replace(path, shown)
    raise DataError(f"{shown}: not a readable image ({why})")


# ---------------------------------------------------------------------------------
# scanning a folder
# ---------------------------------------------------------------------------------
@dataclass
class _Entry:
    path: str       # on disk
    shown: str      # for messages
    rel: str        # relative to the dataset root (sort key, signature)
    label: int
    group: str


@dataclass
class _Plan:
    auto: bool                          # no split folders: split everything by seed
    parts: dict[str, list[_Entry]]      # split name (or "all") -> entries
    warnings: list[str]
    signature: str


@dataclass
class _Raw:
    name: str
    auto: bool
    parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    warnings: tuple[str, ...]


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in _SILENT


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTS


def _group_of(filename: str) -> str:
    stem = os.path.splitext(filename)[0]
    return stem.split("_", 1)[0] if "_" in stem else stem


def _listdir(path: str) -> list[os.DirEntry]:
    with os.scandir(path) as it:
        return sorted((e for e in it if not _ignored(e.name)), key=lambda e: e.name)


def _join(shown: str, name: str) -> str:
    return f"{shown.rstrip('/')}/{name}" if shown else name


class _Scanner:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.skipped: list[str] = []
        self.sig = hashlib.blake2b(digest_size=16)

    def _add(self, out: list[_Entry], e: os.DirEntry, shown: str, rel: str, label: int) -> None:
        try:
            st = e.stat()
        except OSError as err:       # a broken link, a file removed while scanning
            raise DataError(f"{shown}: cannot be read ({err.strerror or err})") from None
        self.sig.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        out.append(_Entry(e.path, shown, rel, label, _group_of(e.name)))

    def class_dir(self, d: os.DirEntry, label: int, shown: str, rel: str) -> list[_Entry]:
        out: list[_Entry] = []
        for e in _listdir(d.path):
            s, r = _join(shown, e.name), _join(rel, e.name)
            if e.is_dir():
                self.warnings.append(f"{s}: folder inside a class folder, ignored")
            elif _is_image(e.name):
                self._add(out, e, s, r, label)
            else:
                self.skipped.append(s)
        return out

    def lettered(self, e: os.DirEntry, shown: str, rel: str, out: list[_Entry]) -> None:
        stem = os.path.splitext(e.name)[0]
        letter = stem[-1:].lower()
        if letter not in LETTERS:
            raise DataError(f"{shown}: unknown class letter '{stem[-1:]}' "
                            "(expected b, c, l or h before the extension)")
        self._add(out, e, shown, rel, LETTERS.index(letter))

    def split_dir(self, d: os.DirEntry, shown: str, rel: str) -> list[_Entry]:
        out: list[_Entry] = []
        for e in _listdir(d.path):
            s, r = _join(shown, e.name), _join(rel, e.name)
            if e.is_dir():
                label = _CLASS_NAMES.get(e.name.lower())
                if label is None:
                    self.warnings.append(f"{s}: not a class folder (background, clavicle, lung, heart "
                                         "or b, c, l, h), ignored")
                else:
                    out += self.class_dir(e, label, s, r)
            elif _is_image(e.name):
                self.lettered(e, s, r, out)
            else:
                self.skipped.append(s)
        return out


def _descend(root: str, shown: str) -> tuple[str, str]:
    """Step into a lone sub-folder (a zip's top folder) up to three times."""
    for _ in range(3):
        entries = _listdir(root)
        if len(entries) != 1 or not entries[0].is_dir():
            break
        name = entries[0].name.lower()
        if name in _SPLIT_NAMES or name in _CLASS_NAMES:
            break
        root, shown = entries[0].path, _join(shown, entries[0].name)
    return root, shown


def _scan(root: str, shown_root: str) -> _Plan:
    root, shown_root = _descend(root, shown_root)
    sc = _Scanner()
    split_dirs: dict[str, os.DirEntry] = {}
    class_dirs: list[tuple[os.DirEntry, int]] = []
    loose: list[os.DirEntry] = []
    other: list[str] = []
    for e in _listdir(root):
        low = e.name.lower()
        if e.is_dir():
            if low in _SPLIT_NAMES:
                s = _SPLIT_NAMES[low]
                if s in split_dirs:
                    raise DataError(f"{shown_root}: both '{split_dirs[s].name}/' and '{e.name}/' look like "
                                    f"the {s} split; keep only one")
                split_dirs[s] = e
            elif low in _CLASS_NAMES:
                class_dirs.append((e, _CLASS_NAMES[low]))
            else:
                other.append(e.name + "/")
        elif _is_image(e.name):
            loose.append(e)
        else:
            sc.skipped.append(_join(shown_root, e.name))

    parts: dict[str, list[_Entry]] = {}
    if split_dirs:
        for s in SPLITS:
            if s not in split_dirs:
                continue
            d = split_dirs[s]
            entries = sc.split_dir(d, _join(shown_root, d.name), d.name)
            if entries:
                parts[s] = sorted(entries, key=lambda x: x.rel)
            else:
                sc.warnings.append(f"{_join(shown_root, d.name)}: no images, so no {s} split")
        ignored = [d.name + "/" for d, _ in class_dirs] + [e.name for e in loose]
        if ignored:
            sc.warnings.append(f"{shown_root}: ignored {', '.join(ignored[:5])}"
                               f"{' ...' if len(ignored) > 5 else ''} beside the split folders")
        auto = False
    else:
        pool: list[_Entry] = []
        for d, label in class_dirs:
            pool += sc.class_dir(d, label, _join(shown_root, d.name), d.name)
        for e in loose:
            sc.lettered(e, _join(shown_root, e.name), e.name, pool)
        if pool:
            parts["all"] = sorted(pool, key=lambda x: x.rel)
        auto = True
    if not parts:
        raise DataError(f"{shown_root}: {_NO_IMAGES}")
    if sc.skipped:
        sc.warnings.append(f"skipped {len(sc.skipped)} file(s) that are not images "
                           f"(e.g. {sc.skipped[0]})")
    sc.sig.update(repr(sorted(parts)).encode())
    return _Plan(auto, parts, sc.warnings, sc.sig.hexdigest())


# ---------------------------------------------------------------------------------
# decoding (thread pool) and the cache
# ---------------------------------------------------------------------------------
_CHUNK = 512


def _decode(entries: list[_Entry]) -> np.ndarray:
    n = len(entries)
    x = np.empty((n, PATCH, PATCH, 1), np.float32)

    def work(start: int) -> DataError | None:
        for i in range(start, min(start + _CHUNK, n)):
            try:
                x[i, :, :, 0] = _read_patch(entries[i].path, entries[i].shown)
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


def _build_raw(name: str, plan: _Plan) -> _Raw:
    flat = [e for s in plan.parts for e in plan.parts[s]]
    x = _decode(flat)
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
    try:
        plan = _scan(shown, shown)
    except PermissionError as e:
        raise DataError(f"{e.filename or shown}: permission denied") from None
    name = Path(os.path.abspath(shown)).name or shown
    key = ("folder", os.path.abspath(shown), plan.signature)
    raw = _cached(key, lambda: _build_raw(name, plan))
    return _assemble(raw, seed)


def load_zip(path: PathLike, seed: int = 0) -> Dataset:
    """A Dataset from a .zip of any folder layout (with one top folder or none).

    Extracted with `safe_extract` (module limits MAX_MEMBERS, MAX_TOTAL_BYTES,
    MAX_RATIO) into a temporary folder that is removed afterwards.
    """
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
    name = Path(shown).stem or shown
    key = ("zip", os.path.abspath(shown), st.st_size, st.st_mtime_ns)

    def build() -> _Raw:
        with tempfile.TemporaryDirectory(prefix="xraylab-zip-") as tmp:
            safe_extract(shown, tmp, max_members=MAX_MEMBERS,
                         max_total_bytes=MAX_TOTAL_BYTES, max_ratio=MAX_RATIO)
            plan = _scan(tmp, shown)
            return _build_raw(name, plan)

    return _assemble(_cached(key, build), seed)


def load_dataset(source: str = "phantom", seed: int = 0) -> Dataset:
    """"phantom" (the synthetic phantom), a folder path, or a path ending in .zip."""
    seed = _check_seed(seed)
    src = os.fspath(source)
    if src == "phantom":
        from .phantom import build_phantom   # lazy: the phantom is another module's job
        return build_phantom(seed=seed)
    if not src or not os.path.exists(src):
        raise DataError(f"{src}: no such file or folder")
    if os.path.isdir(src):
        return load_folder(src, seed)
    if src.lower().endswith(".zip"):
        return load_zip(src, seed)
    raise DataError(f"{src}: not a folder or a .zip file")


# ---------------------------------------------------------------------------------
# safe zip extraction
# ---------------------------------------------------------------------------------
_DRIVE = re.compile(r"^[A-Za-z]:")


def _member_path(zip_shown: str, raw_name: str) -> str:
    """The member's safe relative path ('' for the root), or DataError saying why not."""
    name = raw_name.replace("\\", "/")
    bad = None
    if "\0" in name:
        bad = "has a NUL character in its name"
    elif name.startswith("/"):
        bad = "has an absolute path"
    elif _DRIVE.match(name):
        bad = "has a drive letter"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if bad is None and ".." in parts:
        bad = "would land outside the target folder ('..' in its path)"
    if bad:
        raise DataError(f"{zip_shown}: refused: member '{raw_name}' {bad}")
    return "/".join(parts)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def safe_extract(zip_path: PathLike, dest_dir: PathLike, max_members: int = MAX_MEMBERS,
                 max_total_bytes: int = MAX_TOTAL_BYTES, max_ratio: float = MAX_RATIO) -> list[str]:
    """Extract a zip into dest_dir (created if needed) refusing anything hostile.

    Refused with a DataError saying why: not a zip / damaged zip; more than
    max_members entries; a member with '..', an absolute path, a drive letter or
    a NUL in its name; a symbolic link member; encrypted members; compression
    other than stored/deflate (bzip2 and lzma inflate big blocks at once); more
    than max_total_bytes uncompressed in total, or a member over RATIO_MIN_BYTES
    compressed more than max_ratio:1 -- checked on the declared sizes first and
    again while counting the bytes actually written (a member is never allowed to
    write more than it declares; CRC mismatches are refused too). The compressed
    size used for the ratio is never more than the bytes up to the next member,
    so a lying compressed size does not help; members sharing data are refused.
    `__MACOSX/` and dotfiles are skipped (after the path checks). Nothing is
    written outside dest_dir; on error, files written by this call are removed.
    Returns the relative paths of the files extracted.
    """
    shown = os.fspath(zip_path)
    try:
        zf = zipfile.ZipFile(shown)
    except FileNotFoundError:
        raise DataError(f"{shown}: no such file or folder") from None
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        raise DataError(f"{shown}: not a zip file, or a damaged one ({e})") from None
    except OSError as e:
        raise DataError(f"{shown}: cannot be read ({e.strerror or e})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise DataError(f"{shown}: refused: {len(infos)} entries, more than the {max_members} allowed")
        plan: list[tuple[zipfile.ZipInfo, str]] = []
        dirs: list[str] = []
        declared = 0
        # The bytes a member can really occupy: up to the next member's header (or the
        # central directory), whatever its header claims; overlapping members are refused.
        starts = sorted(i.header_offset for i in infos)
        if len(set(starts)) != len(starts):
            raise DataError(f"{shown}: refused: several members share the same data (overlapping zip bomb?)")
        end = getattr(zf, "start_dir", None) or os.path.getsize(shown)
        bounds = dict(zip(starts, starts[1:] + [max(end, starts[-1] if starts else 0)]))

        def packed(info: zipfile.ZipInfo) -> int:
            return max(1, min(info.compress_size, bounds[info.header_offset] - info.header_offset))

        for info in infos:
            rel = _member_path(shown, info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK:
                raise DataError(f"{shown}: refused: member '{info.filename}' is a symbolic link")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise DataError(f"{shown}: refused: member '{info.filename}' is not a regular file")
            if not rel or any(_ignored(p) for p in rel.split("/")):
                continue
            if info.is_dir():
                dirs.append(rel)
                continue
            if info.flag_bits & 0x1:
                raise DataError(f"{shown}: member '{info.filename}' is encrypted; zip it without a password")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise DataError(f"{shown}: member '{info.filename}' uses compression method "
                                f"{info.compress_type}; re-zip with standard (deflate) compression")
            declared += info.file_size
            if declared > max_total_bytes:
                raise DataError(f"{shown}: refused: would unpack to more than {_mib(max_total_bytes)} "
                                "(declared sizes; zip bomb?)")
            if info.file_size > RATIO_MIN_BYTES and info.file_size > max_ratio * packed(info):
                ratio = info.file_size / packed(info)
                raise DataError(f"{shown}: refused: member '{info.filename}' is compressed {ratio:.0f}:1, "
                                f"more than the {max_ratio:g}:1 allowed (zip bomb?)")
            plan.append((info, rel))

        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        dest = dest.resolve()
        written: list[Path] = []
        made_dirs: list[Path] = []
        total = 0

        def mkdirs(d: Path) -> None:
            missing = []
            while not d.exists():
                missing.append(d)
                d = d.parent
            for m in reversed(missing):
                m.mkdir()
                made_dirs.append(m)

        try:
            for rel in dirs:
                mkdirs(dest.joinpath(*rel.split("/")))
            for info, rel in plan:
                target = dest.joinpath(*rel.split("/"))
                if not target.resolve().is_relative_to(dest):   # belt and braces (symlinked parents)
                    raise DataError(f"{shown}: refused: member '{info.filename}' would land outside "
                                    "the target folder")
                mkdirs(target.parent)
                n = 0
                try:
                    with zf.open(info) as src, open(target, "wb") as out:
                        written.append(target)
                        while True:
                            chunk = src.read(1 << 20)
                            if not chunk:
                                break
                            n += len(chunk)
                            total += len(chunk)
                            if n > info.file_size:
                                raise DataError(f"{shown}: refused: member '{info.filename}' holds more "
                                                f"than the {info.file_size} bytes it declares (zip bomb?)")
                            if total > max_total_bytes:
                                raise DataError(f"{shown}: refused: unpacks to more than "
                                                f"{_mib(max_total_bytes)} (zip bomb?)")
                            if n > RATIO_MIN_BYTES and n > max_ratio * packed(info):
                                raise DataError(f"{shown}: refused: member '{info.filename}' expands more "
                                                f"than {max_ratio:g}:1 (zip bomb?)")
                            out.write(chunk)
                except DataError:
                    raise
                except (zipfile.BadZipFile, EOFError, ValueError, RuntimeError, NotImplementedError,
                        zlib.error) as e:
                    raise DataError(f"{shown}: member '{info.filename}' is damaged, or its size or "
                                    f"checksum does not match its header ({e})") from None
                except OSError as e:
                    raise DataError(f"{shown}: cannot write '{rel}' ({e.strerror or e})") from None
                if n != info.file_size:
                    raise DataError(f"{shown}: member '{info.filename}' is damaged: {n} bytes instead of "
                                    f"the {info.file_size} its header declares")
        except BaseException:
            for p in reversed(written):
                try:
                    p.unlink()
                except OSError:
                    pass
            for d in reversed(made_dirs):
                try:
                    d.rmdir()
                except OSError:
                    pass
            raise
        return [rel for _, rel in plan]
