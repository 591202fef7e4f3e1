"""One preprocessing path: the same file gives the same model input through every door
(dataset loader, upload reader, anatomy-map patches), for every bit depth."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from xray_core.data import preprocess
from xray_core.data.load import clear_cache, load_folder, to_patch
from xray_core.data.images import patch_input, read_image, to_film
from xray_core.maps.inference import anatomy_map
from xray_core.data.phantom.build import FILM_GAMMA, window as phantom_window

SIDE = 256          # a whole film: to_film keeps it as it is
CENTRE = 128        # a map patch centre on the stride-32 grid
HALF = 16


def _film_u8() -> np.ndarray:
    """A smooth film-like picture with texture (every 8-bit level matters)."""
    y, x = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    rng = np.random.default_rng(3)
    a = 0.5 + 0.35 * np.sin(6 * x) * np.cos(4 * y) + 0.08 * rng.standard_normal((SIDE, SIDE))
    return np.clip(a, 0, 1)


def _image(kind: str, a: np.ndarray) -> tuple[Image.Image, str]:
    """The picture `a` (floats in [0, 1]) stored as one kind of file: (image, format)."""
    u8 = np.rint(a * 255).astype(np.uint8)
    if kind == "png8":
        return Image.fromarray(u8), "PNG"
    if kind == "png16":
        return Image.fromarray(np.rint(a * 65535).astype(np.uint16)), "PNG"
    if kind == "tif16":
        return Image.fromarray(np.rint(a * 65535).astype(np.uint16)), "TIFF"
    if kind == "palette":
        return Image.fromarray(u8).convert("RGB").quantize(64), "PNG"
    if kind == "gif":
        return Image.fromarray(u8).convert("P"), "GIF"
    if kind == "rgb":
        rgb = np.stack([u8, np.roll(u8, 7, 1), 255 - u8], -1)
        return Image.fromarray(rgb), "PNG"
    if kind == "rgba":
        rgba = np.stack([u8, u8 // 2, np.roll(u8, 3, 0), 255 - u8], -1)
        return Image.fromarray(rgba), "PNG"
    if kind == "float_tif":
        return Image.fromarray(a.astype(np.float32)), "TIFF"
    raise ValueError(kind)


def _crop(im: Image.Image) -> Image.Image:
    """The 32x32 piece of the film that the map's patch centred on CENTRE covers."""
    box = (CENTRE - HALF, CENTRE - HALF, CENTRE + HALF, CENTRE + HALF)
    return im.crop(box)


def _bytes(im: Image.Image, fmt: str) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt)
    return b.getvalue()


def _via_dataset(tmp, data: bytes, ext: str) -> np.ndarray:
    (tmp / "test").mkdir(parents=True)
    (tmp / "test" / f"A_000_b{ext}").write_bytes(data)
    clear_cache()
    return load_folder(tmp).split("test").x[0, :, :, 0]


class _Spy:
    """A stand-in model that records the patches the anatomy map feeds it."""

    def __init__(self):
        self.inputs = [SimpleNamespace(shape=(None, 32, 32, 1))]
        self.seen: list[np.ndarray] = []

    def predict_on_batch(self, xb):
        self.seen.append(np.array(xb))
        return np.full((len(xb), 4), 0.25, np.float32)


KINDS = ["png8", "png16", "tif16", "palette", "gif", "rgb", "rgba", "float_tif"]
EXT = {"PNG": ".png", "TIFF": ".tif", "GIF": ".gif"}


@pytest.mark.parametrize("kind", KINDS)
def test_same_file_same_model_input_on_every_path(tmp_path, kind):
    im, fmt = _image(kind, _film_u8())
    full, crop = _bytes(im, fmt), _bytes(_crop(im), fmt)
    ext = EXT[fmt]

    # a whole film, resized to 32x32: dataset loader == upload reader == to_patch
    ds_full = _via_dataset(tmp_path / "full", full, ext)
    up_full = patch_input(read_image(full, f"film{ext}"))
    with Image.open(io.BytesIO(full)) as opened:
        direct = to_patch(opened)
    np.testing.assert_array_equal(ds_full, up_full)
    np.testing.assert_array_equal(ds_full, direct)

    # a 32x32 patch file: dataset loader == upload reader == the map's patch on that spot
    ds_crop = _via_dataset(tmp_path / "crop", crop, ext)
    up_crop = patch_input(read_image(crop, f"patch{ext}"))
    spy = _Spy()
    amap = anatomy_map(spy, read_image(full, f"film{ext}"), stride=32, smooth=0)
    gw = amap.grid_shape[1]
    fed = np.concatenate(spy.seen)[:, :, :, 0]
    map_patch = fed[(CENTRE // 32) * gw + CENTRE // 32]
    np.testing.assert_array_equal(ds_crop, up_crop)
    np.testing.assert_array_equal(ds_crop, map_patch)
    assert ds_crop.dtype == map_patch.dtype == np.float32
    assert 0.0 <= ds_crop.min() and ds_crop.max() <= 1.0 and ds_crop.std() > 0.01


def test_bit_depths_agree_on_the_same_picture():
    """An 8-bit and a 16-bit file of the same picture give the same patch (to rounding)."""
    a = _film_u8()
    p8 = patch_input(read_image(_bytes(*_image("png8", a)), "a.png"))
    p16 = patch_input(read_image(_bytes(*_image("png16", a)), "b.png"))
    pf = patch_input(read_image(_bytes(*_image("float_tif", a)), "c.tif"))
    assert np.abs(p8 - p16).max() <= 1 / 255 and np.abs(pf - p16).max() <= 1 / 255


def test_float_out_of_range_is_min_maxed_everywhere(tmp_path):
    a = _film_u8() * 3000.0 - 500.0        # e.g. raw detector values
    im = Image.fromarray(a.astype(np.float32))
    data = _bytes(im, "TIFF")
    up = read_image(data, "raw.tif")
    assert up.min() == 0.0 and up.max() == 1.0
    np.testing.assert_array_equal(_via_dataset(tmp_path, data, ".tif"), patch_input(up))


def test_model_input_quantises_then_bicubic():
    rng = np.random.default_rng(0)
    big = rng.random((70, 90))
    u8 = preprocess.to_u8(big)
    ref = np.asarray(Image.fromarray(u8).resize((32, 32), Image.Resampling.BICUBIC), np.float32) / 255
    np.testing.assert_array_equal(preprocess.to_model_input(big), ref)
    np.testing.assert_array_equal(preprocess.to_model_input(u8), ref)                  # uint8 as is
    np.testing.assert_array_equal(preprocess.to_model_input(u8.astype(np.uint16) * 257), ref)


def test_gamma_means_the_exponent_everywhere():
    rng = np.random.default_rng(1)
    a = rng.random((64, 64)).astype(np.float32)
    lo, hi = np.percentile(a, [2, 99.5])
    v = np.clip((a - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(preprocess.window(a, 2.0), v ** 2, rtol=1e-6)
    np.testing.assert_allclose(preprocess.window(a, 0.5), v ** 0.5, rtol=1e-6)
    film = np.pad(a, ((96, 96), (96, 96)), mode="reflect")   # 256x256: to_film keeps the size
    np.testing.assert_array_equal(to_film(film, window=True, gamma=2.0),
                                  preprocess.window(film, 2.0).astype(np.float32))
    # the phantom's films: the recipe they were rendered with before this module existed
    assert FILM_GAMMA == 0.5
    ref = np.round(np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1) ** 0.5 * 255).astype(np.uint8)
    np.testing.assert_array_equal(phantom_window(a), ref)
