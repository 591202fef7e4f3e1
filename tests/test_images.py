"""xray_core.data.images: every accepted format, DICOM semantics, every refusal."""
from __future__ import annotations

import importlib.util
import io
import struct
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xray_core.errors import ImageError  # noqa: E402
from xray_core.data.images import (  # noqa: E402
    MAX_BYTES, is_radiograph, patch_input, read_image, to_film,
)

_spec = importlib.util.spec_from_file_location("make_dicom_fixture", ROOT / "scripts" / "make_dicom_fixture.py")
_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixture)
make_dicom = _fixture.make_dicom


def enc(arr_or_im, fmt: str, **kw) -> bytes:
    im = arr_or_im if isinstance(arr_or_im, Image.Image) else Image.fromarray(arr_or_im)
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def gradient(h=64, w=64, top=255, dtype=np.uint8):
    return (np.arange(h * w).reshape(h, w) % (top + 1)).astype(dtype)


def refused(data: bytes, name: str = "f.png") -> str:
    with pytest.raises(ImageError) as ei:
        read_image(data, name)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"{name}: "), msg
    return msg


# ---- accepted formats ----------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP", "GIF"])
def test_lossless_8bit_formats_exact(fmt):
    g = gradient()
    im = read_image(enc(g, fmt), f"a.{fmt.lower()}")
    assert im.dtype == np.float32 and im.shape == (64, 64)
    np.testing.assert_allclose(im, g / 255.0, atol=1e-6)


def test_jpeg_close():
    g = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    im = read_image(enc(g, "JPEG", quality=95), "a.jpg")
    assert im.shape == (64, 64)
    assert np.abs(im - g / 255.0).max() < 0.05


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_scaled_by_full_range(fmt):
    a = np.zeros((32, 32), np.uint16)
    a[0, 0], a[0, 1], a[0, 2] = 65535, 32768, 1000
    im = read_image(enc(a, fmt), f"a16.{fmt.lower()}")
    assert im[0, 0] == pytest.approx(1.0)
    assert im[0, 1] == pytest.approx(32768 / 65535, abs=1e-6)
    assert im[0, 2] == pytest.approx(1000 / 65535, abs=1e-6)   # not clipped as if /255
    assert im[5, 5] == 0.0


def test_float_tiff_in_unit_range_kept():
    a = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    assert Image.fromarray(a).mode == "F"
    im = read_image(enc(a, "TIFF"), "f.tif")
    np.testing.assert_allclose(im, a, atol=1e-6)


def test_gif_first_frame():
    f0 = Image.fromarray(np.full((32, 32), 40, np.uint8)).convert("P")
    f1 = Image.fromarray(np.full((32, 32), 220, np.uint8)).convert("P")
    b = io.BytesIO()
    f0.save(b, "GIF", save_all=True, append_images=[f1], duration=100)
    assert Image.open(io.BytesIO(b.getvalue())).n_frames == 2
    im = read_image(b.getvalue(), "anim.gif")
    assert np.allclose(im, 40 / 255.0, atol=1 / 255)


def test_rgb_to_luminance_as_pillow_convert_L():
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16, 0] = 255          # red
    rgb[:, 16:32, 1] = 255        # green
    rgb[:, 32:, :] = 128          # grey
    im = read_image(enc(rgb, "PNG"), "rgb.png")
    assert im[0, 0] == pytest.approx(76 / 255, abs=1e-6)      # round(0.299 * 255)
    assert im[0, 20] == pytest.approx(150 / 255, abs=1e-6)    # round(0.587 * 255)
    assert im[0, 40] == pytest.approx(128 / 255, abs=1e-6)
    np.testing.assert_array_equal(im * 255, np.asarray(Image.fromarray(rgb).convert("L"), np.float32))


def test_palette_and_rgba():
    p = Image.new("P", (32, 32))
    p.putpalette([0, 0, 0, 255, 255, 255, 0, 0, 255] + [0] * (768 - 9))
    px = np.zeros((32, 32), np.uint8)
    px[:, 10:20] = 1
    px[:, 20:] = 2
    p.putdata(px.ravel().tolist())
    im = read_image(enc(p, "PNG"), "pal.png")
    assert im[0, 0] == 0.0 and im[0, 15] == pytest.approx(1.0) and im[0, 25] == pytest.approx(29 / 255, abs=1e-6)
    rgba = np.full((32, 32, 4), 200, np.uint8)
    rgba[..., 3] = 0   # fully transparent: alpha is dropped, not composited
    assert np.allclose(read_image(enc(rgba, "PNG"), "a.png"), 200 / 255, atol=1e-4)


def test_content_not_extension_decides():
    g = gradient()
    for name in ("really_png.jpg", "really_png.dcm", "noext"):
        np.testing.assert_allclose(read_image(enc(g, "PNG"), name), g / 255.0, atol=1e-6)
    dcm = make_dicom(gradient(32, 32))
    assert read_image(dcm, "scan.png").shape == (32, 32)


