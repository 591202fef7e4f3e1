"""Classify patches and paint anatomy maps of whole radiographs.

- `predict_patches(model, x)`: (N, 32, 32[, 1]) -> (N, 4) probabilities, batched.
- `anatomy_map(model, film, stride)`: classify a 32x32 patch centred on every
  `stride`-th pixel of the film at training scale (long side 256), upsample the
  probability grid bilinearly, argmax -> a label per pixel at the 256 scale AND at
  the input's original size.
- `overlay(film, labels)`: the colour picture the Classify page shows.
- `classify_files(model, paths, map_dir)`: the CLI's per-file records.
- `evaluate_map(pred, true)`: pixel accuracy and per-class Dice.

Works with any Keras model mapping (N, 32, 32, 1) float32 in [0, 1] to 4 softmax
probabilities; this module imports neither keras nor tensorflow itself.
"""
from __future__ import annotations

import os
import threading
import time
import weakref
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from xray_core import CLASSES, PATCH
from xray_core.errors import ConfigError, DataError, ImageError, XrayLabError
from xray_core.data.images import MAX_BYTES, _check_2d, _one_line, is_radiograph, patch_input, read_image, to_film
from xray_core.data.preprocess import from_u8, to_u8
from xray_core import settings

# RGB per class index; background (0) is left transparent (the film shows through).
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128),   # background (not painted)
    (255, 215, 0),     # clavicle: yellow
    (30, 120, 255),    # lung: blue
    (230, 30, 30),     # heart: red
)
MAX_STRIDE = PATCH
# Anatomy maps are bounded like training: at most XRAY_LAB_MAP_SLOTS maps are computed at
# once in this process (default: half the cores, at least 1); a request that cannot get
# a slot within MAP_WAIT_SECONDS is refused in one line instead of starving the server.
MAP_WAIT_SECONDS = 60.0
MAP_BUSY = "The server is busy drawing other anatomy maps: try again in a minute, or use a coarser stride."


