"""Uploaded dataset zips, kept in a private app-owned folder.

Not the shared temp folder: there any local user could read students' zips, and
two students uploading the same zip wrote the same `.part` file. Here:

- the folder is XRAY_LAB_HOME/uploads (default ~/.local/share/xray-lab/uploads), mode 0700;
- each upload is written to its own `mkstemp` file in that folder and then
  `os.replace`d onto its content-addressed name (sha256 of the bytes): identical
  uploads at the same moment both succeed and end with the same complete file;
- the folder is capped in size (XRAY_LAB_UPLOADS_MB, default 2000): the least recently
  used zips go first; zips unused for a day (and stray temp files) are removed at start-up.

    store_zip(data) -> str      absolute path of the stored zip
    upload_dir() -> Path
    prune(max_bytes=None, max_age=None) -> int   files removed
    max_files() -> int          films per upload on the Classify page
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path

from xray_core import settings   # XRAY_LAB_HOME, the upload caps

DEFAULT_MAX_MB = 2000
MAX_AGE_SECONDS = 24 * 3600
_TMP_PREFIX = ".incoming-"
_lock = threading.Lock()
_started: set[str] = set()


def app_home() -> Path:
    return settings.home()


def upload_dir() -> Path:
    home = app_home()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)   # a new home is private too
    d = home / "uploads"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)       # also when it existed before with looser rights
    key = str(d)
    with _lock:
        first = key not in _started
        _started.add(key)
    if first:                # once per process: what an earlier run left behind
        prune(max_age=MAX_AGE_SECONDS, folder=d)
    return d


def is_upload(path) -> bool:
    """Whether `path` is a zip stored by store_zip (in this home's uploads folder)."""
    try:
        return os.path.dirname(os.path.realpath(path)) == os.path.realpath(app_home() / "uploads")
    except (OSError, ValueError):
        return False


def private_tmp() -> Path:
    """Temporary files (an unpacked zip, an uploaded model being checked) live under the home,
    in `tmp/` (0700), as the training processes' do: not in the shared /tmp."""
    d = app_home() / "tmp"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def max_files() -> int:
    """Films classified per upload on the Classify page (XRAY_LAB_MAX_FILES, default 20)."""
    return settings.get("XRAY_LAB_MAX_FILES")


def max_bytes() -> int:
    return settings.get("XRAY_LAB_UPLOADS_MB") << 20


def store_zip(data: bytes) -> str:
    """Store an uploaded zip under its content hash; return its path (loaded once per content)."""
    folder = upload_dir()
    path = folder / f"{hashlib.sha256(data).hexdigest()[:32]}.zip"
    try:
        st = path.stat()
        if st.st_size == len(data):
            if time.time() - st.st_mtime > 60:
                os.utime(path)  # recently used: the size cap removes others first
            return str(path)
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)   # atomic: readers see no file or the whole file
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    prune(keep=path, folder=folder)
    return str(path)


def prune(max_bytes: int | None = None, max_age: float | None = None, keep: Path | None = None,
          folder: Path | None = None) -> int:
    """Remove zips older than max_age seconds, then the least recently used until the
    folder is under max_bytes (default: the env cap). `keep` is never removed."""
    folder = folder or upload_dir()
    cap = max_bytes if max_bytes is not None else globals()["max_bytes"]()
    now = time.time()
    files = []
    for e in os.scandir(folder):
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if e.name.startswith(_TMP_PREFIX):
            # someone else's upload in progress, unless it is stale (a crashed writer)
            if now - st.st_mtime > 3600:
                _unlink(e.path)
            continue
        files.append((st.st_mtime, st.st_size, e.path))
    removed = 0
    if max_age is not None:
        for f in [f for f in files if now - f[0] > max_age]:
            if keep is None or f[2] != str(keep):
                removed += _unlink(f[2])
                files.remove(f)
    files.sort()                    # oldest use first
    total = sum(f[1] for f in files)
    for mtime, size, path in files:
        if total <= cap:
            break
        if keep is not None and path == str(keep):
            continue
        removed += _unlink(path)
        total -= size
    return removed


def _unlink(path: str) -> int:
    try:
        os.unlink(path)
        return 1
    except OSError:           # removed by another process meanwhile
        return 0
