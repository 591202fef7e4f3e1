"""Scanning a dataset folder: which files are patches, of which class, in which split.

`scan(root, shown_root) -> Plan` walks a folder (never decoding an image) and
returns the files per split folder (or "all" when there are none), their labels
and radiograph ids, warnings, and a signature of every file's name, size and
mtime (the decoding cache's key). `data.py` decodes and splits what it finds.

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

Files and folders whose real path (symbolic links followed) leaves the folders given
as `within` (default: the scanned folder itself; the app passes the data root, or the
folder a zip was unpacked into) are skipped with a warning: a link in a dataset must
not make the server read, say, /etc/passwd as a patch.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from xray_core import CLASSES, LETTERS
from xray_core.data.dataset import SPLITS
from xray_core.errors import DataError

__all__ = ["scan", "Plan", "Entry", "ignored", "IMAGE_EXTS"]

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"})

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


@dataclass
class Entry:
    path: str       # on disk
    shown: str      # for messages
    rel: str        # relative to the scanned folder (sort key, signature)
    label: int
    group: str
    inside: str = ""   # relative to the dataset as given (incl. a zip's top folder): safe to show


@dataclass
class Plan:
    auto: bool                          # no split folders: split everything by seed
    parts: dict[str, list[Entry]]      # split name (or "all") -> entries
    warnings: list[str]
    signature: str




def ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in _SILENT


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTS


def _group_of(filename: str) -> str:
    stem = os.path.splitext(filename)[0]
    return stem.split("_", 1)[0] if "_" in stem else stem


def _listdir(path: str, within: tuple[str, ...] | None = None,
             outside: list[str] | None = None) -> list[os.DirEntry]:
    """The folder's entries by name, dotfiles and the like left out; with `within`, also
    the links whose real path leaves those folders (their names go to `outside`)."""
    with os.scandir(path) as it:
        entries = sorted((e for e in it if not ignored(e.name)), key=lambda e: e.name)
    if within is None:
        return entries
    kept = []
    for e in entries:
        if e.is_symlink() and not _inside(os.path.realpath(e.path), within):
            if outside is not None:
                outside.append(e.name)
            continue
        kept.append(e)
    return kept


def _inside(real: str, within: tuple[str, ...]) -> bool:
    return any(real == w or real.startswith(w.rstrip(os.sep) + os.sep) for w in within)


def _join(shown: str, name: str) -> str:
    return f"{shown.rstrip('/')}/{name}" if shown else name


class _Scanner:
    def __init__(self, prefix: str = "", within: tuple[str, ...] | None = None) -> None:
        self.prefix = prefix
        self.within = within
        self.outside: list[str] = []     # links leading out of `within`, by shown name
        self.warnings: list[str] = []
        self.skipped: list[str] = []
        self.sig = hashlib.blake2b(digest_size=16)

    def _add(self, out: list[Entry], e: os.DirEntry, shown: str, rel: str, label: int) -> None:
        try:
            st = e.stat()
        except OSError as err:       # a broken link, a file removed while scanning
            raise DataError(f"{shown}: cannot be read ({err.strerror or err})") from None
        self.sig.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        out.append(Entry(e.path, shown, rel, label, _group_of(e.name), _join(self.prefix, rel)))

    def ls(self, path: str, shown: str) -> list[os.DirEntry]:
        """_listdir within the allowed folders; links leading out are noted by their shown name."""
        names: list[str] = []
        entries = _listdir(path, self.within, names)
        self.outside += [_join(shown, n) for n in names]
        return entries

    def class_dir(self, d: os.DirEntry, label: int, shown: str, rel: str) -> list[Entry]:
        out: list[Entry] = []
        for e in self.ls(d.path, shown):
            s, r = _join(shown, e.name), _join(rel, e.name)
            if e.is_dir():
                self.warnings.append(f"{s}: folder inside a class folder, ignored")
            elif _is_image(e.name):
                self._add(out, e, s, r, label)
            else:
                self.skipped.append(s)
        return out

    def lettered(self, e: os.DirEntry, shown: str, rel: str, out: list[Entry]) -> None:
        stem = os.path.splitext(e.name)[0]
        letter = stem[-1:].lower()
        if letter not in LETTERS:
            raise DataError(f"{shown}: unknown class letter '{stem[-1:]}' "
                            "(expected b, c, l or h before the extension)")
        self._add(out, e, shown, rel, LETTERS.index(letter))

    def split_dir(self, d: os.DirEntry, shown: str, rel: str) -> list[Entry]:
        out: list[Entry] = []
        for e in self.ls(d.path, shown):
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


def _descend(root: str, shown: str, sc: _Scanner | None = None) -> tuple[str, str, str]:
    """Step into a lone sub-folder (a zip's top folder) up to three times.
    Returns the folder, its name for messages and its path below `root`."""
    prefix = ""
    for _ in range(3):
        entries = _listdir(root)    # a link leading out still counts here: it is not descended into
        if len(entries) != 1 or not entries[0].is_dir():
            break
        if sc is not None and sc.within is not None and entries[0].is_symlink() \
                and not _inside(os.path.realpath(entries[0].path), sc.within):
            break
        name = entries[0].name.lower()
        if name in _SPLIT_NAMES or name in _CLASS_NAMES:
            break
        root, shown = entries[0].path, _join(shown, entries[0].name)
        prefix = _join(prefix, entries[0].name)
    return root, shown, prefix


def scan(root: str, shown_root: str, within: list[str] | tuple[str, ...] | None = None) -> Plan:
    """`within`: the folders (real paths) the dataset's files must lie in, links followed;
    default the scanned folder itself."""
    sc = _Scanner("", tuple(os.path.realpath(w) for w in (within or [root])))
    root, shown_root, sc.prefix = _descend(root, shown_root, sc)
    split_dirs: dict[str, os.DirEntry] = {}
    class_dirs: list[tuple[os.DirEntry, int]] = []
    loose: list[os.DirEntry] = []
    other: list[str] = []
    for e in sc.ls(root, shown_root):
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

    parts: dict[str, list[Entry]] = {}
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
        pool: list[Entry] = []
        for d, label in class_dirs:
            pool += sc.class_dir(d, label, _join(shown_root, d.name), d.name)
        for e in loose:
            sc.lettered(e, _join(shown_root, e.name), e.name, pool)
        if pool:
            parts["all"] = sorted(pool, key=lambda x: x.rel)
        auto = True
    if sc.outside:
        sc.warnings.append(f"skipped {len(sc.outside)} link(s) leading out of the dataset "
                           f"(e.g. {sc.outside[0]})")
    if not parts:
        raise DataError(f"{shown_root}: {_NO_IMAGES}")
    if sc.skipped:
        sc.warnings.append(f"skipped {len(sc.skipped)} file(s) that are not images "
                           f"(e.g. {sc.skipped[0]})")
    sc.sig.update(repr(sorted(parts)).encode())
    return Plan(auto, parts, sc.warnings, sc.sig.hexdigest())

