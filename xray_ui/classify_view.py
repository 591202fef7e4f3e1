"""Helpers behind the Classify page (pages/2_Classify.py): which models the session
can use, the quick-train run, decoding uploads once, and per-session caches so that
moving a slider re-blends a map instead of recomputing it.

Everything kept here lives in st.session_state (per browser session) except the
demo films, which are shared read-only through st.cache_resource.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from xray_core import CLASSES
from xray_core.config import RunConfig
from xray_core.errors import XrayLabError, one_line
from xray_core.data.images import is_radiograph, patch_input, read_image, to_film
from xray_core.maps.inference import CLASS_COLOURS, AnatomyMap, anatomy_map, load_model, overlay, predict_patches
from xray_core.presets import get_preset
from xray_core.train.job import DONE, STOPPED, TrainingJob

from .session import runs, shared_dataset, start_job

# Accepted by extension only; read_image decides by content (a PNG called scan.jpg is fine).
UPLOAD_TYPES = ["png", "jpg", "jpeg", "tif", "tiff", "bmp", "gif", "dcm", "dicom"]
QUICK_PRESET = "p1-task5"
QUICK_EPOCHS = 10
QUICK_LIMIT_TRAIN = None  # all training patches
DISPLAY_SIDE = 512        # originals are shown at most this size (full films would be MBs per rerun)
MAP_PX = 480              # display width of an anatomy map (film scale 256 px, enlarged by the browser)
INPUT_ZOOM = 4            # the 32x32 model input is shown 4x, nearest neighbour
MAX_DECODED = 24          # per-session caches (entries), oldest dropped first
MAX_MAPS = 24             # ~0.35 MB each (film, labels), +0.5 MB: a patch model's probabilities (use position)
DEMO_FILMS = 8            # phantom test films the film demo picks from
DEMO_PATCHES = 12

MODEL_SEES = (
    "**What the model sees.** The networks of this course were trained on 32×32-pixel patches cut from "
    "chest films, one label per patch. Any image you upload is turned into exactly such an input: converted "
    "to grayscale, resized to 32×32 (bicubic, as in training) and scaled to 0…1 — the small picture next to "
    "each file. A whole film squeezed into 32×32 is *not* what the model was trained on, so its single "
    "prediction for a film means little; that is why whole films also get an anatomy map.")
MAP_EXPLAINER = (
    "**What the anatomy map is.** A film (either side ≥ 128 px) is resized to 256 px on its long side, as "
    "the training films were. The model then slides over it: every *stride* pixels it classifies the 32×32 "
    "patch centred there, and the grid of class probabilities is smoothed back to every pixel. Each pixel "
    "gets the colour of its most likely class. A smaller stride classifies more patches (stride 1: one per "
    "pixel, 16× the work of stride 4) for finer edges.")

PRIOR_HELP = ("The prior map never looks at the film: each pixel gets its most frequent label over these "
              "training films' label maps. Any map must beat it; a 32×32 patch alone often does not.")
POSITION_HELP = ("A 32×32 patch does not know where on the film it is. Bayes adds it: each pixel's class "
                 "probabilities from the model × the prior's at that pixel ÷ the class's share in training "
                 "(equal for the course's balanced patches), normalised.")
TRUTH_HELP = ("A label map of the same size as the film, each pixel's value its class: 0 background, "
              "1 clavicle, 2 lung, 3 heart (as the course's *_labels.png; it looks black).")


# ---- small per-session LRU caches ---------------------------------------------------

def _cache(name: str) -> "OrderedDict[Any, Any]":
    c = st.session_state.get(name)
    if not isinstance(c, OrderedDict):
        c = st.session_state[name] = OrderedDict()
    return c


def _remember(name: str, key, value, limit: int):
    c = _cache(name)
    c[key] = value
    c.move_to_end(key)
    while len(c) > limit:
        c.popitem(last=False)
    return value


def _recall(name: str, key):
    c = _cache(name)
    if key in c:
        c.move_to_end(key)
        return c[key]
    return None


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:20]


# ---- models ---------------------------------------------------------------------------

@dataclass
class ModelChoice:
    key: str              # stable id: caches are keyed by it
    label: str
    model: Any
    dataset: Any = None   # the run's dataset (demo patches come from it), None for uploads
    data: str | None = None   # the run's data source ("phantom", a folder): the prior's default


def _run_label(run) -> str:
    res = run.job.snapshot().result or {}
    acc = (res.get("test") or {}).get("accuracy")
    return f"Run {run.label}" + (f" · test acc {100 * acc:.1f} %" if acc is not None else "")


class StoredChoice(ModelChoice):
    """A finished run of the workspace, from the run store: its .keras is read only when
    the model is first used (a workspace may hold dozens)."""

    def __init__(self, key: str, label: str, path: str, data: str | None = None):
        super().__init__(key, label, None, None, data)
        self._path = path

    @property
    def model(self):
        return _stored_model(self._path)

    @model.setter
    def model(self, value):   # the dataclass __init__ assigns it
        pass


@st.cache_resource(max_entries=8, show_spinner="Loading the model…")
def _stored_model(path: str):
    return load_model(path)


def session_models() -> list[ModelChoice]:
    """Finished runs of this browser session that still hold their model, oldest first,
    then the workspace's other stored runs with a kept model (earlier sessions, before a
    restart), then the uploaded model (if any)."""
    out = []
    live = set()
    for run in runs().runs:
        if run.job.model is not None and run.job.snapshot().state in (DONE, STOPPED):
            out.append(ModelChoice(f"run:{run.job.id}", _run_label(run), run.job.model, run.job.dataset,
                                   run.job.config.data))
            if getattr(run, "run_id", None):
                live.add(run.run_id)
    try:
        from .session import store, workspace
        for rec in reversed(store().list_runs(workspace(), states=["finished", "stopped"], limit=12)):
            if rec.id not in live and rec.model_path and os.path.exists(rec.model_path):
                acc = ((rec.result or {}).get("test") or {}).get("accuracy")
                label = f"Saved run {rec.label}" + (f" · test acc {100 * acc:.1f} %" if acc is not None else "")
                out.append(StoredChoice(f"stored:{rec.id}", label, rec.model_path, (rec.config or {}).get("data")))
    except XrayLabError:
        pass   # the store is unavailable: this session's models still work
    up = st.session_state.get("_cls_uploaded_model")
    if up is not None:
        out.append(up)
    return out


def pending_run():
    """This session's newest run that is still queued or training, if any."""
    return next((r for r in reversed(runs().runs) if not r.job.snapshot().finished), None)


