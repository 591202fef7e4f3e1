"""xray_core.data.load: layouts, splits, image modes, errors, zips (incl. hostile ones), cache."""
from __future__ import annotations

import io
import os
import stat
import struct
import sys
import threading
import types
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import xray_core.data.load as D
import xray_core.data.zipsafe as Z
from xray_core.data.load import load_dataset, load_folder, load_zip, safe_extract, to_patch
from xray_core.errors import ConfigError, DataError, XrayLabError

from tests.fixtures_data import (
    VALUES, class_layout, course_layout, labels_from_pixels, patch_sizes, png_bytes,
    rids, tree, write_image, zip_dir, zip_members,
)

# the real data: ../shared/data next to the repo (conftest.SHARED_DATA); skipped where absent
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "jsrt_patches"


@pytest.fixture(autouse=True)
def _fresh_cache():
    D.clear_cache()
    yield
    D.clear_cache()


def groups_of(ds, split):
    return set(ds.split(split).groups.tolist())


def assert_consistent(ds):
    """Shapes, dtypes, range, and labels that agree with the pixels they came with."""
    for name, sp in ds.splits.items():
        assert sp.x.dtype == np.float32 and sp.x.shape[1:] == (32, 32, 1), name
        assert sp.y.dtype == np.int64 and sp.y.shape == (len(sp),), name
        assert sp.groups is not None and len(sp.groups) == len(sp), name
        assert 0.0 <= sp.x.min() and sp.x.max() <= 1.0, name
        np.testing.assert_array_equal(labels_from_pixels(sp.x), sp.y, err_msg=name)


def assert_disjoint(ds):
    names = [s for s in ("train", "validation", "test") if ds.has(s)]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not groups_of(ds, a) & groups_of(ds, b), (a, b)


# --------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------
def test_course_layout(tmp_path):
    course_layout(tmp_path, {"train": rids(4, "T"), "validation": rids(2, "V"), "test": rids(2, "X")})
    ds = load_dataset(str(tmp_path))
    s = ds.summary()
    assert {k: v["n"] for k, v in s.items()} == {"train": 32, "validation": 16, "test": 16}
    assert s["train"]["per_class"] == {"background": 8, "clavicle": 8, "lung": 8, "heart": 8}
    assert groups_of(ds, "train") == set(rids(4, "T"))
    assert ds.warnings == []
    assert ds.name == tmp_path.name
    assert_consistent(ds)


@pytest.mark.parametrize("alias", ["val", "valid", "Validation", "VAL"])
def test_validation_aliases(tmp_path, alias):
    course_layout(tmp_path, {"train": rids(3, "T"), alias: rids(2, "V"), "test": rids(1, "X")})
    ds = load_folder(tmp_path)
    assert len(ds.split("validation")) == 16
    assert groups_of(ds, "validation") == set(rids(2, "V"))
    assert not any("set aside" in w for w in ds.warnings)


def test_two_validation_folders_is_an_error(tmp_path):
    course_layout(tmp_path, {"train": ["T1"], "val": ["V1"], "validation": ["V2"]})
    with pytest.raises(DataError, match=r"both 'val/' and 'validation/'.*keep only one"):
        load_folder(tmp_path)


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".PNG"])
def test_course_layout_other_extensions(tmp_path, ext):
    course_layout(tmp_path, {"train": ["T1"], "test": ["X1"]}, per_class=1, ext=ext)
    ds = load_folder(tmp_path)
    assert len(ds.split("test")) == 4
    assert_consistent(ds)


@pytest.mark.parametrize("style", ["names", "letters", "upper", "plural"])
def test_class_folders_without_splits(tmp_path, style):
    class_layout(tmp_path, rids(20), per_class=2, style=style)
    ds = load_folder(tmp_path)
    sizes = {s: len(ds.split(s)) for s in ("train", "validation", "test")}
    assert sum(sizes.values()) == 20 * 4 * 2
    # ~70/15/15 by whole radiographs (8 patches each): 3 radiographs = 15%
    assert sizes == {"train": 112, "validation": 24, "test": 24}
    assert_disjoint(ds)
    assert_consistent(ds)
    assert any("70/15/15" in w for w in ds.warnings)


def test_class_folders_inside_splits(tmp_path):
    for split, ids in {"train": rids(3, "T"), "val": rids(1, "V"), "test": rids(1, "X")}.items():
        class_layout(tmp_path, ids, per_class=1, style="letters", split=split)
    ds = load_folder(tmp_path)
    assert {k: v["n"] for k, v in ds.summary().items()} == {"train": 12, "validation": 4, "test": 4}
    assert groups_of(ds, "test") == {"X000"}
    assert_consistent(ds)


