"""xray_core.maps.inference: patch prediction, anatomy maps, overlays, the CLI batch, metrics."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from xray_core import CLASSES  # noqa: E402
from xray_core.errors import ConfigError, ImageError  # noqa: E402
from xray_core.maps.inference import (  # noqa: E402
    CLASS_COLOURS, AnatomyMap, anatomy_map, classify_files, evaluate_map, overlay, predict_patches,
)


class CentreModel:
    """A fake model: the class is the centre pixel's brightness quartile (one-hot).
    Lets map tests check geometry exactly: label(pixel) == quartile(pixel) at stride 1."""

    def __init__(self):
        self.calls = []

    def predict_on_batch(self, x):
        self.calls.append(x.shape)
        c = np.clip((x[:, 16, 16, 0] * 4).astype(int), 0, 3)
        return np.eye(4, dtype=np.float32)[c]


def quartile(img8: np.ndarray) -> np.ndarray:
    return np.clip((img8.astype(np.float32) / np.float32(255.0) * 4).astype(int), 0, 3)


@pytest.fixture(scope="module")
def keras_model():
    import keras
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(4, activation="softmax")])


def png_bytes(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    return b.getvalue()


def blobs(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 film with regions of every quartile (smooth, so maps are non-trivial)."""
    yy, xx = np.mgrid[0:h, 0:w]
    f = 0.5 + 0.5 * np.sin(xx / w * 6.0 + seed) * np.cos(yy / h * 5.0)
    return np.clip(np.rint(f * 255), 0, 255).astype(np.uint8)


# ---- predict_patches ------------------------------------------------------------------------
def test_predict_patches_shapes_and_batches(keras_model):
    x = np.random.default_rng(0).random((10, 32, 32)).astype(np.float32)
    p = predict_patches(keras_model, x)
    assert p.shape == (10, 4) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(predict_patches(keras_model, x[..., None]), p, atol=1e-6)
    np.testing.assert_allclose(predict_patches(keras_model, x, batch=3), p, atol=1e-6)
    assert not np.allclose(p[0], p[1])   # really per patch
    with pytest.raises(ImageError):
        predict_patches(keras_model, np.zeros((2, 28, 28)))
    with pytest.raises(ConfigError):
        predict_patches(keras_model, x, batch=0)


def test_predict_patches_batches_the_calls():
    m = CentreModel()
    predict_patches(m, np.zeros((10, 32, 32), np.float32), batch=4)
    assert m.calls == [(4, 32, 32, 1), (4, 32, 32, 1), (2, 32, 32, 1)]


def test_predict_patches_thread_safe(keras_model):
    xs = [np.random.default_rng(i).random((300, 32, 32, 1)).astype(np.float32) for i in range(4)]
    want = [predict_patches(keras_model, x) for x in xs]
    got = [None] * 4

    def run(i):
        for _ in range(5):
            got[i] = predict_patches(keras_model, xs[i], batch=64)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)


# ---- anatomy_map ------------------------------------------------------------------------------
def test_map_stride1_patches_are_centred_on_each_pixel():
    f8 = blobs(256, 256)
    amap = anatomy_map(CentreModel(), f8 / 255.0, stride=1, smooth=0)
    assert isinstance(amap, AnatomyMap)
    np.testing.assert_array_equal(amap.labels, quartile(f8))
    np.testing.assert_array_equal(amap.labels_film, quartile(f8))
    assert amap.grid_shape == (256, 256)


def test_map_original_size_values_and_shares():
    f8 = blobs(300, 200)
    amap = anatomy_map(CentreModel(), f8 / 255.0, stride=4)
    assert amap.labels.shape == (300, 200) and amap.labels.dtype == np.uint8
    assert set(np.unique(amap.labels)) <= {0, 1, 2, 3} and len(np.unique(amap.labels)) == 4
    assert amap.probs.shape == (256, 171, 4) and amap.probs.dtype == np.float32
    assert amap.labels_film.shape == (256, 171)
    assert set(amap.shares) == set(CLASSES)
    assert sum(amap.shares.values()) == pytest.approx(1.0)
    for i, c in enumerate(CLASSES):
        assert amap.shares[c] == pytest.approx(np.mean(amap.labels == i))
    # the map follows the picture: ~agrees with each pixel's own quartile
    assert np.mean(amap.labels == quartile(f8)) > 0.9
    assert amap.stride == 4 and amap.seconds > 0


def test_map_big_input_labels_at_input_size():
    f8 = blobs(1024, 768)
    amap = anatomy_map(CentreModel(), f8 / 255.0, stride=8)
    assert amap.labels.shape == (1024, 768) and amap.probs.shape[:2] == (256, 192)
    assert np.mean(amap.labels == quartile(f8)) > 0.9


def test_stride_changes_grid_and_is_validated():
    film = blobs(256, 256) / 255.0
    m = CentreModel()
    a4 = anatomy_map(m, film, stride=4)
    a8 = anatomy_map(m, film, stride=8)
    assert a4.grid_shape == (64, 64) and a8.grid_shape == (32, 32)
    assert a4.labels.shape == a8.labels.shape == (256, 256)
    assert not np.array_equal(a4.probs, a8.probs)
    for bad in (0, 33, 2.5, True, "4", -1):
        with pytest.raises(ConfigError):
            anatomy_map(m, film, stride=bad)


