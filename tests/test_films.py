"""Films datasets (whole films + NAME_labels.png): loading, zips, refusals, the phantom's films."""
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from xray_core.data import films as F
from xray_core.errors import DataError

SIDE = 80   # tiny films: every test here reads in milliseconds


def _film_and_labels(rng, side=SIDE):
    """A film whose brightness follows its label map (background dark, lung darker, ...)."""
    y = np.zeros((side, side), np.uint8)
    q = side // 4
    y[q:3 * q, q // 2:side // 2 - 2] = 2
    y[q:3 * q, side // 2 + 2:side - q // 2] = 2
    y[2 * q:3 * q + 4, side // 2 - 8:side // 2 + 8] = 3
    y[q - 4:q, q // 2:side - q // 2] = 1
    x = (np.array([120, 220, 40, 170], np.float64)[y] + rng.normal(0, 8, y.shape)).clip(0, 255).astype(np.uint8)
    return x, y


def write_films(root, sizes=(4, 2, 2), side=SIDE, seed=0, splits=("train", "validation", "test")):
    rng = np.random.default_rng(seed)
    k = 0
    for split, n in zip(splits, sizes):
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            k += 1
            x, y = _film_and_labels(rng, side)
            Image.fromarray(x).save(d / f"F{k:03d}.png")
            Image.fromarray(y).save(d / f"F{k:03d}_labels.png")
    return root


def zip_folder(folder, zpath, top="films"):
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, _, files in os.walk(folder):
            for f in files:
                p = os.path.join(dirpath, f)
                zf.write(p, f"{top}/{os.path.relpath(p, folder)}")
    return zpath


def one_line_error(fn, *args, **kw) -> str:
    with pytest.raises(DataError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


def test_a_films_folder_loads_as_float_films_and_uint8_label_maps(tmp_path):
    root = write_films(tmp_path / "films")
    ds = F.load_films_folder(root, side=SIDE)
    assert list(ds.splits) == ["train", "validation", "test"]
    assert [len(ds.split(s)) for s in ds.splits] == [4, 2, 2]
    tr = ds.split("train")
    assert tr.x.shape == (4, SIDE, SIDE, 1) and tr.x.dtype == np.float32
    assert tr.y.shape == (4, SIDE, SIDE) and tr.y.dtype == np.uint8
    assert 0.0 <= tr.x.min() and tr.x.max() <= 1.0
    assert set(np.unique(tr.y)) == {0, 1, 2, 3}
    assert list(tr.names) == ["F001", "F002", "F003", "F004"]
    # the label map read back is exactly the one written, the film its pixels / 255
    y = np.asarray(Image.open(root / "train" / "F002_labels.png"))
    x = np.asarray(Image.open(root / "train" / "F002.png"))
    assert np.array_equal(tr.y[1], y)
    assert np.allclose(tr.x[1, :, :, 0], x / 255.0)
    assert ds.warnings == []
    assert F.dataset_kind(root) == "films"
    assert ds.summary()["train"]["films"] == 4


def test_films_of_another_size_are_resized_with_their_label_maps(tmp_path):
    root = write_films(tmp_path / "films", sizes=(2, 1, 1), side=128)
    ds = F.load_films(root)           # default size: 256x256
    tr = ds.split("train")
    assert tr.x.shape == (2, 256, 256, 1) and tr.y.shape == (2, 256, 256)
    y = np.asarray(Image.open(root / "train" / "F001_labels.png"))
    assert np.array_equal(tr.y[0], np.repeat(np.repeat(y, 2, 0), 2, 1))   # nearest: every label kept


def test_a_zip_with_a_top_folder_loads_the_same_films(tmp_path):
    root = write_films(tmp_path / "films")
    z = zip_folder(root, tmp_path / "films.zip")
    assert F.dataset_kind(z) == "films"
    a, b = F.load_films_folder(root, side=SIDE), F.load_films_zip(z, side=SIDE)
    for s in a.splits:
        assert np.array_equal(a.split(s).x, b.split(s).x)
        assert np.array_equal(a.split(s).y, b.split(s).y)
        assert list(a.split(s).names) == list(b.split(s).names)


def test_only_train_sets_films_aside_for_validation_and_test(tmp_path):
    root = write_films(tmp_path / "films", sizes=(20,), splits=("train",))
    ds = F.load_films_folder(root, seed=3, side=SIDE)
    n = {s: len(ds.split(s)) for s in ds.splits}
    assert n == {"train": 14, "validation": 3, "test": 3}
    names = [set(ds.split(s).names) for s in ds.splits]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert any("set aside as validation" in w for w in ds.warnings)


def test_no_label_maps_at_all_is_refused(tmp_path):
    root = write_films(tmp_path / "films")
    for p in root.rglob("*_labels.png"):
        p.unlink()
    msg = one_line_error(F.load_films_folder, root, side=SIDE)
    assert "no label maps" in msg and "_labels.png" in msg


def test_a_film_without_its_label_map_is_refused_by_name(tmp_path):
    root = write_films(tmp_path / "films")
    (root / "validation" / "F006_labels.png").unlink()
    msg = one_line_error(F.load_films_folder, root, side=SIDE)
    assert "F006.png" in msg and "without its label map" in msg and "F006_labels.png" in msg


def test_a_label_map_of_another_size_is_refused(tmp_path):
    root = write_films(tmp_path / "films")
    Image.fromarray(np.zeros((SIDE // 2, SIDE // 2), np.uint8)).save(root / "test" / "F008_labels.png")
    msg = one_line_error(F.load_films_folder, root, side=SIDE)
    assert "F008_labels.png" in msg and "same size" in msg and f"{SIDE // 2}x{SIDE // 2}" in msg


def test_label_values_outside_0_to_3_are_refused(tmp_path):
    root = write_films(tmp_path / "films")
    y = np.asarray(Image.open(root / "train" / "F001_labels.png")).copy()
    Image.fromarray(((y > 0) * 255).astype(np.uint8)).save(root / "train" / "F001_labels.png")
    msg = one_line_error(F.load_films_folder, root, side=SIDE)
    assert "F001_labels.png" in msg and "outside 0..3" in msg and "255" in msg


def test_a_coloured_label_map_is_refused(tmp_path):
    root = write_films(tmp_path / "films")
    rgb = np.zeros((SIDE, SIDE, 3), np.uint8)
    rgb[..., 0] = 2
    Image.fromarray(rgb).save(root / "train" / "F001_labels.png")
    assert "coloured" in one_line_error(F.load_films_folder, root, side=SIDE)


def _patch_folder(root):
    rng = np.random.default_rng(0)
    for split in ("train", "validation", "test"):
        (root / split).mkdir(parents=True)
        for i, letter in enumerate("bclh"):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(
                root / split / f"R0001_{i:03d}_{letter}.png")
    return root


def test_a_patch_dataset_is_refused_where_films_are_expected_and_films_where_patches_are(tmp_path):
    patches = _patch_folder(tmp_path / "patches")
    assert F.dataset_kind(patches) == "patches"
    msg = one_line_error(F.load_films_folder, patches)
    assert "patch dataset" in msg and "_labels.png" in msg
    assert "patch dataset" in one_line_error(F.require_films, patches)
    z = zip_folder(patches, tmp_path / "patches.zip")
    assert F.dataset_kind(z) == "patches"
    assert "patch dataset" in one_line_error(F.load_films_zip, z)
    F.require_patches(patches)                      # patches where patches are expected: fine

    films = write_films(tmp_path / "films")
    F.require_films(films)
    assert "not patches" in one_line_error(F.require_patches, films)
    assert "not patches" in one_line_error(F.require_patches, zip_folder(films, tmp_path / "f.zip"))

    classes = tmp_path / "classes" / "train" / "lung"
    classes.mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(classes / "a.png")
    assert F.dataset_kind(tmp_path / "classes") == "patches"


def test_a_lone_patch_sized_film_is_refused(tmp_path):
    d = tmp_path / "films" / "train"
    d.mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(d / "A.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(d / "A_labels.png")
    assert "a patch, not a whole film" in one_line_error(F.load_films_folder, tmp_path / "films")


def test_bad_sources_are_one_line_errors(tmp_path):
    assert "no such file" in one_line_error(F.load_films, tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hello")
    assert "not a folder or a .zip" in one_line_error(F.load_films, tmp_path / "x.txt")
    (tmp_path / "bad.zip").write_bytes(b"PK not really")
    assert "not a zip" in one_line_error(F.load_films, tmp_path / "bad.zip")
    (tmp_path / "empty").mkdir()
    assert "no films found" in one_line_error(F.load_films, tmp_path / "empty")


def test_the_phantoms_films_come_with_their_label_maps(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_CACHE", str(tmp_path / "cache"))
    ds = F.phantom_films(3, 1, 1, seed=0)
    assert [len(ds.split(s)) for s in ("train", "validation", "test")] == [3, 1, 1]
    tr = ds.split("train")
    assert tr.x.shape == (3, 256, 256, 1) and tr.x.dtype == np.float32
    assert tr.y.dtype == np.uint8 and set(np.unique(tr.y)) == {0, 1, 2, 3}
    assert list(tr.names) == ["PH0001", "PH0002", "PH0003"]
    assert list(ds.split("test").names) == ["PH0005"]
    # the very films the phantom renders (the test split's first film, whatever its id)
    from xray_core.data.phantom.build import phantom_radiographs
    _, film, labels = phantom_radiographs(1, 0, "test")[0]
    assert np.array_equal(ds.split("test").y[0], labels)
    assert np.allclose(ds.split("test").x[0, :, :, 0], film / 255.0)
    # cached: a second call reads the same arrays back from disk
    assert list((tmp_path / "cache").glob("phantom_films_*.npz"))
    again = F.phantom_films(3, 1, 1, seed=0)
    assert np.array_equal(again.split("train").y, tr.y)
