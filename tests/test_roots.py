"""Data roots: what a browser may name, and what it may not."""
import os

import pytest

from xray_core.data import roots
from xray_core.errors import DataError

from .fixtures_data import class_layout, course_layout, rids


@pytest.fixture
def root(tmp_path, monkeypatch):
    r = tmp_path / "root"
    course_layout(r / "course", {"train": rids(2, "A"), "test": rids(1, "T")}, per_class=1)
    class_layout(r / "jsrt" / "jsrt_patches", rids(2, "B"), per_class=1)
    (r / "jsrt" / "notes").mkdir()                       # no images: not a dataset
    (r / "jsrt" / "notes" / "readme.txt").write_text("x")
    course_layout(tmp_path / "secret", {"train": rids(1, "S")}, per_class=1)
    monkeypatch.setenv(roots.ENV, str(r))
    roots.clear_cache()
    yield r
    roots.clear_cache()


def test_datasets_are_named_relative_to_their_root(root):
    assert roots.list_datasets() == ["course", "jsrt/jsrt_patches"]
    assert roots.resolve("course") == os.path.realpath(root / "course")
    assert roots.resolve("jsrt/jsrt_patches") == os.path.realpath(root / "jsrt" / "jsrt_patches")


def test_a_datasets_own_split_folders_are_not_offered(root):
    assert "course/train" not in roots.list_datasets()


@pytest.mark.parametrize("name", [
    "../secret", "course/../../secret", "/etc", "/etc/passwd", "course\0", "..", ".", "",
    "course/", "./course", "C:\\x", "course\\..\\..", "jsrt", "jsrt/notes", "course/train", "nope",
    "x" * 5000, None, 3,
])
def test_anything_else_is_refused_without_a_path_or_a_hint(root, tmp_path, name):
    with pytest.raises(DataError) as e:
        roots.resolve(name)
    assert str(e.value) == roots.REFUSED     # the same words whether it exists or not
    assert str(tmp_path) not in str(e.value)


def test_a_symlink_out_of_the_root_is_neither_listed_nor_resolved(root, tmp_path):
    os.symlink(tmp_path / "secret", root / "escape")
    os.symlink(tmp_path, root / "up")
    roots.clear_cache()
    assert roots.list_datasets() == ["course", "jsrt/jsrt_patches"]
    for name in ("escape", "up/secret", "up/root/course"):
        with pytest.raises(DataError):
            roots.resolve(name)


def test_a_dataset_swapped_for_a_symlink_after_listing_is_refused(root, tmp_path):
    assert roots.list_datasets()                          # listed (and cached) while inside
    import shutil
    shutil.rmtree(root / "course")
    os.symlink(tmp_path / "secret", root / "course")
    with pytest.raises(DataError):
        roots.resolve("course")


def test_default_root_is_created_next_to_the_app(monkeypatch, tmp_path):
    monkeypatch.delenv(roots.ENV, raising=False)
    monkeypatch.setattr(roots, "_APP_DIR", str(tmp_path))
    roots.clear_cache()
    assert roots.roots() == [os.path.realpath(tmp_path / "data")]
    assert (tmp_path / "data").is_dir() and roots.list_datasets() == []


def test_several_roots_and_a_root_that_is_itself_a_dataset(tmp_path, monkeypatch):
    course_layout(tmp_path / "a" / "course", {"train": rids(1, "A")}, per_class=1)
    course_layout(tmp_path / "patches", {"train": rids(1, "P")}, per_class=1)
    monkeypatch.setenv(roots.ENV, os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "patches"),
                                                   "relative/ignored", str(tmp_path / "missing")]))
    roots.clear_cache()
    assert roots.list_datasets() == ["course", "patches"]
    assert roots.resolve("patches") == os.path.realpath(tmp_path / "patches")


def test_the_walk_is_bounded(tmp_path, monkeypatch):
    deep = tmp_path / "r" / "1" / "2" / "3" / "4"
    course_layout(deep / "too_deep", {"train": rids(1, "D")}, per_class=1)
    monkeypatch.setenv(roots.ENV, str(tmp_path / "r"))
    roots.clear_cache()
    assert roots.list_datasets() == []
    with pytest.raises(DataError):
        roots.resolve("1/2/3/4/too_deep")


def test_the_real_jsrt_patches_are_found_under_the_shared_root(shared_data, monkeypatch):
    monkeypatch.setenv(roots.ENV, str(shared_data))
    roots.clear_cache()
    assert "jsrt_patches" in roots.list_datasets()
    # whole films with their label maps are datasets too since issue 24: a segmentation run's
    # data and the Classify page's prior (the film folders themselves, not their split folders)
    assert {"jsrt_films", "jsrt_radiographs"} <= set(roots.list_datasets())
    assert not [n for n in roots.list_datasets() if n.startswith("jsrt_films/")]
