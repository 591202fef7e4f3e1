"""Whole films on the pages (course Part 3, issue 24): the data a run of the sidebar's
architecture learns from (patches, or films for a segmentation run), the prior map (each
pixel's most frequent label over training films, the map that never looks at the image),
an uploaded label map, and the scores that compare the maps.

Datasets and priors are shared by all sessions (st.cache_resource, read-only arrays).
"""
from __future__ import annotations

import os

import numpy as np
import streamlit as st
from PIL import Image

from xray_core import CLASSES
from xray_core.data import roots
from xray_core.errors import DataError, XrayLabError, one_line
from xray_core.maps.prior import Prior, build_prior, score_maps, use_position

from .session import shared_dataset

SEGMENT = "segment"
PHANTOM = "phantom"


# ---- a run's data ----------------------------------------------------------------------

def shown_as(source: str) -> str:
    """How a page names a data source: its dataset name under the data roots, "your .zip" for
    an upload, never a server path."""
    if source == PHANTOM:
        return source
    from xray_core.data.load import UPLOAD_SHOWN
    from xray_core.data.uploads import is_upload
    if is_upload(source):
        return UPLOAD_SHOWN
    return roots.name_of(source) or os.path.basename(source.rstrip("/")) or "the dataset"


def _hide(text: str, source: str) -> str:
    """The engine's messages name files by the path given: a browser sees the dataset's name."""
    if source == PHANTOM:
        return text
    name = shown_as(source)
    for p in sorted({source, os.path.realpath(source), os.path.abspath(source)}, key=len, reverse=True):
        text = text.replace(p, name)
    return text


@st.cache_resource(max_entries=3, show_spinner="Loading the films and their label maps…")
def shared_films(source: str):
    """A films dataset (FilmDataset), one copy per source for the whole server; its messages
    (warnings, refusals) name the dataset, never the server path."""
    from xray_core.data.for_run import load_for_run
    try:
        ds = load_for_run(source, SEGMENT)
    except DataError as e:
        raise DataError(_hide(str(e), source)) from None
    ds.warnings = [_hide(w, source) for w in ds.warnings]
    return ds


def run_dataset(source: str, arch: str):
    """The data of a run of `arch` from the sidebar's source: whole films for a segmentation
    run (the phantom's films by default), patches otherwise. The other kind is refused in one
    line (DataError) before anything is decoded."""
    if arch == SEGMENT:
        return shared_films(source)
    if source != PHANTOM and os.path.exists(source):
        from xray_core.data.films import require_patches
        try:
            require_patches(source)   # films given to a patch model: say so, not "no patches found"
        except DataError as e:
            raise DataError(_hide(str(e), source)) from None
    return shared_dataset(source)


def is_films(dataset) -> bool:
    return getattr(dataset, "kind", "patches") == "films"


# ---- the prior ---------------------------------------------------------------------------

@st.cache_resource(max_entries=4, show_spinner="Building the prior from the training films…")
def shared_prior(source: str) -> Prior:
    """The prior of a films source's training split (the phantom's 150 films by default)."""
    ds = shared_films(source)
    return build_prior(ds.split("train").y)


@st.cache_data(ttl=60, show_spinner=False)
def films_datasets() -> list[str]:
    """The server's datasets (under the data roots) that hold films with label maps: the
    folders a prior can come from. Re-listed at most once a minute (a walk of each folder)."""
    from xray_core.data.films import dataset_kind
    out = []
    for name in roots.list_datasets():
        try:
            if dataset_kind(roots.resolve(name)) == "films":
                out.append(name)
        except (DataError, OSError):
            continue
    return out


def prior_default(data: str | None, offered: list[str]) -> str:
    """The prior a model's page starts with: the training films of the data source its run used
    (a films folder on the server), else the phantom's."""
    if data and data != PHANTOM:
        try:
            name = roots.name_of(data)
        except (DataError, OSError):
            name = None
        if name in offered:
            return name
    return PHANTOM


def prior_source(name: str) -> str:
    """A prior choice of the sidebar ('phantom' or a dataset name) -> the source to load."""
    return PHANTOM if name == PHANTOM else roots.resolve(name)


# ---- maps at any size ----------------------------------------------------------------

def to_size(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label map brought to (H, W) by nearest neighbour (labels are classes: never blended)."""
    labels = np.asarray(labels, np.uint8)
    if labels.shape == tuple(shape):
        return labels
    return np.asarray(Image.fromarray(labels).resize((shape[1], shape[0]), Image.Resampling.NEAREST))


def prior_labels(prior: Prior, film_shape: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """The prior map at film scale (where the model looked), then at the upload's own size."""
    return to_size(prior.labels(film_shape), shape)


def position_labels(amap, prior: Prior, shape: tuple[int, int]) -> np.ndarray | None:
    """'Use position': the patch model's probabilities x the prior / class share (uniform: the
    course's patches are balanced), at film scale, at the upload's size. None without probs."""
    if amap.probs is None:
        return None
    post = use_position(np.asarray(amap.probs, np.float32), prior)
    return to_size(post.argmax(-1).astype(np.uint8), shape)


# ---- an uploaded label map -------------------------------------------------------------

def read_truth(name: str, data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """An uploaded NAME_labels.png for a film of `shape` (H, W) -> uint8 labels; DataError in
    one line when it is not an image, holds values outside 0..3, or is of another size."""
    from xray_core.data.films import label_map_from_bytes
    truth = label_map_from_bytes(data, name)
    if truth.shape != tuple(shape):
        raise DataError(f"{name}: label map is {truth.shape[1]}×{truth.shape[0]} but the film is "
                        f"{shape[1]}×{shape[0]}; they must be the same size")
    return truth


def labels_name(film_name: str) -> str:
    """What the film's label map is called: NAME.png -> NAME_labels.png."""
    return f"{os.path.splitext(film_name)[0]}_labels.png"


def is_labels_name(name: str) -> bool:
    return os.path.splitext(name)[0].lower().endswith("_labels")


def score_rows(maps: list[tuple[str, np.ndarray]], truth: np.ndarray) -> list[dict]:
    """One row per map: its pixel accuracy and Dice per class against the label map (None where
    a class is in neither map: nothing to overlap)."""
    rows = []
    for name, labels in maps:
        s = score_maps(labels, truth)
        row = {"map": name, "pixel accuracy %": round(100 * s["pixel_accuracy"], 1)}
        for c in CLASSES:
            d = s["dice"][c]
            row[f"Dice {c}"] = None if not np.isfinite(d) else round(d, 3)
        rows.append(row)
    return rows


def error_line(e: Exception, what: str) -> str:
    """One line for a failure the page shows instead of a traceback."""
    return one_line(e) if isinstance(e, XrayLabError) else f"{what}: {one_line(e)}"
