"""One path from any image to what the model sees, and the one convention it follows.

Every image the model meets goes through here: dataset folders and zips
(`data.py`), uploads (`images.py`), the built-in phantom (`phantom.py`) and the
anatomy maps (`inference.py`). So one file gives one array, whichever door it came in.

    open_checked(fp)       header only; refuses more than MAX_PIXELS before decoding
    first_frame(im)        decode the first frame, EXIF orientation applied
    to_float(im)           PIL image -> float32 (H, W) in [0, 1]   (bit depth, below)
    to_pixels(im)          the same values, kept as uint8 0..255 for 8-bit images
    to_u8(a)               [0, 1] -> uint8 0..255 (round half to even)
    to_model_input(a)      (H, W) image -> float32 (32, 32) in [0, 1]: the model's input
    window(a, gamma)       2nd..99.5th percentile stretch, then gamma

Bit depth (to_float):
- 8-bit and fewer (L, 1, P palette, RGB, RGBA, LA, PA, CMYK, ...): Pillow's
  ``convert('L')`` (ITU-R 601 luma, rounded to 8 bits), divided by 255 -- exactly the
  course's ``img.convert('L')``. Alpha is dropped, never composited.
- 16-bit (``I;16*``): value / 65535, the bit depth's full scale (not min-max).
- 32-bit integer (``I``): value / 65535 when every value is in 0..65535 (a 16-bit
  image stored as I), otherwise min-max over the image.
- float (``F``): kept when every finite value is in [0, 1], otherwise min-max over
  the finite values. NaN and infinities become 0. A constant out-of-range image is 0.

The model's input (to_model_input): quantise to 8 bits, resize to 32x32 with
Pillow's BICUBIC on the 8-bit image, divide by 255 -- the course's
``img.convert('L').resize((32, 32), BICUBIC) / 255``, because the model was trained
on 8-bit PNG patches. A 32x32 8-bit patch passes through unchanged; the anatomy map
cuts its patches from the film quantised with the same `to_u8`, so each map patch is
`to_model_input` of that 32x32 piece of the film.

Gamma (window): ``gamma`` is the exponent applied to the stretched value,
``v ** gamma`` (skimage.exposure.adjust_gamma's convention): gamma > 1 darkens the
mid-tones, gamma < 1 brightens them. The phantom renders its films with gamma 0.5;
``images.to_film(window=True)`` re-applies gamma 2 (the shared data's README calls
its recipe "gamma 2").
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from xray_core import PATCH
MAX_PIXELS = 40_000_000   # refuse images whose header claims more pixels (decompression bombs)

__all__ = ["MAX_PIXELS", "TooManyPixels", "open_checked", "first_frame", "to_float", "to_u8",
           "from_u8", "to_pixels", "to_model_input", "window", "minmax"]


class TooManyPixels(ValueError):
    """The header claims more than MAX_PIXELS; str() is the reason without a file name."""


def pixel_cap_reason(w: int, h: int) -> str | None:
    """Why a w x h image is refused by the pixel cap, or None when it is not."""
    if w * h > MAX_PIXELS:
        return (f"image is {w}x{h} ({w * h / 1e6:.0f} megapixels), over the "
                f"{MAX_PIXELS / 1e6:.0f} MP limit; refused before decoding")
    return None


def open_checked(fp, formats=None) -> Image.Image:
    """Open an image's header (no pixel is decoded) and refuse it above MAX_PIXELS.

    Raises TooManyPixels; Pillow's own errors (UnidentifiedImageError, ...) pass through.
    (No warnings.catch_warnings here: it is not thread-safe, and the dataset loader
    decodes in threads. Pillow only warns below twice its own limit, which is far
    above MAX_PIXELS, so such an image is refused here all the same.)"""
    try:
        im = Image.open(fp, formats=formats)
    except Image.DecompressionBombError:
        raise TooManyPixels("image header claims too many pixels (decompression bomb), "
                            "refused before decoding") from None
    why = pixel_cap_reason(*im.size)
    if why:
        im.close()
        raise TooManyPixels(why)
    return im


def first_frame(im: Image.Image) -> Image.Image:
    """Decode the first frame (GIF, multi-page TIFF), upright per its EXIF orientation.

    The frame's size is checked against MAX_PIXELS (TooManyPixels) before decoding it."""
    im.seek(0)
    why = pixel_cap_reason(*im.size)
    if why:
        raise TooManyPixels(why)
    im.load()                              # full decode: truncated files fail here
    return ImageOps.exif_transpose(im)     # phone photos of films