def test_split_folder_mixing_letters_and_class_folders(tmp_path):
    course_layout(tmp_path, {"train": ["A"]}, per_class=1)
    class_layout(tmp_path, ["B"], per_class=1, split="train")
    ds = load_folder(tmp_path)
    assert sum(len(sp) for sp in ds.splits.values()) == 8
    assert groups_of(ds, "train") | groups_of(ds, "test") == {"A", "B"}
    assert_consistent(ds)


def test_flat_lettered_files_are_split_automatically(tmp_path):
    for rid in rids(10):
        for c in "bclh":
            write_image(tmp_path / f"{rid}_000_{c}.png", c)
    ds = load_folder(tmp_path)
    assert sum(len(sp) for sp in ds.splits.values()) == 40
    assert all(ds.has(s) for s in ("train", "validation", "test"))
    assert_disjoint(ds)
    assert_consistent(ds)


def test_single_top_folder_is_descended(tmp_path):
    course_layout(tmp_path / "outer" / "jsrt", {"train": ["T1"], "test": ["X1"]}, per_class=1)
    ds = load_folder(tmp_path / "outer")
    assert len(ds.split("test")) == 4


# --------------------------------------------------------------------------------------
# split rule: grouping, determinism, partial splits
# --------------------------------------------------------------------------------------
def test_grouping_keeps_each_radiograph_in_one_split(tmp_path):
    # unequal radiograph sizes and ids with several underscores
    for i, rid in enumerate(rids(30, "JPCLN")):
        for j in range(1 + i % 5):
            c = "bclh"[j % 4]
            write_image(tmp_path / "bclh"[j % 4] / f"{rid}_{j:03d}_x_y.png", c)
    for seed in range(5):
        ds = load_folder(tmp_path, seed=seed)
        assert_disjoint(ds)
        all_groups = set().union(*(groups_of(ds, s) for s in ds.splits))
        assert all_groups == set(rids(30, "JPCLN"))
        assert sum(len(sp) for sp in ds.splits.values()) == sum(1 + i % 5 for i in range(30))


def test_split_is_deterministic_and_depends_on_seed(tmp_path):
    class_layout(tmp_path, rids(40), per_class=1)
    a = load_folder(tmp_path, seed=7)
    D.clear_cache()
    b = load_folder(tmp_path, seed=7)
    for s in ("train", "validation", "test"):
        np.testing.assert_array_equal(a.split(s).groups, b.split(s).groups)
        np.testing.assert_array_equal(a.split(s).x, b.split(s).x)
        np.testing.assert_array_equal(a.split(s).y, b.split(s).y)
    c = load_folder(tmp_path, seed=8)
    assert groups_of(a, "test") != groups_of(c, "test")


def test_course_layout_with_only_test_gives_only_test(tmp_path):
    course_layout(tmp_path, {"test": rids(5)})
    ds = load_dataset(str(tmp_path))
    assert list(ds.splits) == ["test"] and len(ds.split("test")) == 40
    assert not ds.has("train")
    assert any("no train/ folder" in w for w in ds.warnings)
    with pytest.raises(DataError, match=r"has no 'train' split \(it has: test\)"):
        ds.split("train")


def test_missing_validation_is_carved_from_train(tmp_path):
    course_layout(tmp_path, {"train": rids(20, "T"), "test": rids(3, "X")}, per_class=1)
    ds = load_folder(tmp_path, seed=1)
    assert len(ds.split("validation")) == 12          # 3 of 20 radiographs (15%)
    assert len(ds.split("train")) == 68
    assert groups_of(ds, "validation") <= set(rids(20, "T"))
    assert groups_of(ds, "test") == set(rids(3, "X"))    # given test untouched
    assert_disjoint(ds)
    assert any(w.startswith("validation: no validation/ folder") for w in ds.warnings)


def test_missing_test_is_carved_from_train(tmp_path):
    course_layout(tmp_path, {"train": rids(20, "T"), "validation": rids(3, "V")}, per_class=1)
    ds = load_folder(tmp_path)
    assert len(ds.split("test")) == 12 and groups_of(ds, "validation") == set(rids(3, "V"))
    assert_disjoint(ds)


def test_train_only_becomes_three_splits(tmp_path):
    class_layout(tmp_path, rids(20), per_class=1, split="train")
    ds = load_folder(tmp_path)
    assert {s: len(ds.split(s)) for s in ("train", "validation", "test")} == \
        {"train": 56, "validation": 12, "test": 12}
    assert_disjoint(ds)


def test_too_few_radiographs_to_carve(tmp_path):
    course_layout(tmp_path, {"train": ["T1"], "test": ["X1"]}, per_class=1)
    ds = load_folder(tmp_path)
    assert len(ds.split("train")) == 4 and not ds.has("validation")
    assert any("too few radiographs" in w for w in ds.warnings)