# ---- DICOM ---------------------------------------------------------------------------------
def test_dicom_monochrome1_is_inverted_monochrome2():
    a = gradient(48, 40, top=4095, dtype=np.uint16)
    m2 = read_image(make_dicom(a, bits_stored=12), "m2.dcm")
    m1 = read_image(make_dicom(a, bits_stored=12, photometric="MONOCHROME1"), "m1.dcm")
    assert m2.min() == 0.0 and m2.max() == 1.0
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    # and with a window: still the exact complement
    w2 = read_image(make_dicom(a, bits_stored=12, window=(1500, 1000)), "w2.dcm")
    w1 = read_image(make_dicom(a, bits_stored=12, window=(1500, 1000), photometric="MONOCHROME1"), "w1.dcm")
    np.testing.assert_allclose(w1, 1.0 - w2, atol=1e-6)


def test_dicom_8_and_16_bit_minmax():
    a8 = (np.arange(32 * 32).reshape(32, 32) % 200 + 20).astype(np.uint8)   # 20..219
    im8 = read_image(make_dicom(a8), "a8.dcm")
    np.testing.assert_allclose(im8, (a8 - 20) / 199.0, atol=1e-6)
    a16 = (np.arange(32 * 32).reshape(32, 32) * 50 + 100).astype(np.uint16)
    im16 = read_image(make_dicom(a16, bits_stored=16), "a16.dcm")
    np.testing.assert_allclose(im16, (a16 - 100.0) / (a16.max() - 100.0), atol=1e-6)


def test_dicom_window_is_used_first_value():
    a = np.tile(np.arange(2048, dtype=np.uint16)[::32], (64, 1))   # 0..2016, 64 columns
    plain = read_image(make_dicom(a, bits_stored=12), "p.dcm")
    win = read_image(make_dicom(a, bits_stored=12, window=([1000, 200], [501, 50])), "w.dcm")
    v = a[0].astype(float)
    expect = np.clip((v - 999.5) / 500 + 0.5, 0, 1)            # PS3.3 LINEAR window 1000/501
    np.testing.assert_allclose(win[0], expect, atol=1e-6)
    assert not np.allclose(win, plain, atol=0.05)
    assert win[0, v.tolist().index(992)] == pytest.approx((992 - 999.5) / 500 + 0.5, abs=1e-6)


def test_dicom_rescale_slope_intercept_applied_before_window():
    a = np.tile(np.arange(0, 1024, 16, dtype=np.uint16), (64, 1))   # stored 0..1008
    # modality value = 2 * stored - 1000; window centred on modality 0 (stored 500)
    im = read_image(make_dicom(a, bits_stored=12, slope=2.0, intercept=-1000.0, window=(0, 401)), "r.dcm")
    mod = 2.0 * a[0] - 1000.0
    expect = np.clip((mod + 0.5) / 400 + 0.5, 0, 1)
    np.testing.assert_allclose(im[0], expect, atol=1e-6)
    assert im[0, list(a[0]).index(496)] == pytest.approx((2 * 496 - 1000 + 0.5) / 400 + 0.5, abs=1e-6)


def test_dicom_signed_16bit_window():
    a = (np.arange(64 * 64).reshape(64, 64) - 2048).astype(np.int16)
    im = read_image(make_dicom(a, window=(0, 101)), "s.dcm")
    assert im[a <= -51].max() == 0.0 and im[a > 50].min() == 1.0
    assert im[a == 0][0] == pytest.approx(0.505, abs=1e-6)


def test_dicom_multiframe_uses_first_frame():
    f0 = gradient(32, 32, top=1000, dtype=np.uint16)
    frames = np.stack([f0, 4095 - f0, np.zeros_like(f0)])
    im = read_image(make_dicom(frames, bits_stored=12), "mf.dcm")
    np.testing.assert_allclose(im, f0 / 1000.0, atol=1e-6)


def test_dicom_headerless_and_rgb():
    a = gradient(32, 32, top=255, dtype=np.uint8)
    raw = make_dicom(a, preamble=False)
    assert raw[128:132] != b"DICM"
    np.testing.assert_allclose(read_image(raw, "raw.dcm"), a / 255.0, atol=1e-6)
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 1] = 255
    assert read_image(make_dicom(rgb, photometric="RGB"), "rgb.dcm")[0, 0] == pytest.approx(0.587, abs=1e-4)


def test_dicom_without_pixels_refused():
    msg = refused(make_dicom(gradient(32, 32), with_pixels=False), "report.dcm")
    assert msg == "report.dcm: DICOM file has no pixel data (not an image)"


def test_dicom_bomb_refused_from_header():
    import pydicom
    ds = pydicom.dcmread(io.BytesIO(make_dicom(gradient(32, 32))))
    ds.Rows, ds.Columns = 20000, 20000          # pixel data stays 1 KB
    b = io.BytesIO()
    ds.save_as(b, enforce_file_format=True)
    tracemalloc.start()
    msg = refused(b.getvalue(), "big.dcm")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "megapixels" in msg and peak < 50_000_000   # 400 MP were never decoded