def test_map_batches_bounded():
    m = CentreModel()
    anatomy_map(m, blobs(256, 256) / 255.0, stride=2, batch=1000)
    assert max(s[0] for s in m.calls) <= 1000
    assert sum(s[0] for s in m.calls) == 128 * 128


def test_map_with_keras_model(keras_model):
    amap = anatomy_map(keras_model, blobs(200, 180) / 255.0, stride=8)
    assert amap.labels.shape == (200, 180)
    np.testing.assert_allclose(amap.probs.sum(axis=-1), 1.0, atol=1e-4)


def test_map_rejects_bad_film():
    with pytest.raises(ImageError):
        anatomy_map(CentreModel(), np.zeros((3, 64, 64)))
    bad = np.zeros((64, 64))
    bad[3, 3] = np.nan
    with pytest.raises(ImageError):
        anatomy_map(CentreModel(), bad)


# ---- overlay -------------------------------------------------------------------------------------
def test_overlay_colours():
    film = np.full((40, 40), 0.5, np.float32)
    labels = np.zeros((40, 40), np.uint8)
    labels[:10], labels[10:20], labels[20:30] = 1, 2, 3
    full = overlay(film, labels, opacity=1.0)
    assert full.dtype == np.uint8 and full.shape == (40, 40, 3)
    assert tuple(full[0, 0]) == CLASS_COLOURS[1]
    assert tuple(full[15, 0]) == CLASS_COLOURS[2]
    assert tuple(full[25, 0]) == CLASS_COLOURS[3]
    assert tuple(full[35, 0]) == (128, 128, 128)      # background: the film, untinted
    half = overlay(film, labels, opacity=0.45)
    assert tuple(half[35, 0]) == (128, 128, 128)
    assert half[15, 0, 2] > half[15, 0, 0]              # lung is bluish
    small = overlay(film, labels[::2, ::2])             # labels resized to the film
    assert small.shape == (40, 40, 3)
    with pytest.raises(ConfigError):
        overlay(film, labels, opacity=1.5)


# ---- classify_files ---------------------------------------------------------------------------
def test_classify_files_mixed_batch(tmp_path, keras_model):
    patch = tmp_path / "patch.png"
    patch.write_bytes(png_bytes(blobs(32, 32)))
    film = tmp_path / "film.png"
    film.write_bytes(png_bytes(blobs(300, 200)))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"<html>oops</html>")
    missing = tmp_path / "missing.png"
    maps = tmp_path / "maps"
    paths = [str(patch), str(broken), str(film), str(missing)]

    out = classify_files(keras_model, paths, map_dir=str(maps), stride=8)
    json.dumps(out)   # JSON-ready
    assert [r["file"] for r in out] == paths
    assert [r["ok"] for r in out] == [True, False, True, False]

    p = out[0]
    assert p["label"] in CLASSES and set(p["probabilities"]) == set(CLASSES)
    assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
    assert "map" not in p and "shares" not in p                   # a patch gets no map

    assert "broken.png" in out[1]["error"] and "text/HTML" in out[1]["error"]
    assert "\n" not in out[1]["error"] and set(out[1]) == {"file", "ok", "error"}
    assert "missing.png" in out[3]["error"]

    f = out[2]
    assert f["map"] == str(maps / "film.png")
    assert sum(f["shares"].values()) == pytest.approx(1.0)
    m = Image.open(f["map"])
    assert m.size == (200, 300) and m.mode == "L"
    assert set(np.unique(np.asarray(m))) <= {0, 1, 2, 3}


def test_classify_files_whole_image_label_is_what_model_sees(tmp_path):
    class Fixed:
        def predict_on_batch(self, x):
            return np.tile(np.array([[0.1, 0.2, 0.6, 0.1]], np.float32), (len(x), 1))

    (tmp_path / "a.png").write_bytes(png_bytes(blobs(150, 150)))
    out = classify_files(Fixed(), [str(tmp_path / "a.png")])
    assert out[0]["label"] == "lung" and out[0]["map"] is None
    assert out[0]["shares"]["lung"] == pytest.approx(1.0)


def test_classify_files_never_overwrites_inputs(tmp_path):
    src = tmp_path / "film.png"
    data = png_bytes(blobs(160, 160))
    src.write_bytes(data)
    other = tmp_path / "sub"
    other.mkdir()
    (other / "film.png").write_bytes(png_bytes(blobs(140, 140, seed=1)))
    out = classify_files(CentreModel(), [str(src), str(other / "film.png")], map_dir=str(tmp_path))
    assert src.read_bytes() == data                                 # the input survived
    assert out[0]["map"] == str(tmp_path / "film_2.png")
    assert out[1]["map"] == str(tmp_path / "film_3.png")
    assert Image.open(out[1]["map"]).size == (140, 140)