def model_upload(container, label: str, key: str, **kw) -> None:
    """A .keras uploader: the file is checked and loaded once, and joins session_models()."""
    up = container.file_uploader(label, type=["keras"], key=key, **kw)
    if up is not None:
        try:
            with st.spinner(f"Loading {up.name}…"):
                use_uploaded_model(up.name, up.getvalue())
        except XrayLabError as e:
            container.error(one_line(e))


def use_uploaded_model(name: str, data: bytes) -> ModelChoice:
    """Load an uploaded .keras file (once per content). Raises XrayLabError naming the file."""
    key = f"upload:{digest(data)}"
    current = st.session_state.get("_cls_uploaded_model")
    if current is not None and current.key == key:
        return current
    from xray_core.data.uploads import private_tmp    # under the home, not the shared /tmp
    fd, path = tempfile.mkstemp(suffix=".keras", prefix="xray_upload_", dir=private_tmp())
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            model = load_model(path)
        except XrayLabError as e:
            raise XrayLabError(str(e).replace(path, name).replace(os.path.basename(path), name)) from None
        except Exception as e:  # whatever Keras raises for a hostile archive
            raise XrayLabError(f"{name}: cannot load the model ({one_line(e)})") from None
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    choice = ModelChoice(key, f"Uploaded · {name}", model)
    st.session_state["_cls_uploaded_model"] = choice
    return choice