def test_given_splits_sharing_radiographs_warn(tmp_path):
    course_layout(tmp_path, {"train": ["A", "B"], "validation": ["B"], "test": ["C"]}, per_class=1)
    ds = load_folder(tmp_path)
    assert any("train and validation share 1 radiograph id(s) (e.g. B)" in w for w in ds.warnings)


def test_missing_class_warns(tmp_path):
    course_layout(tmp_path, {"train": ["T1", "T2"]}, letters="bcl")
    course_layout(tmp_path, {"test": ["X1"]})
    ds = load_folder(tmp_path)
    assert "train: no 'heart' patches" in ds.warnings
    assert ds.split("train").class_counts()[3] == 0
    assert not any(w.startswith("test: no") for w in ds.warnings)


def test_non_images_and_odd_folders_are_skipped_with_warnings(tmp_path):
    course_layout(tmp_path, {"train": ["T1"], "test": ["X1"]}, per_class=1)
    (tmp_path / "train" / "notes.txt").write_text("hi")
    (tmp_path / "train" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "test" / "misc").mkdir()
    ds = load_folder(tmp_path)
    assert len(ds.split("test")) == 4
    assert any("skipped 1 file(s) that are not images" in w and "notes.txt" in w for w in ds.warnings)
    assert any("misc: not a class folder" in w for w in ds.warnings)


# --------------------------------------------------------------------------------------
# to_patch: every mode
# --------------------------------------------------------------------------------------
def _course(img):
    """The course's preprocessing, for comparison."""
    return np.asarray(img.convert("L").resize((32, 32), Image.BICUBIC), np.float32) / 255.0


def test_to_patch_matches_course_preprocessing_for_8bit():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (80, 100), dtype=np.uint8))
    p = to_patch(img)
    assert p.dtype == np.float32 and p.shape == (32, 32)
    np.testing.assert_array_equal(p, _course(img))


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "CMYK", "YCbCr", "LA", "RGBA"])
def test_to_patch_8bit_modes(mode):
    rng = np.random.default_rng(1)
    base = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))   # RGB, not 32x32
    img = base.convert(mode)
    p = to_patch(img)
    assert p.dtype == np.float32 and p.shape == (32, 32)
    assert 0.0 <= p.min() and p.max() <= 1.0
    np.testing.assert_allclose(p, _course(img), atol=1e-6)
    assert p.std() > 0.01      # not blank


def test_to_patch_rgba_ignores_alpha():
    # documented: colour channels converted as stored, alpha not composited
    a = np.zeros((32, 32, 4), np.uint8)
    a[..., :3] = 200
    a[..., 3] = 0                       # fully transparent
    p = to_patch(Image.fromarray(a, "RGBA"))
    np.testing.assert_allclose(p, 200 / 255, atol=1e-6)


def test_to_patch_palette_uses_palette_values():
    img = Image.new("P", (40, 40), 3)
    img.putpalette([0, 0, 0] * 3 + [255, 255, 255] + [0, 0, 0] * 252)
    np.testing.assert_allclose(to_patch(img), 1.0)


