"""Read what students upload, safely, and turn it into what the model sees.

`read_image(bytes, name)` is the only door: it returns a float32 2-D grayscale
array in [0, 1] at full resolution or raises `ImageError` with a one-line reason
that names the file. The format is detected from the CONTENT (magic bytes), never
from the extension, so a PNG called `scan.jpg` is read and an HTML page called
`scan.png` is refused as text.

Accepted: PNG, JPEG, TIFF, BMP, GIF (first frame) through Pillow, and DICOM
(the 'DICM' magic at offset 128, or a headerless dataset named .dcm/.dicom)
through pydicom. Everything is checked from the header before any pixel is
decoded: file size, pixel count (decompression bombs), minimum side, aspect ratio.

Intensity conventions: Pillow formats follow `preprocess` (the one convention for
bit depth, shared with the dataset loader: 8-bit via convert('L') / 255, 16-bit /
65535, float kept in [0, 1] else min-max). DICOM: modality LUT (Rescale
Slope/Intercept) -> the file's first Window Center/Width (or its VOI LUT) -> [0, 1];
min-max when the file has no window; MONOCHROME1 is inverted so that dense tissue is
bright, as in MONOCHROME2.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from xray_core import FILM
from xray_core.data import preprocess
from xray_core.errors import ImageError
from xray_core.data.preprocess import MAX_PIXELS, first_frame, minmax, to_float, to_model_input

MAX_BYTES = 50 * 1024 * 1024   # refuse files larger than this before parsing
MIN_SIDE = 16                  # smaller than this on a side: nothing to classify
MAX_ASPECT = 4.0               # longer/shorter side beyond this: not a film or patch
RADIOGRAPH_SIDE = 128          # either side >= this: treated as a whole radiograph

PIL_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF")   # nothing else reaches a decoder
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
}

__all__ = [
    "read_image", "patch_input", "is_radiograph", "to_film", "is_dicom",
    "MAX_BYTES", "MAX_PIXELS", "MIN_SIDE", "MAX_ASPECT", "RADIOGRAPH_SIDE",
]


# ---- public API -------------------------------------------------------------------
def read_image(data: bytes, name: str = "upload") -> np.ndarray:
    """Decode an uploaded file to float32 (H, W) grayscale in [0, 1].

    Raises ImageError("<name>: <reason>") for anything that is not a usable image.
    """
    name = _one_line(str(name)) or "upload"
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ImageError(f"{name}: expected the file's bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageError(f"{name}: empty file (0 bytes)")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name}: file is {len(data) / 2**20:.1f} MB, over the "
                         f"{MAX_BYTES / 2**20:.0f} MB limit")
    if ImageFile.LOAD_TRUNCATED_IMAGES:   # someone flipped Pillow's global: refuse to guess
        raise ImageError(f"{name}: cannot check for truncation (PIL LOAD_TRUNCATED_IMAGES is on)")

    if is_dicom(data):
        img = _read_dicom(data, name)
    else:
        im = _open_pillow(data, name)
        if im is not None:
            img = _read_pillow(im, name)
        elif _looks_like_text(data):
            raise ImageError(f"{name}: not an image: looks like text/HTML")
        elif _maybe_headerless_dicom(data, name):
            img = _read_dicom(data, name)
        else:
            kind = _magic_kind(data)
            if kind:
                raise ImageError(f"{name}: damaged {kind} file (its header cannot be read)")
            raise ImageError(f"{name}: not a recognised image (expected PNG, JPEG, TIFF, "
                             "BMP, GIF or DICOM)")

    if not np.all(np.isfinite(img)):
        img = np.nan_to_num(img, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)


def is_dicom(data: bytes) -> bool:
    """True when the bytes carry the DICOM Part 10 preamble magic 'DICM' at offset 128."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def patch_input(img2d: np.ndarray) -> np.ndarray:
    """Exactly the model's input for a whole image: `preprocess.to_model_input`."""
    try:
        return to_model_input(_check_2d(img2d, "patch_input"))
    except ValueError as e:
        raise ImageError(f"patch_input: {e}") from None


def is_radiograph(img2d: np.ndarray) -> bool:
    """A whole film (gets an anatomy map) rather than a patch: either side >= 128 px."""
    return max(np.shape(img2d)[:2]) >= RADIOGRAPH_SIDE


