"""A run's data, of the kind its architecture learns from: patches (fc, cnn) or whole films
with their label maps (segment, course Part 3). One line when the kinds do not match.

    load_for_run(source, arch, seed=0) -> Dataset | FilmDataset
    check_kind(dataset, arch)          a dataset already loaded (the app's sidebar, a worker)
    is_films(dataset) -> bool
"""
from __future__ import annotations

import os

from xray_core.errors import DataError

SEGMENT = "segment"


def is_films(dataset) -> bool:
    return getattr(dataset, "kind", "patches") == "films"


def check_kind(dataset, arch: str) -> None:
    """DataError (one line) when a segmentation run gets patches or a patch run gets films."""
    if arch == SEGMENT and not is_films(dataset):
        raise DataError(f"{dataset.name}: a patch dataset (32x32 patches, one label each), but a segmentation "
                        "model needs whole films with their label maps (NAME.png + NAME_labels.png)")
    if arch != SEGMENT and is_films(dataset):
        raise DataError(f"{dataset.name}: whole films with label maps, but a {arch} model learns from 32x32 "
                        "patches; train a segmentation model (arch segment) on it, or give a patch dataset")


def load_for_run(source: str = "phantom", arch: str = "fc", seed: int = 0):
    """The data of a run of `arch` from "phantom" (the phantom's patches, or its films for a
    segmentation run), a folder or a .zip; the other kind is refused in one line before anything
    is decoded."""
    src = os.fspath(source)
    if arch == SEGMENT:
        from xray_core.data.films import load_films, require_films
        if src != "phantom" and os.path.exists(src):
            require_films(src)
        ds = load_films(src, seed=seed)
    else:
        from xray_core.data.films import require_patches
        from xray_core.data.load import load_dataset
        if src != "phantom" and os.path.exists(src):
            require_patches(src)
        ds = load_dataset(src, seed=seed)
    check_kind(ds, arch)
    return ds