def test_to_patch_bilevel():
    a = np.zeros((32, 32), bool)
    a[:, 16:] = True
    p = to_patch(Image.fromarray(a))          # mode "1"
    assert set(np.unique(p).tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_to_patch_16bit_scales_not_clips(mode):
    a = np.full((32, 32), 32768, np.uint16)
    a[0, 0] = 65535
    dtype = ">u2" if mode == "I;16B" else "<u2"
    img = Image.frombytes(mode, (32, 32), a.astype(dtype).tobytes())
    assert img.mode == mode
    p = to_patch(img)
    assert p.dtype == np.float32
    # ~0.5, not clipped to 1; within half an 8-bit level (the model sees 8 bits, preprocess.py)
    assert abs(float(np.median(p)) - 32768 / 65535) <= 0.5 / 255
    assert p[0, 0] == pytest.approx(1.0)


def test_to_patch_16bit_png_file_resized(tmp_path):
    a = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as img:
        assert img.mode.startswith("I")
        p = to_patch(img)
    assert p.shape == (32, 32) and 0.0 <= p.min() and p.max() <= 1.0
    assert p[0, 0] < 0.05 and p[-1, -1] > 0.95 and 0.4 < p.mean() < 0.6


@pytest.mark.parametrize("mode, lo, hi", [("I", -1000, 70000), ("F", 1000, 5000), ("F", -0.5, 0.5)])
def test_to_patch_int32_and_float_out_of_range_min_max(mode, lo, hi):
    a = np.linspace(lo, hi, 50 * 50).reshape(50, 50)
    img = Image.fromarray(a.astype(np.int32 if mode == "I" else np.float32))
    assert img.mode == mode
    p = to_patch(img)
    assert p.shape == (32, 32) and p.dtype == np.float32
    assert p.min() == pytest.approx(0.0, abs=0.02) and p.max() == pytest.approx(1.0, abs=0.02)


def test_to_patch_int32_16bit_range_and_unit_float_kept():
    a = np.linspace(1000, 5000, 32 * 32).reshape(32, 32)
    p = to_patch(Image.fromarray(a.astype(np.int32)))          # a 16-bit image stored as I
    np.testing.assert_allclose(p, a / 65535, atol=1 / 255)      # scaled, not min-maxed to 0..1
    f = np.linspace(0.2, 0.6, 32 * 32, dtype=np.float32).reshape(32, 32)
    np.testing.assert_allclose(to_patch(Image.fromarray(f)), np.rint(f * 255) / 255, atol=1e-6)


def test_to_patch_float_with_nan_and_constant():
    a = np.full((32, 32), 3.0, np.float32)
    np.testing.assert_array_equal(to_patch(Image.fromarray(a)), 0.0)
    a[0, 0] = np.nan
    a[1, 1] = 5.0
    p = to_patch(Image.fromarray(a))
    assert np.isfinite(p).all() and p[1, 1] == 1.0 and p[0, 0] == 0.0


def test_folder_of_mixed_modes_and_sizes_loads(tmp_path):
    v = VALUES
    g = tmp_path / "test"
    g.mkdir()
    Image.new("RGB", (64, 64), (v["b"],) * 3).save(g / "A_0_b.png")
    Image.new("RGBA", (20, 30), (v["c"],) * 3 + (128,)).save(g / "A_1_c.png")
    Image.new("L", (32, 32), v["l"]).convert("P").save(g / "A_2_l.gif")
    Image.fromarray(np.full((32, 32), v["h"] * 257, np.uint16)).save(g / "A_3_h.tif")
    ds = load_folder(tmp_path)
    assert len(ds.split("test")) == 4
    assert_consistent(ds)


# --------------------------------------------------------------------------------------
# error messages
# --------------------------------------------------------------------------------------
def test_missing_path(tmp_path):
    p = str(tmp_path / "nope")
    for fn in (load_dataset, load_folder, load_zip):
        with pytest.raises(DataError) as e:
            fn(p)
        assert str(e.value) == f"{p}: no such file or folder"
    with pytest.raises(DataError, match=r"nope\.zip: no such file or folder"):
        load_dataset(p + ".zip")


def test_no_images(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.txt").write_text("x")
    (tmp_path / "text" / "other").mkdir()
    (tmp_path / "text" / "other2").mkdir()
    for d in ("empty", "text"):
        with pytest.raises(DataError) as e:
            load_folder(tmp_path / d)
        assert str(e.value) == (f"{tmp_path / d}: no images found (expected train/ validation/ test/ "
                                "with files ending _b/_c/_l/_h, or class folders)")


def test_empty_split_folders_are_no_images(tmp_path):
    for s in ("train", "validation", "test"):
        (tmp_path / s).mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_folder(tmp_path)


def test_unknown_class_letter(tmp_path):
    course_layout(tmp_path, {"train": ["T1"]}, per_class=1)
    bad = write_image(tmp_path / "train" / "T1_009_x.png", "b")
    with pytest.raises(DataError) as e:
        load_folder(tmp_path)
    assert str(e.value) == f"{bad}: unknown class letter 'x' (expected b, c, l or h before the extension)"


def test_unreadable_file(tmp_path):
    course_layout(tmp_path, {"train": ["T1"]}, per_class=1)
    bad = tmp_path / "train" / "T1_009_b.png"
    bad.write_bytes(b"this is not a png at all")
    with pytest.raises(DataError) as e:
        load_folder(tmp_path)
    assert str(e.value).startswith(f"{tmp_path.name}/train/T1_009_b.png: not a readable image (")


def test_truncated_file(tmp_path):
    course_layout(tmp_path, {"train": ["T1"]}, per_class=1)
    bad = tmp_path / "train" / "T1_009_l.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError) as e:
        load_folder(tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path.name}/train/T1_009_l.png: not a readable image (") and "truncated" in msg


def _png_claiming(w: int, h: int) -> bytes:
    """A real 32x32 PNG whose header claims w x h pixels (its data is far too short)."""
    png = png_bytes("b")
    body = b"IHDR" + struct.pack(">II", w, h) + png[24:29]
    return png[:8] + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body)) + png[33:]


@pytest.mark.parametrize("w, h", [(8000, 8000), (100_000, 100_000)])
def test_decompression_bomb_in_a_folder_is_refused_before_decoding(tmp_path, w, h, monkeypatch):
    root = tmp_path / "course"
    course_layout(root, {"train": ["T1"]}, per_class=1)
    (root / "train" / "T1_009_b.png").write_bytes(_png_claiming(w, h))
    real = D.first_frame
    monkeypatch.setattr(D, "first_frame",
                        lambda im: pytest.fail("a bomb reached the decoder") if im.size[0] > 32 else real(im))
    with pytest.raises(DataError) as e:
        load_folder(root)
    msg = str(e.value)
    assert msg.startswith("course/train/T1_009_b.png: ") and "refused before decoding" in msg
    assert str(tmp_path) not in msg and "\n" not in msg


def test_decompression_bomb_in_a_zip_is_refused_and_named_inside_the_zip(tmp_path, small_course):
    z = zip_dir(small_course, tmp_path / "u.zip", top="top",
                extra={"top/train/T0_009_b.png": _png_claiming(8000, 8000)})
    with pytest.raises(DataError) as e:
        load_zip(z)
    assert str(e.value) == ("u.zip/top/train/T0_009_b.png: image is 8000x8000 (64 megapixels), "
                            "over the 40 MP limit; refused before decoding")


def test_first_bad_file_in_sorted_order_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "_CHUNK", 2)     # many chunks decoded in parallel
    course_layout(tmp_path, {"train": rids(6)}, per_class=2)
    for name in ("R005_000_b.png", "R001_003_c.png", "R003_001_b.png"):
        (tmp_path / "train" / name).write_bytes(b"junk")
    for _ in range(3):
        D.clear_cache()
        with pytest.raises(DataError, match=r"R001_003_c\.png: not a readable image"):
            load_folder(tmp_path)