def test_dicom_truncated_pixels_refused():
    d = make_dicom(gradient(64, 64, top=4095, dtype=np.uint16), bits_stored=12)
    assert "DICOM" in refused(d[:-3000], "cut.dcm")


# ---- refusals -------------------------------------------------------------------------------
def test_empty_refused():
    assert "empty" in refused(b"", "e.png")


@pytest.mark.parametrize("data,name", [
    (b"<!DOCTYPE html>\n<html><body>Not found</body></html>", "xray.png"),
    (b"   <svg xmlns='http://www.w3.org/2000/svg'></svg>", "xray.jpg"),
    (b"patient,age\nA,42\nB,51\n" * 20, "xray.dcm"),
])
def test_text_refused(data, name):
    assert "not an image: looks like text/HTML" in refused(data, name)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP", "GIF"])
def test_truncated_refused(fmt):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    d = enc(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8), fmt)
    msg = refused(d[: len(d) * 2 // 3], f"cut.{fmt.lower()}")
    assert msg.startswith(f"cut.{fmt.lower()}: truncated or damaged {fmt} file"), msg


def test_refuses_when_truncated_images_allowed_globally(monkeypatch):
    d = enc(gradient(), "PNG")
    assert read_image(d, "ok.png").shape == (64, 64)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert "LOAD_TRUNCATED_IMAGES" in refused(d[:-40], "cut.png")


def test_random_bytes_refused():
    data = np.random.default_rng(0).bytes(4096)
    assert "not a recognised image" in refused(data, "noise.png")


def test_damaged_header_refused():
    assert "damaged PNG" in refused(enc(gradient(), "PNG")[:20], "hdr.png")


def _patch_png_size(png: bytes, w: int, h: int) -> bytes:
    body = b"IHDR" + struct.pack(">II", w, h) + png[24:29]
    return png[:8] + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body)) + png[33:]


@pytest.mark.parametrize("w,h", [(8000, 8000), (100_000, 100_000)])
def test_png_bomb_refused_from_header(w, h):
    bomb = _patch_png_size(enc(gradient(), "PNG"), w, h)
    if w * h < Image.MAX_IMAGE_PIXELS:
        assert Image.open(io.BytesIO(bomb)).size == (w, h)   # the crafted header is valid
    tracemalloc.start()
    msg = refused(bomb, "bomb.png")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "refused before decoding" in msg
    assert peak < 5_000_000   # nothing the size of the image was ever allocated


def test_too_small_refused():
    assert "at least 16 px" in refused(enc(np.zeros((15, 64), np.uint8), "PNG"), "tiny.png")
    assert read_image(enc(np.zeros((16, 64), np.uint8), "PNG"), "ok.png").shape == (16, 64)


def test_aspect_refused():
    assert "aspect ratio" in refused(enc(np.zeros((20, 81), np.uint8), "PNG"), "strip.png")
    assert read_image(enc(np.zeros((20, 80), np.uint8), "PNG"), "ok.png").shape == (20, 80)


def test_file_size_limit():
    png = enc(gradient(), "PNG")
    msg = refused(png + b"\0" * (MAX_BYTES + 1 - len(png)), "huge.png")
    assert "MB" in msg and "limit" in msg


def test_non_bytes_refused():
    with pytest.raises(ImageError):
        read_image("not bytes", "s.png")


# ---- derived inputs ---------------------------------------------------------------------------
def test_patch_input_is_course_preprocess():
    rng = np.random.default_rng(0)
    p8 = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    out = patch_input(p8 / 255.0)
    assert out.dtype == np.float32 and out.shape == (32, 32)
    np.testing.assert_array_equal(out, p8.astype(np.float32) / np.float32(255.0))  # patches unchanged
    big = rng.integers(0, 256, (300, 200), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(big).resize((32, 32), Image.Resampling.BICUBIC), np.float32) / 255
    np.testing.assert_array_equal(patch_input(big / 255.0), ref)


def test_is_radiograph():
    assert not is_radiograph(np.zeros((127, 127)))
    assert is_radiograph(np.zeros((128, 40)))
    assert is_radiograph(np.zeros((40, 128)))


def test_to_film_scale_box_and_window():
    a = np.random.default_rng(0).random((384, 512)).astype(np.float32)
    f = to_film(a)
    assert f.shape == (192, 256) and f.dtype == np.float32
    np.testing.assert_allclose(f[0, 0], a[:2, :2].mean(), atol=1e-5)     # BOX = 2x2 mean
    assert to_film(np.zeros((200, 130))).shape == (256, 166)              # enlarged
    same = np.random.default_rng(1).random((256, 256)).astype(np.float32)
    np.testing.assert_array_equal(to_film(same), same)                    # already film scale
    w = to_film(a * 0.5 + 0.25, window=True)
    assert w.min() == 0.0 and w.max() == 1.0
    lo, hi = np.percentile(f * 0.5 + 0.25, [2, 99.5])
    mid = float((f[10, 10] * 0.5 + 0.25 - lo) / (hi - lo))
    if 0 < mid < 1:
        assert w[10, 10] == pytest.approx(mid ** 2, abs=1e-4)              # gamma 2