def test_classify_files_survives_model_errors(tmp_path):
    class Flaky:
        def predict_on_batch(self, x):
            if float(x.mean()) > 0.5:
                raise RuntimeError("boom\nsecond line")
            return np.tile(np.eye(4, dtype=np.float32)[:1], (len(x), 1))

    (tmp_path / "bright.png").write_bytes(png_bytes(np.full((32, 32), 250, np.uint8)))
    (tmp_path / "dark.png").write_bytes(png_bytes(np.full((32, 32), 5, np.uint8)))
    out = classify_files(Flaky(), [str(tmp_path / "bright.png"), str(tmp_path / "dark.png")])
    assert out[0]["ok"] is False and out[0]["error"] == "bright.png: unexpected RuntimeError: boom second line"
    assert out[1]["ok"] is True and out[1]["label"] == "background"


def test_classify_files_dicom_and_stride_check(tmp_path):
    spec = importlib.util.spec_from_file_location("mdf", ROOT / "scripts" / "make_dicom_fixture.py")
    mdf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mdf)
    (tmp_path / "scan.dcm").write_bytes(mdf.make_dicom(blobs(130, 130).astype(np.uint16) * 16, bits_stored=12))
    out = classify_files(CentreModel(), [str(tmp_path / "scan.dcm")], map_dir=str(tmp_path / "m"))
    assert out[0]["ok"] and Image.open(out[0]["map"]).size == (130, 130)
    with pytest.raises(ConfigError):
        classify_files(CentreModel(), [], stride=0)


# ---- evaluate_map / measure_maps --------------------------------------------------------------
def test_evaluate_map():
    t = np.zeros((10, 10), np.uint8)
    t[:5] = 2
    perfect = evaluate_map(t, t)
    assert perfect["pixel_accuracy"] == 1.0 and perfect["dice"] == {"background": 1.0, "lung": 1.0}
    p = t.copy()
    p[:5, :5] = 3       # half the lung called heart
    ev = evaluate_map(p, t)
    assert ev["pixel_accuracy"] == pytest.approx(0.75)
    assert ev["dice"]["lung"] == pytest.approx(2 * 25 / (25 + 50))
    assert ev["dice"]["heart"] == 0.0 and "clavicle" not in ev["dice"]
    assert ev["mean_dice"] == pytest.approx(np.mean(list(ev["dice"].values())))
    json.dumps(ev)
    with pytest.raises(ImageError):
        evaluate_map(t, t[:5])


def test_measure_maps_script(tmp_path):
    spec = importlib.util.spec_from_file_location("measure_maps", ROOT / "scripts" / "measure_maps.py")
    mm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mm)
    for i in range(2):
        f8 = blobs(256, 256, seed=i)
        Image.fromarray(f8).save(tmp_path / f"F{i}.png")
        Image.fromarray(quartile(f8).astype(np.uint8)).save(tmp_path / f"F{i}_labels.png")
    res = mm.measure(CentreModel(), str(tmp_path), stride=1, smooth=0)
    assert res["films"] == 2 and res["pixel_accuracy"] == 1.0
    assert res["dice"] == {c: 1.0 for c in CLASSES} and res["ms_per_film"] > 0


def test_load_model(tmp_path, keras_model):
    from xray_core.errors import DataError
    from xray_core.maps.inference import load_model
    good = tmp_path / "m.keras"
    keras_model.save(good)
    m = load_model(str(good))
    x = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(predict_patches(m, x), predict_patches(keras_model, x), atol=1e-6)
    with pytest.raises(DataError, match="no such model file"):
        load_model(str(tmp_path / "nope.keras"))
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot load the model"):
        load_model(str(junk))
    import keras
    wrong = tmp_path / "wrong.keras"
    keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]).save(wrong)
    with pytest.raises(DataError, match="expected"):
        load_model(str(wrong))


def test_smoothing_removes_isolated_patch_noise_but_keeps_regions():
    f8 = np.full((256, 256), 220, np.uint8)   # "heart" everywhere (quartile 3)
    f8[:, :128] = 150                           # left half "lung" (quartile 2)
    f8[60:63, 180:183] = 10                     # a 3x3 speck of "background"
    raw = anatomy_map(CentreModel(), f8 / 255.0, stride=1, smooth=0).labels
    smooth = anatomy_map(CentreModel(), f8 / 255.0, stride=1, smooth=8).labels
    assert raw[61, 181] == 0 and smooth[61, 181] == 3      # the speck is noise: gone
    assert (smooth[:, :120] == 2).all() and (smooth[:, 136:] == 3).mean() > 0.99  # regions stay
    with pytest.raises(ConfigError):
        anatomy_map(CentreModel(), f8 / 255.0, smooth=-1)


def test_integer_films_are_scaled_not_clipped():
    f8 = np.full((256, 256), 220, np.uint8)
    f8[:, :128] = 150
    as_int = anatomy_map(CentreModel(), f8, stride=4, smooth=0).labels
    as_float = anatomy_map(CentreModel(), f8 / 255.0, stride=4, smooth=0).labels
    np.testing.assert_array_equal(as_int, as_float)