def test_broken_link_is_named(tmp_path):
    course_layout(tmp_path, {"train": ["T1"]}, per_class=1)
    link = tmp_path / "train" / "T1_009_b.png"
    link.symlink_to(tmp_path / "gone.png")
    with pytest.raises(DataError, match=r"T1_009_b\.png: cannot be read"):
        load_folder(tmp_path)


def test_not_a_folder_or_zip(tmp_path):
    f = tmp_path / "data.csv"
    f.write_text("a,b")
    with pytest.raises(DataError, match=r"data\.csv: not a folder or a \.zip file"):
        load_dataset(str(f))
    with pytest.raises(DataError, match="not a folder"):
        load_folder(f)


def test_bad_seed(tmp_path):
    with pytest.raises(ConfigError):
        load_folder(tmp_path, seed=-1)
    assert issubclass(DataError, XrayLabError)


def test_phantom_is_delegated_lazily(monkeypatch):
    calls = []
    fake = types.ModuleType("xray_core.data.phantom.build")
    fake.build_phantom = lambda seed=0: calls.append(seed) or "PHANTOM"
    monkeypatch.setitem(sys.modules, "xray_core.data.phantom.build", fake)
    assert load_dataset("phantom", seed=5) == "PHANTOM"
    assert load_dataset() == "PHANTOM"
    assert calls == [5, 0]


# --------------------------------------------------------------------------------------
# zips
# --------------------------------------------------------------------------------------
@pytest.fixture
def small_course(tmp_path):
    src = tmp_path / "src"
    course_layout(src, {"train": rids(4, "T"), "validation": ["V1"], "test": ["X1"]}, per_class=1)
    return src