def to_film(img2d: np.ndarray, window: bool = False, gamma: float = 2.0) -> np.ndarray:
    """The image at training-film scale: float32, long side 256 px, values in [0, 1].

    Shrinking uses Pillow's BOX filter as the training films did (JSRT 2048 -> 256);
    enlarging a 128..255 px image uses BILINEAR (BOX would just replicate pixels).

    window=False (default) keeps intensities as read. window=True re-applies the
    training films' intensity recipe (data/README.md): stretch the 2nd..99.5th
    percentiles to [0, 1], then gamma (v ** gamma, `preprocess.window`). Use it for raw films that look flat/washed out. The shared JSRT
    films are ALREADY windowed, and re-windowing them darkens them and lowers map
    quality (see scripts/measure_maps.py --window), hence the default.
    """
    a = _check_2d(img2d, "to_film").astype(np.float32, copy=False)
    h, w = a.shape
    long_side = max(h, w)
    if long_side != FILM:
        scale = FILM / long_side
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        resample = Image.Resampling.BOX if long_side > FILM else Image.Resampling.BILINEAR
        a = np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize((nw, nh), resample),
                       dtype=np.float32)
    else:
        a = a.copy()
    if window:
        a = preprocess.window(a, gamma)
    return np.clip(a, 0.0, 1.0).astype(np.float32, copy=False)


# ---- Pillow formats -----------------------------------------------------------------
def _open_pillow(data: bytes, name: str) -> Image.Image | None:
    """Open the header only (no pixel decoding); None when Pillow does not recognise it."""
    try:
        im = preprocess.open_checked(io.BytesIO(data), formats=PIL_FORMATS)
    except preprocess.TooManyPixels as e:
        raise ImageError(f"{name}: {e}") from None
    except UnidentifiedImageError:
        return None
    except Exception as e:  # malformed headers raise all sorts of things
        raise ImageError(f"{name}: damaged {_magic_kind(data) or 'image'} header "
                         f"({_one_line(e)})") from None
    w, h = im.size
    _check_dims(w, h, name)
    return im


def _read_pillow(im: Image.Image, name: str) -> np.ndarray:
    fmt = im.format or "image"
    try:
        im = first_frame(im)
    except (preprocess.TooManyPixels, Image.DecompressionBombError) as e:
        raise ImageError(f"{name}: {fmt} frame refused ({e})") from None
    except Exception as e:
        msg = _one_line(e)
        if "truncat" in msg.lower() or isinstance(e, (EOFError, SyntaxError)):
            raise ImageError(f"{name}: truncated or damaged {fmt} file ({msg})") from None
        raise ImageError(f"{name}: cannot decode {fmt} ({msg})") from None
    w, h = im.size
    _check_dims(w, h, name)   # exif_transpose may swap; re-check for safety
    try:
        return to_float(im)
    except Exception as e:
        raise ImageError(f"{name}: cannot convert {fmt} mode {im.mode} to grayscale "
                         f"({_one_line(e)})") from None


# ---- DICOM ------------------------------------------------------------------------
def _read_dicom(data: bytes, name: str) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        ds.get("PixelData")  # force parsing up to the pixels (deferred errors surface here)
    except Exception as e:
        raise ImageError(f"{name}: not a readable DICOM file ({_one_line(e)})") from None
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageError(f"{name}: DICOM file has no pixel data (not an image)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    except Exception as e:
        raise ImageError(f"{name}: DICOM image header is incomplete ({_one_line(e)})") from None
    _check_dims(cols, rows, name)
    if spp not in (1, 3):
        raise ImageError(f"{name}: DICOM with {spp} samples per pixel is not supported")
    _ensure_transfer_syntax(ds)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # e.g. "pixel data longer than expected"
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            arr = pixel_array(ds, index=0 if frames > 1 else None)   # first frame only
    except Exception as e:
        raise ImageError(f"{name}: cannot decode the DICOM pixel data ({_one_line(e)})") from None
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]

    try:
        if photometric in ("MONOCHROME1", "MONOCHROME2") and arr.ndim == 2:
            arr = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
            out = _dicom_voi(arr, ds)
            if photometric == "MONOCHROME1":   # low values are white: flip so dense = bright
                out = 1.0 - out
        elif photometric == "PALETTE COLOR" and arr.ndim == 2:
            rgb = np.asarray(apply_color_lut(arr, ds), dtype=np.float64)
            out = minmax(_luminance(rgb))
        elif arr.ndim == 3 and arr.shape[-1] == 3:   # RGB / YBR (pydicom converts to RGB)
            bits = int(ds.get("BitsStored", 8) or 8)
            out = _luminance(arr.astype(np.float64)) / float(2 ** bits - 1)
        elif arr.ndim == 2:
            out = minmax(arr.astype(np.float64))
        else:
            raise ValueError(f"unexpected pixel array shape {arr.shape}")
    except ImageError:
        raise
    except Exception as e:
        raise ImageError(f"{name}: cannot map DICOM {photometric} values to grayscale "
                         f"({_one_line(e)})") from None
    return np.asarray(out, dtype=np.float32)


