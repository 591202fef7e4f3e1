"""Tiny synthetic data layouts for tests/test_data.py, generated in code.

Every image of class letter L is a flat gray of VALUES[L] (plus a 1-level
checker so files differ), so a test can check that a loaded label matches the
pixels it came with: `labels_from_pixels(split.x)` must equal `split.y`.
"""
from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

LETTERS = "bclh"
NAMES = ("background", "clavicle", "lung", "heart")
VALUES = {"b": 20, "c": 90, "l": 160, "h": 230}


def gray(letter: str, size: tuple[int, int] = (32, 32), k: int = 0) -> Image.Image:
    w, h = size
    a = np.full((h, w), VALUES[letter], np.uint8)
    a[(k % h), :] += 1          # tiny per-file difference, far from the class gaps
    return Image.fromarray(a)   # mode L


def write_image(path: Path, letter: str, size: tuple[int, int] = (32, 32), k: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    gray(letter, size, k).save(path)
    return path


def labels_from_pixels(x: np.ndarray) -> np.ndarray:
    """The class whose gray value is nearest each patch's mean."""
    means = x.reshape(len(x), -1).mean(axis=1) * 255.0
    values = np.array([VALUES[c] for c in LETTERS], np.float64)
    return np.abs(means[:, None] - values[None, :]).argmin(axis=1)


def course_layout(root: Path, splits: dict[str, list[str]], per_class: int = 2,
                  letters: str = LETTERS, ext: str = ".png") -> Path:
    """root/<split>/<RID>_<NNN>_<letter><ext>, per_class files per letter per radiograph."""
    for split, rids in splits.items():
        for rid in rids:
            n = 0
            for letter in letters:
                for _ in range(per_class):
                    write_image(root / split / f"{rid}_{n:03d}_{letter}{ext}", letter, k=n)
                    n += 1
    return root


def class_layout(root: Path, rids: list[str], per_class: int = 2, style: str = "names",
                 split: str | None = None, letters: str = LETTERS) -> Path:
    """root/[split/]<class>/<RID>_<NNN>.png with class folders named by `style`:
    names (lung), letters (l), upper (LUNG), plural (lungs)."""
    base = root / split if split else root
    for c in letters:
        name = NAMES[LETTERS.index(c)]
        folder = {"names": name, "letters": c, "upper": name.upper(), "plural": name + "s"}[style]
        for rid in rids:
            for j in range(per_class):
                write_image(base / folder / f"{rid}_{j:03d}.png", c, k=j)
    return root


def rids(n: int, prefix: str = "R") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


def zip_dir(src: Path, zip_path: Path, top: str | None = None,
            extra: dict[str, bytes] | None = None) -> Path:
    """Zip every file under src (optionally under one top folder), plus extra members."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                rel = p.relative_to(src).as_posix()
                zf.write(p, f"{top}/{rel}" if top else rel)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return zip_path


def zip_members(zip_path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]],
                compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(zip_path, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return zip_path


def png_bytes(letter: str = "b") -> bytes:
    import io
    buf = io.BytesIO()
    gray(letter).save(buf, format="PNG")
    return buf.getvalue()


def patch_sizes(zip_path: Path, member: str, *, file_size: int | None = None,
                compress_size: int | None = None) -> None:
    """Rewrite a member's declared sizes in both its local and central headers (a lying zip)."""
    data = bytearray(zip_path.read_bytes())
    name = member.encode()
    # (signature, offset of the name length, of the compressed size, of the name) for the
    # local file headers and the central directory; the uncompressed size follows at +4
    for sig, nlen_at, csize_at, name_at in ((b"PK\x03\x04", 26, 18, 30), (b"PK\x01\x02", 28, 20, 46)):
        i = data.find(sig)
        while i != -1:
            nlen = struct.unpack_from("<H", data, i + nlen_at)[0]
            if bytes(data[i + name_at:i + name_at + nlen]) == name:
                if compress_size is not None:
                    struct.pack_into("<I", data, i + csize_at, compress_size)
                if file_size is not None:
                    struct.pack_into("<I", data, i + csize_at + 4, file_size)
            i = data.find(sig, i + 4)
    zip_path.write_bytes(bytes(data))


def tree(root: Path) -> set[str]:
    """Every path under root, relative, for 'nothing written outside' checks."""
    return {os.path.relpath(os.path.join(d, f), root)
            for d, ds, fs in os.walk(root) for f in ds + fs}


def tiny_course(root):
    """A few radiographs per split in the course layout: enough for 1-epoch CLI runs."""
    course_layout(root, {"train": rids(6), "validation": rids(2, "V"), "test": rids(2, "T")}, per_class=4)
    return root


def old_run_store(home: Path) -> Path:
    """A run store as made before the class and account tables: only `runs` and `groups`, one
    finished run "00000000000000aa" in workspace "ws" (label "old", loss [0.5], test accuracy
    0.4). Returns the SQLite file; opening it with RunStore must add the new tables."""
    import sqlalchemy as sa
    from xray_core.runs.store import groups as groups_table, runs as runs_table
    db = Path(home) / "runs.sqlite3"
    db.parent.mkdir(parents=True, exist_ok=True)
    old = sa.MetaData()
    for t in (runs_table, groups_table):
        t.to_metadata(old)
    engine = sa.create_engine(f"sqlite:///{db}")
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(old.tables["runs"].insert().values(
            id="00000000000000aa", workspace="ws", state="finished", config={"epochs": 1}, preset=None,
            label="old", group_id=None, created_at=1.0, epochs_done=1, epochs=1, history={"loss": [0.5]},
            batch_loss=[], batch_epoch=[], unit_stats=[], result={"test": {"accuracy": 0.4}}, shared=False))
    engine.dispose()
    return db