@pytest.mark.parametrize("top", [None, "my_data"])
def test_zip_of_course_layout(tmp_path, small_course, top, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(D.tempfile, "tempdir", str(tmp))
    z = zip_dir(small_course, tmp_path / "upload.zip", top=top,
                extra={"__MACOSX/._x": b"junk", ".hidden": b"x", "__MACOSX/train/._T000_000_b.png": b"x"})
    ds = load_dataset(str(z))
    assert ds.summary() == load_folder(small_course).summary()
    assert ds.name == "upload"
    assert_consistent(ds)
    assert list(tmp.iterdir()) == []        # temp extraction folder cleaned up


def test_zip_of_class_folders_without_splits(tmp_path):
    class_layout(tmp_path / "src", rids(20), per_class=1, style="letters")
    ds = load_zip(zip_dir(tmp_path / "src", tmp_path / "c.zip", top="top"))
    assert sum(len(s) for s in ds.splits.values()) == 80
    assert_disjoint(ds)


def test_zip_error_names_member(tmp_path, small_course):
    write_image(small_course / "train" / "T9_000_q.png", "b")
    z = zip_dir(small_course, tmp_path / "u.zip", top="top")
    with pytest.raises(DataError) as e:
        load_zip(z)
    assert str(e.value) == (f"{z}/top/train/T9_000_q.png: unknown class letter 'q' "
                            "(expected b, c, l or h before the extension)")


def test_zip_with_no_images(tmp_path):
    z = zip_members(tmp_path / "e.zip", [("__MACOSX/._a", b"x"), ("readme.txt", b"x")])
    with pytest.raises(DataError, match=r"e\.zip: no images found"):
        load_zip(z)


def _refused(tmp_path, z, match, **limits):
    out = tmp_path / "out"
    before = tree(tmp_path)
    with pytest.raises(DataError, match=match) as e:
        safe_extract(z, out, **limits)
    assert str(z) in str(e.value)
    after = tree(tmp_path)
    assert after - before <= {"out"}, after - before     # nothing written anywhere
    assert not out.exists() or list(out.iterdir()) == []
    return e.value


@pytest.mark.parametrize("name, why", [
    ("../evil.png", r"outside the target folder \('\.\.' in its path\)"),
    ("a/../../evil.png", r"outside the target folder"),
    ("..\\evil.png", r"outside the target folder"),
    ("/tmp/evil.png", r"absolute path"),
    ("C:/evil.png", r"drive letter"),
    ("c:\\evil.png", r"drive letter"),
])
def test_zip_path_escapes_are_refused(tmp_path, name, why):
    z = zip_members(tmp_path / "h.zip", [("train/T1_000_b.png", png_bytes()), (name, png_bytes())])
    _refused(tmp_path, z, why)
    with pytest.raises(DataError, match=why):
        load_zip(z)
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_zip_symlink_member_refused(tmp_path):
    link = zipfile.ZipInfo("train/link_b.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    link.create_system = 3
    z = zip_members(tmp_path / "s.zip", [("train/T1_000_b.png", png_bytes()), (link, b"/etc/passwd")])
    _refused(tmp_path, z, r"'train/link_b\.png' is a symbolic link")


def test_zip_too_many_members(tmp_path, monkeypatch):
    members = [(f"train/T{i}_000_b.png", png_bytes()) for i in range(30)]
    z = zip_members(tmp_path / "m.zip", members)
    _refused(tmp_path, z, r"30 entries, more than the 20 allowed", max_members=20)
    monkeypatch.setattr(Z, "MAX_MEMBERS", 29)
    with pytest.raises(DataError, match="more than the 29 allowed"):
        load_zip(z)
    monkeypatch.setattr(Z, "MAX_MEMBERS", 30)
    assert len(load_zip(z).split("train")) > 0


def test_zip_bomb_by_ratio(tmp_path):
    z = zip_members(tmp_path / "b.zip", [("train/T1_000_b.png", png_bytes()),
                                         ("zeros.bin", bytes(50 << 20))])
    assert z.stat().st_size < 200_000
    err = _refused(tmp_path, z,
                   r"'zeros\.bin' is compressed \d+:1, more than the 200:1 allowed \(zip bomb\?\)")
    assert "zip bomb" in str(err)
    with pytest.raises(DataError, match="zip bomb"):
        load_zip(z)


def test_zip_total_size_limit(tmp_path, monkeypatch):
    rnd = np.random.default_rng(0).bytes(3000)
    z = zip_members(tmp_path / "t.zip", [("a.bin", rnd), ("b.bin", rnd)], zipfile.ZIP_STORED)
    _refused(tmp_path, z, r"would unpack to more than 5000 bytes", max_total_bytes=5000)
    monkeypatch.setattr(Z, "MAX_TOTAL_BYTES", 5000)
    with pytest.raises(DataError, match="more than 5000 bytes"):
        load_zip(z)


def test_small_very_compressible_member_is_fine(tmp_path):
    # a black 1000x1000 BMP compresses ~700:1 but is small: under RATIO_MIN_BYTES
    buf = io.BytesIO()
    Image.new("L", (1000, 1000), 0).save(buf, format="BMP")
    data = buf.getvalue()
    z = zip_members(tmp_path / "k.zip", [("test/A_000_b.bmp", data)])
    info = zipfile.ZipFile(z).getinfo("test/A_000_b.bmp")
    assert info.file_size / info.compress_size > 200 and info.file_size < Z.RATIO_MIN_BYTES
    assert len(load_zip(z).split("test")) == 1


def test_zip_lying_uncompressed_size(tmp_path):
    z = zip_members(tmp_path / "l.zip", [("zeros.bin", bytes(50 << 20))])
    patch_sizes(z, "zeros.bin", file_size=10_000)       # claims 10 kB, holds 50 MB
    assert zipfile.ZipFile(z).getinfo("zeros.bin").file_size == 10_000
    _refused(tmp_path, z, r"'zeros\.bin' is damaged, or its size or checksum does not match its header")


def test_zip_lying_compressed_size(tmp_path):
    z = zip_members(tmp_path / "c.zip", [("zeros.bin", bytes(50 << 20)), ("b.txt", b"x")])
    patch_sizes(z, "zeros.bin", compress_size=40 << 20)  # claims 40 MB packed: ratio looks ~1:1
    assert zipfile.ZipFile(z).getinfo("zeros.bin").compress_size == 40 << 20
    _refused(tmp_path, z, r"'zeros\.bin' is compressed \d+:1, more than the 200:1 allowed")


def test_zip_member_writing_more_than_declared_is_stopped(tmp_path, monkeypatch):
    # a zip reader that trusts the stream rather than the header: the byte count stops it
    z = zip_members(tmp_path / "s.zip", [("a.bin", b"x" * 100)])
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *a, **k: io.BytesIO(bytes(3 << 20)))
    _refused(tmp_path, z, r"'a\.bin' holds more than the 100 bytes it declares")


def test_zip_overlapping_members_refused(tmp_path):
    z = zip_members(tmp_path / "o.zip", [("a.bin", b"x" * 100), ("b.bin", b"y" * 100)])
    data = bytearray(z.read_bytes())
    # point b.bin's central entry (local header offset @42) at a.bin's local header (offset 0)
    i = data.find(b"PK\x01\x02", data.find(b"PK\x01\x02") + 4)
    data[i + 42:i + 46] = (0).to_bytes(4, "little")
    z.write_bytes(bytes(data))
    _refused(tmp_path, z, "share the same data")


def test_not_a_zip(tmp_path):
    z = tmp_path / "fake.zip"
    z.write_text("definitely not a zip")
    _refused(tmp_path, z, r"fake\.zip: not a zip file, or a damaged one")
    with pytest.raises(DataError, match="not a zip file"):
        load_dataset(str(z))


def test_truncated_zip(tmp_path, small_course):
    z = zip_dir(small_course, tmp_path / "t.zip")
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    _refused(tmp_path, z, "not a zip file, or a damaged one")


def test_corrupt_member_data(tmp_path):
    payload = np.random.default_rng(0).bytes(5000)
    z = zip_members(tmp_path / "c.zip", [("train/T1_000_b.png", payload)], zipfile.ZIP_STORED)
    data = bytearray(z.read_bytes())
    j = data.find(payload[:50])
    data[j + 100] ^= 0xFF                       # flip one byte of the stored data
    z.write_bytes(bytes(data))
    _refused(tmp_path, z, r"is damaged, or its size or checksum does not match its header \(Bad CRC")


def test_encrypted_and_exotic_compression_refused(tmp_path):
    z = zip_members(tmp_path / "e.zip", [("a.png", b"x" * 10)], zipfile.ZIP_STORED)
    data = bytearray(z.read_bytes())
    data[6] |= 0x1                                   # local header: general purpose flag
    data[data.find(b"PK\x01\x02") + 8] |= 0x1        # central header: same flag
    z.write_bytes(bytes(data))
    assert zipfile.ZipFile(z).getinfo("a.png").flag_bits & 0x1
    _refused(tmp_path, z, "is encrypted")
    z2 = zip_members(tmp_path / "bz.zip", [("a.png", b"x" * 10)], zipfile.ZIP_BZIP2)
    _refused(tmp_path, z2, "compression method 12")


def test_safe_extract_ok_and_skips_junk(tmp_path):
    z = zip_members(tmp_path / "ok.zip", [("top/", b""), ("top/a/b.txt", b"hello"),
                                          ("__MACOSX/top/._b.txt", b"x"), ("top/.DS_Store", b"x")])
    out = tmp_path / "out"
    assert safe_extract(z, out) == ["top/a/b.txt"]
    assert (out / "top" / "a" / "b.txt").read_bytes() == b"hello"
    assert tree(out) == {"top", "top/a", "top/a/b.txt"}


def test_failed_load_zip_cleans_temp(tmp_path, monkeypatch, small_course):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(D.tempfile, "tempdir", str(tmp))
    (small_course / "test" / "X1_000_b.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable image"):
        load_zip(zip_dir(small_course, tmp_path / "u.zip"))
    assert list(tmp.iterdir()) == []


# --------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------
def _count_decodes(monkeypatch):
    calls = []
    real = D._read_patch
    lock = threading.Lock()

    def counting(path, shown):
        with lock:
            calls.append(path)
        return real(path, shown)
    monkeypatch.setattr(D, "_read_patch", counting)
    return calls


def test_second_load_is_cached_and_reseeding_does_not_decode(tmp_path, monkeypatch):
    class_layout(tmp_path, rids(10), per_class=1)
    calls = _count_decodes(monkeypatch)
    a = load_folder(tmp_path, seed=0)
    assert len(calls) == 40
    b = load_dataset(str(tmp_path), seed=0)
    load_folder(tmp_path, seed=3)
    assert len(calls) == 40
    for s in a.splits:
        np.testing.assert_array_equal(a.split(s).x, b.split(s).x)


def test_cache_notices_changed_files(tmp_path, monkeypatch):
    course_layout(tmp_path, {"train": ["T1"], "test": ["X1"]}, per_class=1)
    calls = _count_decodes(monkeypatch)
    assert len(load_folder(tmp_path).split("test")) == 4
    write_image(tmp_path / "test" / "X2_000_h.png", "h")          # new file
    assert len(load_folder(tmp_path).split("test")) == 5
    f = tmp_path / "test" / "X2_000_h.png"
    write_image(f, "b", size=(40, 40))                             # same name, new content
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError):
        assert_consistent(load_folder(tmp_path))      # label h, pixels b: the reload saw the change
    assert len(calls) == 8 + 9 + 9


