"""Uploaded zips: private folder, unique temp names, size cap, no races."""
import hashlib
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from xray_core.data import uploads
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def payload(i: int, n: int = 3 << 20) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (n // 32)


def test_private_folder_and_content_addressed_names(home):
    p = uploads.store_zip(b"PK-one")
    assert Path(p).parent == home / "uploads"
    assert stat.S_IMODE(os.stat(home / "uploads").st_mode) == 0o700
    assert uploads.store_zip(b"PK-one") == p and Path(p).read_bytes() == b"PK-one"
    assert uploads.store_zip(b"PK-two") != p
    assert not [f for f in os.listdir(home / "uploads") if f.endswith(".part")]


def test_same_zip_from_many_threads_at_once(home):
    for attempt in range(20):
        data = payload(attempt)
        results, errors = [], []
        gate = threading.Barrier(4)

        def up():
            try:
                gate.wait()
                results.append(uploads.store_zip(data))
            except Exception as e:   # noqa: BLE001 -- any failure is the bug
                errors.append(e)
        threads = [threading.Thread(target=up) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(set(results)) == 1
        assert Path(results[0]).read_bytes() == data


def test_same_zip_from_two_processes_at_once(home, tmp_path):
    script = (
        "import os, sys, time, hashlib\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from xray_core.data.uploads import store_zip\n"
        "go = float(sys.argv[2])\n"
        "for i in range(20):\n"
        "    data = hashlib.sha256(str(i).encode()).digest() * ((3 << 20) // 32)\n"
        "    while time.time() < go + i * 0.15: pass\n"
        "    p = store_zip(data)\n"
        "    assert open(p, 'rb').read() == data, i\n"
        "print('ok')\n")
    go = time.time() + 3
    procs = [subprocess.Popen([sys.executable, "-c", script, str(ROOT), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all(o[0].strip() == "ok" for o in outs)
    assert len([f for f in os.listdir(home / "uploads") if f.endswith(".zip")]) == 20


def test_least_recently_used_go_first_under_the_size_cap(home, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_UPLOADS_MB", "7")      # room for two 3 MB zips
    a = uploads.store_zip(payload(1))
    os.utime(a, (time.time() - 600,) * 2)
    b = uploads.store_zip(payload(2))
    os.utime(b, (time.time() - 300,) * 2)
    uploads.store_zip(payload(1))                          # a used again: now the newest
    c = uploads.store_zip(payload(3))                      # over the cap: b goes
    assert os.path.exists(a) and os.path.exists(c) and not os.path.exists(b)


def test_old_zips_and_stale_temp_files_are_removed_at_start_up(home, monkeypatch):
    folder = home / "uploads"
    folder.mkdir(parents=True)
    old, fresh, stale = folder / "old.zip", folder / "fresh.zip", folder / ".incoming-x.part"
    for f in (old, fresh, stale):
        f.write_bytes(b"x")
    for f in (old, stale):
        os.utime(f, (time.time() - 2 * 86400,) * 2)
    monkeypatch.setattr(uploads, "_started", set())
    uploads.upload_dir()
    assert fresh.exists() and not old.exists() and not stale.exists()
