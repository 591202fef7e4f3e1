"""The cache folder (XRAY_LAB_CACHE, default ~/.cache/xray_lab): the phantom's rendered
patches and films, and the decoded pixels of patch folders.

Decoding a course folder (13,888 PNGs) takes ~3 s of a 2-core CPU on every run; the
pixels of a folder whose files have not changed (same names, sizes and modification times:
folders.scan's signature) are read back from one .npy file in ~0.05 s instead.

    cache_dir() -> Path
    load_decoded(key, shape) -> ndarray | None
    save_decoded(key, x)          (errors logged once, never raised: a cache is optional)
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from xray_core import settings

log = logging.getLogger(__name__)
KEEP_DECODED = 8       # the newest decoded folders kept (a course folder is ~57 MB)


def cache_dir() -> Path:
    return Path(settings.get("XRAY_LAB_CACHE") or Path.home() / ".cache" / "xray_lab")


def _decoded_path(key: tuple) -> Path:
    digest = hashlib.blake2b(repr(key).encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()
    return cache_dir() / "decoded" / f"{digest}.npy"


def load_decoded(key: tuple, shape: tuple) -> np.ndarray | None:
    """The pixels saved for this key, if present and of this shape (else None)."""
    path = _decoded_path(key)
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError):       # absent, or cut short by a full disk: decode again
        return None
    if x.shape != tuple(shape) or x.dtype != np.float32:
        return None
    try:
        os.utime(path)                  # recently used: kept longest
    except OSError:
        pass
    return x


def save_decoded(key: tuple, x: np.ndarray) -> None:
    path = _decoded_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")   # private (0600)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, x, allow_pickle=False)
            os.replace(tmp, path)       # readers never see half a file
        except BaseException:
            os.unlink(tmp)
            raise
        old = sorted(path.parent.glob("*.npy"), key=lambda p: p.stat().st_mtime, reverse=True)
        for p in old[KEEP_DECODED:]:
            p.unlink(missing_ok=True)
    except OSError as e:                # read-only or full cache folder: the run goes on uncached
        log.warning("decoded-data cache not written (%s): %s", path.parent, e)