def test_cache_is_thread_safe(tmp_path, monkeypatch):
    class_layout(tmp_path, rids(10), per_class=2)
    calls = _count_decodes(monkeypatch)
    results, errors = [], []
    barrier = threading.Barrier(6)

    def run(seed):
        try:
            barrier.wait()
            results.append(load_folder(tmp_path, seed=seed % 2))
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 6
    assert len(calls) == 80                      # decoded once
    assert len({tuple(r.split("test").groups) for r in results}) <= 2


def test_returned_arrays_are_read_only(tmp_path):
    course_layout(tmp_path, {"train": rids(6), "test": ["X"]}, per_class=1)
    ds = load_folder(tmp_path)
    for sp in ds.splits.values():
        with pytest.raises(ValueError):
            sp.x[0, 0, 0, 0] = 1.0
    ds.warnings.append("mine")
    assert "mine" not in load_folder(tmp_path).warnings


def test_zip_is_cached(tmp_path, small_course, monkeypatch):
    z = zip_dir(small_course, tmp_path / "u.zip")
    load_zip(z)
    monkeypatch.setattr(D, "safe_extract", lambda *a, **k: pytest.fail("extracted twice"))
    load_zip(z, seed=2)


# --------------------------------------------------------------------------------------
# the real data (skipped where it is absent)
# --------------------------------------------------------------------------------------
@pytest.mark.skipif(not REAL.is_dir(), reason=f"real data not found at {REAL}")
def test_real_jsrt_patches():
    ds = load_dataset(str(REAL))
    s = ds.summary()
    assert {k: v["n"] for k, v in s.items()} == {"train": 9600, "validation": 1920, "test": 2368}
    for split, n in (("train", 2400), ("validation", 480), ("test", 592)):
        assert s[split]["per_class"] == {"background": n, "clavicle": n, "lung": n, "heart": n}
    assert ds.warnings == []
    assert_disjoint(ds)   # split by patient
    assert len(groups_of(ds, "train")) == 150 and len(groups_of(ds, "test")) == 37
    x = ds.split("train").x
    assert x.dtype == np.float32 and x.shape == (9600, 32, 32, 1)
    assert 0.0 <= x.min() and x.max() <= 1.0 and 0.1 < x.mean() < 0.9
    # first file equals the course's preprocessing of it
    first = sorted((REAL / "train").iterdir())[0]
    with Image.open(first) as img:
        np.testing.assert_array_equal(x[0, :, :, 0], _course(img))


