"""Data roots: the only server folders a browser may train on.

A classroom server is shared by untrusted students, so the app never takes a
server path from a browser. The teacher lists the roots in `XRAY_LAB_DATA_ROOTS`
(separated by os.pathsep; default: `data/` next to app.py, created if missing);
students pick among the dataset folders found under them, named by their path
relative to their root (`course`, `jsrt/jsrt_patches`). The CLI, run by the
machine's own user, keeps taking any path and does not come through here.

    roots() -> list[str]                  absolute, real paths
    list_datasets() -> list[str]          names, sorted
    resolve(name) -> str                  absolute path of a listed dataset, or DataError

Whether a folder is a dataset is decided by xray_core.data.folders' own scanner (no
second copy of the layout rules). The walk is bounded in depth and count, and
the list is cached for a few seconds so pages can call it on every rerun.
"""
from __future__ import annotations

import os
import threading
import time

from xray_core.errors import DataError
from xray_core import settings

ENV = "XRAY_LAB_DATA_ROOTS"
MAX_DEPTH = 3          # folders below a root that are looked at
MAX_DIRS = 2000        # folders visited per listing, over all roots
MAX_DATASETS = 200     # names offered
CACHE_SECONDS = 10.0

# One message for every refusal: it names no server path and says nothing about
# whether what was asked for exists (a student must not be able to probe the disk).
REFUSED = "That dataset is not available on this server. Pick one from the list."

_APP_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout
_lock = threading.Lock()
_cache: tuple[float, tuple[str, ...], list[tuple[str, str]]] | None = None


def default_root() -> str:
    return os.path.join(_APP_DIR, "data")


def roots() -> list[str]:
    """The configured roots as real absolute paths (missing ones skipped; the default is created)."""
    raw = settings.raw(ENV)
    if not raw.strip():
        d = default_root()
        try:
            os.makedirs(d, exist_ok=True)
        except OSError:
            return []
        return [os.path.realpath(d)]
    out: list[str] = []
    for part in raw.split(os.pathsep):
        part = part.strip()
        if part and os.path.isabs(part) and os.path.isdir(part):
            real = os.path.realpath(part)
            if real not in out:
                out.append(real)
    return out


def _is_dataset(path: str) -> bool:
    """True when xray_core.data.load would load this folder as it is (not via a lone sub-folder),
    or it holds whole films with their label maps (data/films.py: what a segmentation run learns
    from, and where the Classify page's prior can come from)."""
    from xray_core.data.folders import _descend, scan
    try:
        if _descend(path, "")[0] != path:
            return False         # the lone sub-folder is listed under its own name instead
        scan(path, "")
        return True
    except (DataError, OSError):  # not a dataset, unreadable, or changed while scanned: simply not offered
        pass
    return _is_films(path)


def _is_films(path: str) -> bool:
    """Label maps (NAME_labels.png) in the folder itself or in its split folders (train/, ...):
    the films layout, looked at without decoding anything."""
    from xray_core.data import films
    from xray_core.data.folders import ignored

    def has_labels(folder: str) -> bool:
        with os.scandir(folder) as it:
            return any(e.is_file() and films._is_label_name(e.name) for e in it if not ignored(e.name))
    try:
        if has_labels(path):
            return True
        with os.scandir(path) as it:
            splits = [e.path for e in it if e.is_dir() and e.name.lower() in films._SPLIT_NAMES]
        return any(has_labels(p) for p in splits)
    except OSError:
        return False


def _walk(root: str, budget: list[int]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, int]] = [(root, 0)]
    while stack and budget[0] > 0 and len(found) < MAX_DATASETS:
        path, depth = stack.pop()
        budget[0] -= 1
        if _is_dataset(path):
            # a root that is itself a dataset is named by its folder name
            rel = os.path.relpath(path, root).replace(os.sep, "/") if depth else os.path.basename(root)
            found.append((rel, path))
            continue             # a dataset's own train/ or lung/ folders are not datasets
        if depth >= MAX_DEPTH:
            continue
        try:
            with os.scandir(path) as it:
                subs = sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
        except OSError:
            continue
        for name in reversed(subs):
            child = os.path.join(path, name)
            # a symlink leading out of the root is neither listed nor followed
            if _inside(os.path.realpath(child), [root]):
                stack.append((child, depth + 1))
    return found


def _listing() -> list[tuple[str, str]]:
    global _cache
    rs = tuple(roots())
    with _lock:
        if _cache and _cache[1] == rs and time.monotonic() - _cache[0] < CACHE_SECONDS:
            return _cache[2]
    budget = [MAX_DIRS]
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for r in rs:
        for name, path in _walk(r, budget):
            if name not in seen:      # the first root wins a name shared by two roots
                seen.add(name)
                out.append((name, path))
    out.sort()
    with _lock:
        _cache = (time.monotonic(), rs, out)
    return out


def clear_cache() -> None:
    global _cache
    with _lock:
        _cache = None


def list_datasets() -> list[str]:
    """Names of the dataset folders under the roots, e.g. ['course', 'jsrt/jsrt_patches']."""
    return [name for name, _ in _listing()]


def _inside(real: str, rs: list[str]) -> bool:
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in rs)


def _well_formed(name: object) -> bool:
    if not isinstance(name, str) or not name or len(name) > 255:
        return False
    if "\0" in name or "\\" in name or name.startswith("/") or ":" in name:
        return False
    if any(ord(c) < 32 for c in name):
        return False
    parts = name.split("/")
    return all(p and p not in (".", "..") for p in parts)


def resolve(name: str) -> str:
    """The absolute real path of dataset `name`, or DataError(REFUSED).

    Only names that list_datasets() offers are accepted, and the real path (symlinks
    followed) must still lie inside a root at the moment of the call."""
    if not _well_formed(name):
        raise DataError(REFUSED)
    for listed, path in _listing():
        if listed == name:
            real = os.path.realpath(path)
            if _inside(real, roots()) and os.path.isdir(real):
                return real
            break
    raise DataError(REFUSED)


def name_of(path: str) -> str | None:
    """The dataset name of an absolute path returned by resolve() (for links), else None."""
    real = os.path.realpath(path)
    for name, p in _listing():
        if os.path.realpath(p) == real:
            return name
    return None