# What pydicom and these reads raise for a malformed window or VOI LUT (width < 1, text where
# a number belongs, a missing or short descriptor, too little LUT data, 2**bits too large).
# Anything else is no fallback: _read_dicom refuses the file in one line.
_MALFORMED_VALUES = (ValueError, TypeError, AttributeError, IndexError, KeyError, ArithmeticError)


def _dicom_voi(arr: np.ndarray, ds) -> np.ndarray:
    """Modality values -> [0, 1] via the first Window Center/Width, else VOI LUT, else min-max."""
    from pydicom.pixels import apply_voi_lut, apply_windowing

    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            lo, hi = _window_output_range(ds)
            out = apply_windowing(arr.copy(), ds, index=0)
            if hi != lo:
                return np.clip((out - lo) / (hi - lo), 0.0, 1.0)
        except _MALFORMED_VALUES:
            pass   # malformed window (width < 1, text...): fall back to the data range
    if ds.get("VOILUTSequence"):
        try:
            bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            out = apply_voi_lut(arr.copy(), ds, index=0, prefer_lut=True)
            return np.clip(out / float(2 ** bits - 1), 0.0, 1.0)
        except _MALFORMED_VALUES:
            pass   # malformed VOI LUT (no or short descriptor, too little data): the data range
    return minmax(arr)


def _window_output_range(ds) -> tuple[float, float]:
    """The (y_min, y_max) pydicom's apply_windowing maps the window onto (PS3.3 C.11.2)."""
    bits = int(ds.BitsStored)
    if ds.get("ModalityLUTSequence"):
        y_min, y_max = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        y_min, y_max = 0.0, float(2 ** bits - 1)
    else:
        y_min, y_max = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        y_min = y_min * float(slope) + float(intercept)
        y_max = y_max * float(slope) + float(intercept)
    return y_min, y_max


def _ensure_transfer_syntax(ds) -> None:
    """Headerless datasets (no file meta): assume the encoding they were read with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if implicit in (None, True):
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little in (None, True) else ExplicitVRBigEndian


def _maybe_headerless_dicom(data: bytes, name: str) -> bool:
    """Worth trying pydicom without the 'DICM' magic: DICOM-named, or starts with a
    group 0002/0008 tag (little endian), as raw datasets do."""
    return name.lower().endswith(DICOM_EXTENSIONS) or data[:2] in (b"\x02\x00", b"\x08\x00")


# ---- shared checks and helpers -------------------------------------------------------
def _check_dims(w: int, h: int, name: str) -> None:
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: image has no pixels ({w}x{h})")
    too_big = preprocess.pixel_cap_reason(w, h)
    if too_big:
        raise ImageError(f"{name}: {too_big}")
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{name}: image is {w}x{h} pixels; at least {MIN_SIDE} px on each "
                         "side is needed")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise ImageError(f"{name}: image is {w}x{h}, an aspect ratio of "
                         f"{max(w, h) / min(w, h):.1f}:1 (more than {MAX_ASPECT:.0f}:1 is not "
                         "a radiograph or patch)")


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    for bom in (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"):
        if head.startswith(bom):
            return True
    if b"\x00" in head:
        return False
    if head.lstrip()[:1] == b"<":   # HTML, XML, SVG
        return True
    text = head.decode("utf-8", errors="replace")
    if not text:
        return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable / len(text) > 0.95


def _magic_kind(data: bytes) -> str | None:
    for magic, kind in _MAGIC.items():
        if data.startswith(magic):
            return kind
    return None


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, as Pillow's convert('L'), but kept in float."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _check_2d(img: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2 or min(a.shape) < 1:
        raise ImageError(f"{what}: expected a 2-D grayscale image, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.integer):
        # uint8/uint16 films (e.g. phantom_radiographs) mean 0..dtype max, not 0..1:
        # scale instead of letting a later clip turn the film white.
        a = a.astype(np.float32) / np.float32(np.iinfo(a.dtype).max)
    return a


def _one_line(e: object) -> str:
    s = " ".join(str(e).split())
    return s[:200] + ("..." if len(s) > 200 else "")