def to_float(im: Image.Image) -> np.ndarray:
    """A decoded PIL image -> float32 (H, W) grayscale in [0, 1] (see the module docstring)."""
    a = to_pixels(im)
    return from_u8(a) if a.dtype == np.uint8 else a


def to_pixels(im: Image.Image) -> np.ndarray:
    """`to_float`'s values, but uint8 0..255 for 8-bit images (no needless float round trip:
    ``to_model_input(to_pixels(im)) == to_model_input(to_float(im))``)."""
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.float32) / np.float32(65535.0)
    if mode == "I":
        a = np.asarray(im).astype(np.float64)
        if a.size and a.min() >= 0 and a.max() <= 65535:
            return (a / 65535.0).astype(np.float32)
        return minmax(a)
    if mode == "F":
        a = np.asarray(im).astype(np.float64)
        finite = np.isfinite(a)
        if not finite.all():
            a = np.where(finite, a, np.nan)
        vals = a[finite]
        if vals.size and (vals.min() < 0 or vals.max() > 1):
            a = minmax(a, finite)
        return np.nan_to_num(a, nan=0.0).astype(np.float32)
    if mode != "L":
        try:
            im = im.convert("L")
        except (ValueError, OSError):      # modes without a direct path to L (LAB, HSV, ...)
            im = im.convert("RGB").convert("L")
    return np.asarray(im, dtype=np.uint8)


def to_u8(a: np.ndarray) -> np.ndarray:
    """[0, 1] -> uint8, rounding half to even; float64 input is rounded in float64."""
    a = np.asarray(a)
    if a.dtype != np.float64:
        a = a.astype(np.float32)
    return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)


def from_u8(a: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1] (the model's input scale)."""
    return np.asarray(a, dtype=np.float32) / np.float32(255.0)


def to_model_input(img2d: np.ndarray) -> np.ndarray:
    """Exactly the model's input for a whole image: float32 (32, 32) in [0, 1].

    `img2d` is float in [0, 1] or an integer array (0..its dtype's max, e.g. a uint8
    film). Quantised to 8 bits, resized with BICUBIC, divided by 255."""
    a = np.asarray(img2d)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2 or min(a.shape) < 1:
        raise ValueError(f"expected a 2-D grayscale image, got shape {a.shape}")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.integer):
            a = a.astype(np.float32) / np.float32(np.iinfo(a.dtype).max)
        a = to_u8(a)
    if a.shape != (PATCH, PATCH):
        im = Image.fromarray(np.ascontiguousarray(a)).resize((PATCH, PATCH), Image.Resampling.BICUBIC)
        a = np.asarray(im)
    return from_u8(a)


def window(a: np.ndarray, gamma: float) -> np.ndarray:
    """Stretch the 2nd..99.5th percentiles to [0, 1] (clipped), then ``v ** gamma``.

    The percentiles are float64, so the result is too; a flat image is returned unchanged."""
    lo, hi = np.percentile(a, [2.0, 99.5])
    if not hi > lo:
        return a.copy()
    v = np.clip((a - lo) / (hi - lo), 0.0, 1.0)
    return v ** v.dtype.type(gamma)


def minmax(a: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """(a - min) / (max - min) as float32, over the pixels in `where` (all by default);
    a constant image becomes 0."""
    a = np.asarray(a, dtype=np.float64)
    vals = a if where is None else a[where]
    lo, hi = float(vals.min()), float(vals.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)
