"""Safe zip extraction: unpack a student's .zip without letting it escape or explode.

`safe_extract(zip_path, dest_dir, max_members=..., max_total_bytes=..., max_ratio=...)`
refuses path tricks, links, encryption, exotic compression and zip bombs with a
one-line DataError; `data.load_zip` uses it to read a zipped dataset.
"""
from __future__ import annotations

import os
import re
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Union

from xray_core.errors import DataError
from xray_core.data.folders import ignored

__all__ = ["safe_extract", "MAX_MEMBERS", "MAX_TOTAL_BYTES", "MAX_RATIO", "RATIO_MIN_BYTES"]

PathLike = Union[str, "os.PathLike[str]"]

# zip limits (read at call time by load_zip, so tests can lower them)
MAX_MEMBERS = 100_000
MAX_TOTAL_BYTES = 1 << 30          # 1 GiB uncompressed
MAX_RATIO = 200                    # per member, uncompressed : compressed
# The ratio limit applies to members larger than this: a small, very regular file
# (a black BMP) legitimately compresses 1000:1, and the total-size bound caps the rest.
RATIO_MIN_BYTES = 1 << 20

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
                 max_total_bytes: int = MAX_TOTAL_BYTES, max_ratio: float = MAX_RATIO,
                 shown: str | None = None) -> list[str]:
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
    Returns the relative paths of the files extracted. Messages name the zip as `shown`
    (default: the path given; the app passes "your .zip" for an upload: never a server path).
    """
    path = os.fspath(zip_path)
    shown = shown or path
    try:
        zf = zipfile.ZipFile(path)
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
        end = getattr(zf, "start_dir", None) or os.path.getsize(path)
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
            if not rel or any(ignored(p) for p in rel.split("/")):
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