def quick_config() -> RunConfig:
    """The Task 5 FC (batch norm, LeakyReLU) with fewer epochs, on the phantom."""
    return get_preset(QUICK_PRESET).config.replace(epochs=QUICK_EPOCHS, limit_train=QUICK_LIMIT_TRAIN,
                                                   data="phantom")


def start_quick_train() -> TrainingJob:
    return start_job(quick_config(), shared_dataset("phantom"), QUICK_PRESET).job


# ---- uploads ----------------------------------------------------------------------------

@dataclass
class Decoded:
    name: str
    key: str                       # content digest
    shape: tuple[int, int] | None  # (H, W) as read
    thumb: np.ndarray | None       # uint8, for display
    patch: np.ndarray | None       # float32 32x32: exactly what the model sees
    film: np.ndarray | None        # float32 at film scale (long side 256) for radiographs
    error: str | None = None

    @property
    def is_film(self) -> bool:
        return self.film is not None


def decode(name: str, data: bytes) -> Decoded:
    """read_image once per (content, name); keeps only small arrays, never the full image."""
    key = digest(data)
    hit = _recall("_cls_decoded", (key, name))
    if hit is not None:
        return hit
    try:
        img = read_image(data, name)
        dec = Decoded(name, key, tuple(img.shape), thumbnail(img), patch_input(img),
                      to_film(img) if is_radiograph(img) else None)
    except XrayLabError as e:
        dec = Decoded(name, key, None, None, None, None, error=one_line(e))
    except Exception as e:  # never a traceback for a student's file
        dec = Decoded(name, key, None, None, None, None, error=f"{name}: unexpected {one_line(e)}")
    return _remember("_cls_decoded", (key, name), dec, MAX_DECODED)