# --------------------------------------------------------------------------------------
# decoded folders kept on disk (cache.py): the next process does not decode again
# --------------------------------------------------------------------------------------
def test_a_folder_decoded_once_is_read_back_from_disk_until_a_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_CACHE", str(tmp_path / "cache"))
    root = course_layout(tmp_path / "course", {"train": rids(3, "T"), "validation": rids(1, "V"),
                                               "test": rids(1, "X")})
    first = load_folder(root)
    assert list((tmp_path / "cache" / "decoded").glob("*.npy"))
    D.clear_cache()                         # a new process: nothing in memory

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")
    monkeypatch.setattr(D, "_decode", no_decoding)
    again = load_folder(root)
    for s in first.splits:
        np.testing.assert_array_equal(first.split(s).x, again.split(s).x)
        np.testing.assert_array_equal(first.split(s).y, again.split(s).y)
    # one file rewritten with other pixels: the signature changes, the folder is decoded afresh
    monkeypatch.undo()
    monkeypatch.setenv("XRAY_LAB_CACHE", str(tmp_path / "cache"))
    D.clear_cache()
    f = sorted((root / "train").glob("*_b.png"))[0]
    write_image(f, "b", k=17)               # same class, same size on disk, one other row of pixels
    changed = load_folder(root)
    assert not np.array_equal(changed.split("train").x, first.split("train").x)
    assert_consistent(changed)


def test_an_unwritable_cache_folder_only_costs_the_decoding(tmp_path, monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("XRAY_LAB_CACHE", str(blocked))
    root = course_layout(tmp_path / "course", {"train": rids(3, "T")})
    ds = load_folder(root)
    assert len(ds.split("train")) > 0 and not blocked.is_dir()