def _map_slots() -> int:
    return settings.get("XRAY_LAB_MAP_SLOTS") or max(1, (os.cpu_count() or 1) // 2)


_MAP_SLOTS = threading.BoundedSemaphore(_map_slots())
DEFAULT_SMOOTH = 8.0  # film pixels; see anatomy_map
DEFAULT_BATCH = 4096  # patches per prediction call at most; fewer when they would not fit BATCH_BYTES
DENSE_BYTES = 256 << 20   # the whole-film pass's widest step at most (dense.dense_bytes), else patches
METHODS = ("auto", "dense", "patches")
# What reading a Keras model's or layer's static shape raises when it has none: never called
# (AttributeError: "has never been called"), a subclassed model (no .inputs), several
# outputs (a list), an unknown dimension (int(None)).
NO_STATIC_SHAPE = (AttributeError, IndexError, TypeError, ValueError)
# A patch cut from the film sees zeros at its border, the whole-film pass sees the
# neighbours (dense.py): the two differ a little. anatomy_map measures by how much on a
# sample of grid points, then re-evaluates patch by patch the grid points whose two best
# classes are close enough for that difference to swap them.
REFINE_SAMPLE = 64      # grid points checked patch by patch to measure the border effect
REFINE_SAFETY = 2.0     # refine where the top-2 gap < SAFETY * (largest gap change seen)
REFINE_GIVE_UP = 0.5    # more than this share of the grid unsure: compute the map patch by patch

__all__ = [
    "AnatomyMap", "CLASS_COLOURS", "predict_patches", "anatomy_map", "overlay",
    "classify_files", "evaluate_map", "load_model", "map_method", "METHODS", "patch_bytes", "fit_batch",
    "is_segmentation_model", "segment_map",
]


@dataclass
class AnatomyMap:
    labels: np.ndarray            # uint8 (H, W) at the ORIGINAL input size, values 0..3
    probs: np.ndarray             # float32 (h, w, 4) at film scale (long side 256)
    shares: dict[str, float]      # class name -> fraction of the image's area
    stride: int                   # pixels between patch centres (film scale)
    seconds: float                # wall time of the whole map
    labels_film: np.ndarray       # uint8 (h, w): argmax of probs, at film scale
    film: np.ndarray              # float32 (h, w): the 8-bit film the patches came from
    grid_shape: tuple[int, int]   # patches classified per column and row
    method: str = "patches"       # "dense" (one pass over the film) or "patches"
    method_reason: str = ""       # why that method, one sentence (shown on the Classify page)
    refined: int = 0              # dense only: grid points re-checked patch by patch
    exact: bool = False           # dense only: no zero padding, so the patch-by-patch values themselves


# ---- loading ------------------------------------------------------------------------------
def load_model(path: str):
    """A saved .keras model, checked to map 32x32x1 patches to 4 classes.
    DataError with a one-line reason otherwise (missing file, not a Keras archive,
    wrong input/output shape, layers this app does not build, too many parameters).
    The archive's architecture is checked before Keras builds anything
    (xray_core/modelcheck.py): the Classify page and the CLI both come through here.
    Messages name the file by its base name only: a stored run's model lives in a server
    folder no browser should see."""
    shown = os.path.basename(path) or "model"
    if not os.path.isfile(path):
        raise DataError(f"{shown}: no such model file")
    from xray_core.maps.modelcheck import load_checked
    try:
        model = load_checked(path, shown=shown)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{shown}: cannot load the model ({_one_line(e).replace(path, shown)})") from None
    try:
        n_in = int(np.prod([int(d) for d in model.inputs[0].shape[1:]]))
        n_out = int(model.outputs[0].shape[-1])
    except Exception:
        raise DataError(f"{shown}: not a single-input, single-output Keras model") from None
    if is_segmentation_model(model):        # a U-Net (arch segment): whole film in, a label per pixel out
        return model
    if n_in != PATCH * PATCH or n_out != len(CLASSES):
        raise DataError(f"{shown}: model maps {tuple(model.inputs[0].shape[1:])} to {n_out} outputs; "
                        f"expected ({PATCH}, {PATCH}, 1) patches to {len(CLASSES)} classes, or whole "
                        f"films to a map of {len(CLASSES)} classes")
    return model


def is_segmentation_model(model) -> bool:
    """A model that maps a whole square film (H, W, 1), H > 32, to class probabilities for
    every pixel (H, W, 4): the U-Net of arch segment (xray_core/segmentation.py)."""
    try:
        i = tuple(int(d) for d in model.inputs[0].shape[1:])
        o = tuple(int(d) for d in model.outputs[0].shape[1:])
    except NO_STATIC_SHAPE:
        return False
    return len(i) == 3 and i[2] == 1 and i[0] == i[1] > PATCH and o == (i[0], i[1], len(CLASSES))


# ---- batches sized by bytes ---------------------------------------------------------
_bytes_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def patch_bytes(model) -> tuple[int, int]:
    """(peak, total) bytes of activations one patch needs in `model`: the largest layer's
    input + output, and every layer's output (what a gradient keeps), as modelcheck.py
    measures an archive (cost.layer_bytes). Read from the built model's layer shapes."""
    try:
        return _bytes_cache[model]
    except (KeyError, TypeError):
        pass
    from xray_core.cost import FLOAT_BYTES, layer_bytes
    peak = total = 0
    prev = PATCH * PATCH
    for layer in getattr(model, "layers", ()):
        try:
            out = int(np.prod([int(d) for d in layer.output.shape[1:]]))
        except NO_STATIC_SHAPE:  # a layer without a static shape: skip it, the others still count
            continue
        peak, total, prev = max(peak, layer_bytes(prev, out)), total + out * FLOAT_BYTES, out
    result = (max(peak, layer_bytes(prev, prev)), max(total, prev * FLOAT_BYTES))
    try:
        _bytes_cache[model] = result
    except TypeError:
        pass
    return result


def fit_batch(model, batch: int = DEFAULT_BATCH, gradient: bool = False) -> int:
    """How many patches go through `model` in one call: at most `batch`, and no more than
    modelcheck.BATCH_BYTES of activations (a gradient keeps every layer's output)."""
    from xray_core.maps.modelcheck import BATCH_BYTES
    peak, total = patch_bytes(model)
    per = total if gradient else peak
    return max(1, min(int(batch), BATCH_BYTES // max(1, per)))


# ---- patch classification -----------------------------------------------------------
_warm_lock = threading.Lock()
_warm: "weakref.WeakSet" = weakref.WeakSet()


def _predict_batch(model, xb: np.ndarray) -> np.ndarray:
    """One forward pass. The first call per model builds Keras's predict function under a
    lock (two threads must not build it at once); later calls run concurrently."""
    if model not in _warm:
        with _warm_lock:
            out = model.predict_on_batch(xb)
            _warm.add(model)
    else:
        out = model.predict_on_batch(xb)
    return np.asarray(out, dtype=np.float32)


def _model_input(model, x: np.ndarray) -> np.ndarray:
    """(n, 32, 32, 1) float32, or reshaped to the model's own input shape if it differs."""
    try:
        want = tuple(int(d) for d in model.inputs[0].shape[1:])
    except NO_STATIC_SHAPE:     # no symbolic input (a subclassed model): it takes the patches as they are
        return x
    if want != x.shape[1:] and int(np.prod(want)) == PATCH * PATCH:
        return x.reshape((x.shape[0],) + want)
    return x


def predict_patches(model, x: np.ndarray, batch: int = DEFAULT_BATCH) -> np.ndarray:
    """Class probabilities (N, 4) float32 for patches (N, 32, 32) or (N, 32, 32, 1) in [0, 1]."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2 and x.shape == (PATCH, PATCH):
        x = x[None]
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != (PATCH, PATCH, 1):
        raise ImageError(f"patches must be N x {PATCH} x {PATCH} (x 1), got shape {x.shape}")
    batch = fit_batch(model, _check_batch(batch))
    n = x.shape[0]
    out = np.empty((n, len(CLASSES)), dtype=np.float32)
    for i in range(0, n, batch):
        xb = _model_input(model, np.ascontiguousarray(x[i:i + batch]))
        p = _predict_batch(model, xb)
        if p.shape != (xb.shape[0], len(CLASSES)):
            raise ConfigError(f"the model returned shape {p.shape}; expected "
                              f"({xb.shape[0]}, {len(CLASSES)}) class probabilities")
        out[i:i + batch] = p
    return out


# ---- anatomy maps ---------------------------------------------------------------------
def anatomy_map(model, film: np.ndarray, stride: int = 4, batch: int = DEFAULT_BATCH,
                window: bool = False, smooth: float = DEFAULT_SMOOTH, method: str = "auto",
                refine_margin: float | None = None) -> AnatomyMap:
    """Label every pixel of a radiograph with the class of the patch centred on it.

    The image is brought to film scale (`to_film`: long side 256, `window` as there),
    quantised to 8 bits with `preprocess.to_u8` (so every map patch is exactly
    `preprocess.to_model_input` of that piece of the film), reflection-padded by 16 px so that a
    32x32 patch is centred on every pixel, and a patch every `stride` pixels is
    classified. The (h/stride x w/stride x 4) probability grid is upsampled
    bilinearly (to film scale for `probs`, directly to the input size for `labels`)
    and argmax'ed, so maps keep smooth edges at coarse strides.

    `smooth` (film pixels, 0 = off) averages each class's probability over nearby
    positions with a Gaussian before the argmax: neighbouring patches overlap by most
    of their pixels, so isolated disagreeing patches are usually noise. σ = 8 px (a
    quarter patch) was chosen from that reasoning, not tuned on the evaluation films;
    on the 37 JSRT test films it lifts the Task 5 FC's pixel accuracy 0.69 -> 0.73.

    `method`: "patches" classifies every patch on its own; "dense" runs a convolutional
    model once over the film (xray_core/dense.py) and evaluates its dense head on the
    feature map; "auto" (default) uses dense where the model allows it. A model that
    cannot go dense (FC, the course's row-wise batch norm) falls back to patches with
    or without being asked; `method`/`method_reason` of the result say what ran and why.
    """
    t0 = time.perf_counter()
    stride = _check_stride(stride)
    if is_segmentation_model(model):         # one pass, a label per pixel: stride and method do not apply
        return segment_map(model, film, window=window)
    batch = fit_batch(model, _check_batch(batch))
    img = _check_2d(film, "anatomy_map")
    if not np.all(np.isfinite(img)):
        raise ImageError("anatomy_map: the film contains NaN or infinite values")
    H, W = img.shape

    f8 = to_u8(to_film(img, window=window))
    h, w = f8.shape
    half = PATCH // 2
    padded = np.pad(f8, half, mode="reflect")
    # window (i, j) of the padded film is the patch centred on film pixel (i, j)
    windows = sliding_window_view(padded, (PATCH, PATCH))[:h:stride, :w:stride]
    gh, gw = windows.shape[:2]

    if not _MAP_SLOTS.acquire(timeout=MAP_WAIT_SECONDS):
        raise ImageError(MAP_BUSY)
    try:
        used, reason = _choose_method(model, method)
        refined = 0
        exact = False
        if used == "dense":
            from xray_core.maps.dense import dense_bytes, dense_plan
            need = dense_bytes(dense_plan(model), *padded.shape, stride)
            if need > DENSE_BYTES:     # a wide network over the whole film: patches, in small batches
                used = "patches"
                reason = (f"Patch by patch, because the whole-film pass of this network would hold "
                          f"{need / 2**20:,.0f} MB at once, more than the {DENSE_BYTES >> 20} MB a map may use.")
        if used == "dense":
            from xray_core.maps.dense import dense_grid, dense_plan
            grid = dense_grid(model, from_u8(padded), stride, gh, gw)
            exact = dense_plan(model).exact
            # a network without zero padding gives the patch values themselves: nothing to re-check
            if (refine_margin is None and not exact) or (refine_margin or 0) > 0:
                grid, refined, err = _refine(model, grid, windows, batch, refine_margin)
                if grid is None:    # unsure nearly everywhere: the patch pass is the cheaper exact map
                    used = "patches"
                    reason = (f"Patch by patch, because the whole-film pass moved this network's class "
                              f"probabilities by up to {err:.2f} at the checked points (its patches' zero "
                              f"borders matter to it), too much to trust the dense labels. With 'valid' "
                              f"padding (as in p2-corrected) a network has no such border and maps in one pass.")
        if used != "dense":
            grid = np.empty((gh, gw, len(CLASSES)), dtype=np.float32)
            rows = max(1, batch // gw)
            for r0 in range(0, gh, rows):
                chunk = windows[r0:r0 + rows]
                xb = from_u8(chunk.reshape(-1, PATCH, PATCH, 1))
                p = _checked(_predict_batch(model, _model_input(model, xb)), xb.shape[0])
                grid[r0:r0 + chunk.shape[0]] = p.reshape(chunk.shape[0], gw, len(CLASSES))
    finally:
        _MAP_SLOTS.release()

    smooth = _check_smooth(smooth)
    if smooth > 0:
        from scipy.ndimage import gaussian_filter
        sigma = smooth / stride
        grid = np.stack([gaussian_filter(grid[..., k], sigma, mode="nearest") for k in range(grid.shape[-1])], -1)
    # film scale: film pixel y sits at grid coordinate y / stride
    probs = _upsample(grid, np.arange(h) / stride, np.arange(w) / stride)
    labels_film = probs.argmax(axis=-1).astype(np.uint8)
    if (H, W) == (h, w):
        labels = labels_film.copy()
    else:   # original size: pixel centres mapped onto film coordinates, then the grid
        ys = ((np.arange(H) + 0.5) * (h / H) - 0.5) / stride
        xs = ((np.arange(W) + 0.5) * (w / W) - 0.5) / stride
        labels = np.empty((H, W), dtype=np.uint8)
        step = max(1, (1 << 22) // max(1, W * len(CLASSES)))   # bound memory (~16 MB chunks)
        for y0 in range(0, H, step):
            labels[y0:y0 + step] = _upsample(grid, ys[y0:y0 + step], xs).argmax(axis=-1)

    counts = np.bincount(labels.ravel(), minlength=len(CLASSES))[:len(CLASSES)]
    shares = {c: float(n) / labels.size for c, n in zip(CLASSES, counts)}
    return AnatomyMap(labels=labels, probs=probs, shares=shares, stride=stride,
                      seconds=time.perf_counter() - t0, labels_film=labels_film,
                      film=from_u8(f8), grid_shape=(gh, gw),
                      method=used, method_reason=reason, refined=refined, exact=used == "dense" and exact)


SEGMENT_REASON = "One pass of a segmentation network over the whole film: a label for every pixel."


def segment_map(model, film: np.ndarray, window: bool = False) -> AnatomyMap:
    """The anatomy map of a segmentation model (is_segmentation_model): the film brought to
    film scale and quantised to 8 bits exactly as for a patch model (and as the training films
    were stored), resized to the model's input if it is not square, one forward pass, and the
    per-pixel probabilities resized back to film scale and to the input's own size."""
    from xray_core.maps.prior import resize_planes
    t0 = time.perf_counter()
    img = _check_2d(film, "anatomy_map")
    if not np.all(np.isfinite(img)):
        raise ImageError("anatomy_map: the film contains NaN or infinite values")
    H, W = img.shape
    f8 = to_u8(to_film(img, window=window))
    h, w = f8.shape
    side = int(model.inputs[0].shape[1])
    x = f8 if (h, w) == (side, side) else np.asarray(
        Image.fromarray(f8).resize((side, side), Image.Resampling.BILINEAR))
    if not _MAP_SLOTS.acquire(timeout=MAP_WAIT_SECONDS):
        raise ImageError(MAP_BUSY)
    try:
        p = _predict_batch(model, from_u8(x)[None, :, :, None])
    finally:
        _MAP_SLOTS.release()
    if p.shape != (1, side, side, len(CLASSES)):
        raise ConfigError(f"the model returned shape {p.shape}; expected (1, {side}, {side}, {len(CLASSES)})")
    grid = p[0]
    probs = grid if (h, w) == (side, side) else resize_planes(grid, (h, w)).astype(np.float32)
    labels_film = probs.argmax(axis=-1).astype(np.uint8)
    if (H, W) == (h, w):
        labels = labels_film.copy()
    else:
        labels = resize_planes(grid, (H, W)).argmax(axis=-1).astype(np.uint8)
    counts = np.bincount(labels.ravel(), minlength=len(CLASSES))[:len(CLASSES)]
    shares = {c: float(n) / labels.size for c, n in zip(CLASSES, counts)}
    return AnatomyMap(labels=labels, probs=probs, shares=shares, stride=1, seconds=time.perf_counter() - t0,
                      labels_film=labels_film, film=from_u8(f8), grid_shape=(side, side),
                      method="segment", method_reason=SEGMENT_REASON)


def _refine(model, grid: np.ndarray, windows: np.ndarray, batch: int, margin: float | None):
    """Replace dense grid values by exact patch values where the label could differ.
    margin None: calibrate on a sample (see REFINE_SAMPLE); else refine where gap < margin.
    Returns (grid, points re-checked, largest change seen); grid None when more than
    REFINE_GIVE_UP of the grid would need re-checking (the caller goes patch by patch)."""
    gh, gw = grid.shape[:2]

    def exact(idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), len(CLASSES)), np.float32)
        for k in range(0, len(idx), batch):
            part = idx[k:k + batch]
            xb = from_u8(windows[part[:, 0], part[:, 1]].reshape(-1, PATCH, PATCH, 1))
            out[k:k + len(part)] = _checked(_predict_batch(model, _model_input(model, xb)), len(part))
        return out

    done = np.zeros((gh, gw), bool)
    if margin is None:
        n = min(REFINE_SAMPLE, gh * gw)
        flat = np.unique(np.linspace(0, gh * gw - 1, n).round().astype(np.intp))
        idx = np.stack(np.unravel_index(flat, (gh, gw)), -1)
        p = exact(idx)
        err = np.abs(p - grid[idx[:, 0], idx[:, 1]]).max()
        grid[idx[:, 0], idx[:, 1]] = p
        done[idx[:, 0], idx[:, 1]] = True
        margin = REFINE_SAFETY * 2 * float(err)   # a gap moves by at most twice the largest change
    else:
        err = float("nan")
    top2 = np.sort(grid, axis=-1)[..., -2:]
    idx = np.argwhere((top2[..., 1] - top2[..., 0] < margin) & ~done)
    if len(idx) > REFINE_GIVE_UP * gh * gw:
        return None, 0, float(err)
    if len(idx):
        grid[idx[:, 0], idx[:, 1]] = exact(idx)
    return grid, int(done.sum()) + len(idx), float(err)


def _checked(p: np.ndarray, n: int) -> np.ndarray:
    if p.shape != (n, len(CLASSES)):
        raise ConfigError(f"the model returned shape {p.shape}; expected "
                          f"({n}, {len(CLASSES)}) class probabilities")
    return p


def map_method(model, method: str = "auto") -> tuple[str, str]:
    """("dense" | "patches", one-sentence reason) -- what anatomy_map will run."""
    return _choose_method(model, method)


def _choose_method(model, method: str) -> tuple[str, str]:
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "patches":
        return "patches", "Patch by patch, as asked."
    from xray_core.maps.dense import dense_plan
    plan = dense_plan(model)
    if plan.ok:
        return "dense", plan.reason
    return "patches", "Patch by patch, because " + plan.reason


def _upsample(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Separable bilinear interpolation of grid (gh, gw, C) at fractional (ys, xs)."""
    def axis(coords: np.ndarray, n: int):
        c = np.clip(np.asarray(coords, dtype=np.float32), 0, n - 1)
        i0 = np.floor(c).astype(np.intp)
        i1 = np.minimum(i0 + 1, n - 1)
        t = (c - i0).astype(np.float32)
        return i0, i1, t

    i0, i1, t = axis(ys, grid.shape[0])
    rows = grid[i0] * (1 - t)[:, None, None] + grid[i1] * t[:, None, None]
    j0, j1, u = axis(xs, grid.shape[1])
    return (rows[:, j0] * (1 - u)[None, :, None] + rows[:, j1] * u[None, :, None]).astype(np.float32)


def overlay(film: np.ndarray, labels: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """uint8 RGB (H, W, 3): the film in grey with clavicle/lung/heart tinted by
    CLASS_COLOURS; background stays transparent. Labels of another size are resized
    (nearest) to the film."""
    f = _check_2d(film, "overlay")
    if not (isinstance(opacity, (int, float)) and 0.0 <= float(opacity) <= 1.0):
        raise ConfigError(f"overlay opacity must be in [0, 1], got {opacity!r}")
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ImageError(f"overlay: labels must be 2-D, got shape {lab.shape}")
    if lab.shape != f.shape:
        lab = np.asarray(Image.fromarray(lab.astype(np.uint8)).resize(
            (f.shape[1], f.shape[0]), Image.Resampling.NEAREST))
    rgb = np.repeat(to_u8(f)[..., None], 3, axis=-1).astype(np.float32)
    op = np.float32(opacity)
    for c in range(1, len(CLASSES)):
        m = lab == c
        if m.any():
            rgb[m] = (1 - op) * rgb[m] + op * np.asarray(CLASS_COLOURS[c], dtype=np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


# ---- CLI batch ---------------------------------------------------------------------------
def classify_files(model, paths: list[str], map_dir: str | None = None, stride: int = 4,
                   window: bool = False, method: str = "auto") -> list[dict]:
    """One JSON-ready record per path, in order; a bad file never stops the others.

    ok:    {"file", "ok": True, "label", "probabilities": {class: p}} -- the model on
           the whole image resized to 32x32 (exactly what the model sees, `patch_input`);
           radiographs (either side >= 128 px) also get "shares" (class -> area
           fraction of the anatomy map), "map": the path of the label map and
           "overlay": the path of its coloured overlay (both None without map_dir),
           "method" ("dense" | "patches"), "method_reason" (one sentence) and
           "map_seconds" (wall time of the anatomy map).
    error: {"file", "ok": False, "error": "<one line>"}

    Label maps are written as map_dir/<input stem>.png, 8-bit grayscale, the same
    size as the input, pixel value = class index 0..3 (so they look nearly black;
    they are data, like the shared *_labels.png). Beside each, map_dir/<stem>.overlay.png
    is the one to look at: the film in grey with the classes tinted in the app's
    CLASS_COLOURS (`overlay`). A name that would overwrite an input file or a file
    written earlier in the same call gets a _2, _3... suffix (on both files).
    """
    stride = _check_stride(stride)
    segment = is_segmentation_model(model)
    if segment:     # one pass per film (segment_map): the method does not apply, a bad name still fails
        if method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    else:
        _choose_method(model, method)   # a bad method name fails once, before any file
    inputs = {os.path.abspath(p) for p in paths}
    written: set[str] = set()
    out: list[dict] = []
    for path in paths:
        rec: dict = {"file": path}
        name = os.path.basename(path) or path
        try:
            size = os.path.getsize(path)
            if size > MAX_BYTES:
                raise ImageError(f"{name}: file is {size / 2**20:.1f} MB, over the "
                                 f"{MAX_BYTES / 2**20:.0f} MB limit")
            with open(path, "rb") as fh:
                data = fh.read()
            img = read_image(data, name)
            if segment:
                if not is_radiograph(img):
                    h, w = np.shape(img)[:2]
                    raise ImageError(f"{name}: is {w}x{h}, a patch; a segmentation model maps whole films "
                                     f"(at least 128 px on a side)")
                amap = segment_map(model, img, window=window)
                # the film's label: the class covering most of it; its probabilities: the mean per pixel
                p = amap.probs.reshape(-1, len(CLASSES)).mean(0)
                rec.update(ok=True, label=max(amap.shares, key=amap.shares.get),
                           probabilities={c: float(v) for c, v in zip(CLASSES, p)})
            else:
                p = predict_patches(model, patch_input(img)[None])[0]
                rec.update(ok=True, label=CLASSES[int(np.argmax(p))],
                           probabilities={c: float(v) for c, v in zip(CLASSES, p)})
            if is_radiograph(img):
                if not segment:
                    amap = anatomy_map(model, img, stride=stride, window=window, method=method)
                rec["shares"] = amap.shares
                rec.update(method=amap.method, method_reason=amap.method_reason,
                           map_seconds=amap.seconds)
                rec["map"] = rec["overlay"] = None
                if map_dir is not None:
                    target, tinted = _map_path(map_dir, path, inputs | written)
                    os.makedirs(map_dir, exist_ok=True)
                    Image.fromarray(amap.labels).save(target, format="PNG")
                    written.add(os.path.abspath(target))
                    rec["map"] = target
                    Image.fromarray(overlay(img, amap.labels)).save(tinted, format="PNG")
                    written.add(os.path.abspath(tinted))
                    rec["overlay"] = tinted
        except XrayLabError as e:
            rec = {"file": path, "ok": False, "error": _one_line(e)}
        except OSError as e:
            why = e.strerror or _one_line(e)
            rec = {"file": path, "ok": False, "error": f"{name}: cannot read/write file ({why})"}
        except Exception as e:   # never let one file stop the batch
            rec = {"file": path, "ok": False,
                   "error": f"{name}: unexpected {type(e).__name__}: {_one_line(e)}"}
        out.append(rec)
    return out


def _map_path(map_dir: str, path: str, taken: set[str]) -> tuple[str, str]:
    """(label map, overlay) paths for one input, neither of them in `taken`."""
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    name, n = stem, 2
    while True:
        pair = (os.path.join(map_dir, f"{name}.png"), os.path.join(map_dir, f"{name}.overlay.png"))
        if not any(os.path.abspath(p) in taken for p in pair):
            return pair
        name, n = f"{stem}_{n}", n + 1


# ---- evaluation ------------------------------------------------------------------------
def evaluate_map(pred_labels: np.ndarray, true_labels: np.ndarray) -> dict:
    """{"pixel_accuracy", "dice": {class: Dice}, "mean_dice"}; a class absent from both
    maps has no Dice (skipped, never NaN)."""
    p, t = np.asarray(pred_labels), np.asarray(true_labels)
    if p.shape != t.shape:
        raise ImageError(f"label maps differ in size: predicted {p.shape}, true {t.shape}")
    if p.size == 0:
        raise ImageError("label maps are empty")
    dice: dict[str, float] = {}
    for c, name in enumerate(CLASSES):
        pc, tc = p == c, t == c
        denom = int(pc.sum()) + int(tc.sum())
        if denom:
            dice[name] = 2.0 * int(np.logical_and(pc, tc).sum()) / denom
    return {
        "pixel_accuracy": float(np.mean(p == t)),
        "dice": dice,
        "mean_dice": float(np.mean(list(dice.values()))) if dice else None,
    }


def _check_smooth(smooth) -> float:
    if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not (0 <= smooth <= 64):
        raise ConfigError(f"smooth must be a number of pixels from 0 to 64, got {smooth!r}")
    return float(smooth)


def _check_stride(stride) -> int:
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) \
            or not 1 <= int(stride) <= MAX_STRIDE:
        raise ConfigError(f"stride must be a whole number from 1 to {MAX_STRIDE}, got {stride!r}")
    return int(stride)


def _check_batch(batch) -> int:
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or int(batch) < 1:
        raise ConfigError(f"batch must be a whole number >= 1, got {batch!r}")
    return int(batch)