def thumbnail(img: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """uint8 picture for display: large films shrunk to `side`, tiny patches enlarged (nearest)."""
    u8 = np.clip(np.rint(np.asarray(img, dtype=np.float32) * 255), 0, 255).astype(np.uint8)
    h, w = u8.shape
    if max(h, w) > side:
        s = side / max(h, w)
        return np.asarray(Image.fromarray(u8).resize((max(1, round(w * s)), max(1, round(h * s))),
                                                     Image.Resampling.BOX))
    if max(h, w) < 128:
        return zoom(u8, max(1, 128 // max(h, w)))
    return u8


def zoom(a: np.ndarray, k: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (every pixel becomes k x k)."""
    return np.repeat(np.repeat(np.asarray(a), k, axis=0), k, axis=1)


def model_input_picture(patch: np.ndarray, k: int = INPUT_ZOOM) -> np.ndarray:
    """A 0..1 patch as 8-bit pixels, enlarged k x k with hard pixel edges."""
    return zoom(np.clip(np.rint(patch * 255), 0, 255).astype(np.uint8), k)


def patch_png(patch: np.ndarray, k: int = 3) -> bytes:
    """The same as PNG bytes: encoded once and reused, sent as is (st.image's "auto" format
    would re-encode it as a JPEG on every rerun and blur the pixels a student inspects)."""
    import io
    buf = io.BytesIO()
    Image.fromarray(model_input_picture(patch, k)).save(buf, format="PNG")
    return buf.getvalue()


def probabilities(choice: ModelChoice, dec: Decoded) -> dict[str, float]:
    key = (choice.key, dec.key)
    hit = _recall("_cls_probs", key)
    if hit is None:
        p = predict_patches(choice.model, dec.patch[None])[0]
        hit = _remember("_cls_probs", key, {c: float(v) for c, v in zip(CLASSES, p)}, 4 * MAX_DECODED)
    return hit


def film_map(choice: ModelChoice, image_key: str, film: np.ndarray, stride: int) -> tuple[AnatomyMap, bool]:
    """The anatomy map of a film, computed once per (image, model, stride) in this session.
    Returns (map, was_cached)."""
    key = (image_key, choice.key, int(stride))
    hit = _recall("_cls_maps", key)
    if hit is not None:
        return hit, True
    amap = anatomy_map(choice.model, film, stride=int(stride))
    # A patch model's (h, w, 4) probabilities are kept for "use position" (model x prior), in
    # half precision (0.5 MB a film) so a session's cache stays small; a segmentation model's
    # map already saw the whole film (no position to add): dropped.
    amap = dataclasses.replace(amap, probs=None if amap.method == "segment" else amap.probs.astype(np.float16))
    return _remember("_cls_maps", key, amap, MAX_MAPS), False


def is_segment(choice: ModelChoice) -> bool:
    """A segmentation model (U-Net): whole film in, a label per pixel out, no 32x32 input."""
    from xray_core.maps.inference import is_segmentation_model
    return is_segmentation_model(choice.model)


def method_note(amap: AnatomyMap) -> str:
    """One sentence: dense pass or patch by patch, and why (e.g. the seed CNN's row-wise BN)."""
    if amap.method == "segment":
        reason = amap.method_reason or "One pass of a segmentation network."
        return "Method: " + reason[0].lower() + reason[1:]
    if amap.method == "dense":
        said = ("Method: dense — the film went through the convolutions once and the dense head was read off "
                "the feature map at every patch position")
        if amap.exact:
            return said + ": exactly the patch-by-patch labels, because the network has no zero padding ('valid')."
        gh, gw = amap.grid_shape
        return (said + f"; {amap.refined:,} of the {gh * gw:,} positions, where the patches' zero border "
                       f"('same' padding) could change the label, were re-checked patch by patch.")
    reason = amap.method_reason or "Patch by patch."
    return "Method: " + reason[0].lower() + reason[1:]


def blend(amap: AnatomyMap, opacity: float) -> np.ndarray:
    """The map over the very film the model classified (film scale), for display."""
    return overlay(amap.film, amap.labels_film, opacity=float(opacity))


def patch_count(shape: tuple[int, int], stride: int) -> int:
    h, w = shape
    return -(-h // stride) * -(-w // stride)


def legend_html() -> str:
    chips = []
    for c, rgb in zip(CLASSES, CLASS_COLOURS):
        # the same colour as in every chart (one table: inference.CLASS_COLOURS), never white
        fill = f"background:rgb{tuple(rgb)}"
        text = "background (grey; not painted on the map)" if c == "background" else c
        chips.append(f'<span style="white-space:nowrap;margin-right:1em"><span style="display:inline-block;'
                     f'width:0.9em;height:0.9em;{fill};vertical-align:middle;margin-right:0.3em"></span>'
                     f'{text}</span>')
    return " ".join(chips)


# ---- demos ------------------------------------------------------------------------------

def demo_dataset(choice: ModelChoice):
    """The chosen run's dataset when it has a test split, else the built-in phantom."""
    ds = choice.dataset
    if ds is not None and ds.has("test"):
        return ds
    return shared_dataset("phantom")


def pick_patches(n_test: int, seed: int, n: int = DEMO_PATCHES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_test, size=min(n, n_test), replace=False))


@st.cache_resource(show_spinner="Rendering phantom test films…")
def demo_films() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """A few phantom test films as (id, float32 film in [0, 1], uint8 labels); shared, read-only."""
    from xray_core.data.phantom.build import phantom_radiographs
    out = []
    for rid, film, labels in phantom_radiographs(DEMO_FILMS, seed=0, split="test"):
        f = (np.asarray(film, dtype=np.float32) / 255.0) if film.dtype == np.uint8 else film.astype(np.float32)
        f.setflags(write=False)
        labels = np.asarray(labels, dtype=np.uint8)
        labels.setflags(write=False)
        out.append((rid, f, labels))
    return out


def new_seed() -> int:
    return int(np.random.default_rng().integers(0, 2**31 - 1))
