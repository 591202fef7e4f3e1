"""Check an uploaded .keras archive BEFORE Keras builds anything from it.

Keras allocates every layer's weights while it deserialises the architecture, so a
32 KB archive declaring `Dense(1_000_000)` costs gigabytes before any check on the
loaded model could run. Here the archive's own `config.json` is read first, with
caps on the zip (member count, sizes, compression) and on the JSON (size, depth),
and the architecture is walked without Keras:

- only the layer classes this app builds (see ALLOWED_LAYERS and xray_core/models.py)
  and Keras' own initialisers/regularisers/dtype policies, nothing from another module;
- one input of 32x32x1 and 4 outputs;
- the parameter count, computed from the config by propagating shapes, at most
  XRAY_LAB_MAX_PARAMS (default 5 M; the course CNN has 3.3 M);
- the multiply-adds per patch, with the training caps' arithmetic (xray_core/cost.py), at
  most XRAY_LAB_MAX_MACS (config.CAPS; default 150 M, the course CNN needs ~116 M);
- the activations one patch needs while it runs (the largest layer's input + output,
  float32), at most MAX_PATCH_BYTES, and all layers' outputs together (what a gradient
  keeps) at most MAX_PATCH_TOTAL_BYTES: prediction batches are then sized by bytes
  (BATCH_BYTES, inference.py), so any accepted model maps a film in bounded memory.

Only then `keras.models.load_model(path, safe_mode=True, compile=False)`.

    check_archive(path) -> Summary        DataError with a one-line reason otherwise
    load_checked(path) -> keras.Model
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass

from xray_core import CLASSES, FILM, PATCH
from xray_core.config import CAPS, cap
from xray_core.cost import FLOAT_BYTES, conv2d_cost, conv2d_transpose_cost, dense_cost, layer_bytes
from xray_core.errors import ConfigError, DataError

ALLOWED_LAYERS = frozenset({
    "InputLayer", "Flatten", "Dense", "BatchNormalization", "Activation", "LeakyReLU",
    "Dropout", "Conv2D", "MaxPooling2D",
    # the U-Net of arch segment (xray_core/segmentation.py): whole film in, a label per pixel out
    "AveragePooling2D", "Conv2DTranspose", "UpSampling2D", "Concatenate",
})
MODEL_CLASSES = frozenset({"Functional", "Sequential"})
# modules that nested objects (initialisers, regularisers, dtype policies...) may come from
ALLOWED_MODULES = frozenset({
    "keras", "keras.layers", "keras.initializers", "keras.regularizers", "keras.constraints",
    "keras.optimizers", "keras.optimizers.schedules", "keras.losses", "keras.metrics", "keras.activations",
    "keras.src.models.functional", "keras.src.models.sequential", "keras.models",
})
MAX_ARCHIVE_BYTES = 200 << 20
MAX_MEMBERS = 16
MAX_CONFIG_BYTES = 1 << 20
MAX_JSON_DEPTH = 40
MAX_LAYERS = 200
DEFAULT_MAX_PARAMS = CAPS["params"].default
INPUT_SHAPE = (PATCH, PATCH, 1)
FILM_SHAPE = (FILM, FILM, 1)       # a segmentation model's input: the whole film
# Activations of one prediction batch (inference.py sizes batches by this): a map of any
# accepted model then grows the server by tens of MB, not by gigabytes. One patch alone
# may need at most that much (the course CNN needs ~0.5 MB); all its layers' outputs
# together (what a gradient keeps for the backward pass) at most four times that.
BATCH_BYTES = 64 << 20
MAX_PATCH_BYTES = BATCH_BYTES
MAX_PATCH_TOTAL_BYTES = 4 * BATCH_BYTES


def _server_cap(name: str, default: int) -> int:
    try:
        return cap(name)
    except ConfigError:      # a bad environment value: the default (config validation says why)
        return default


def max_params() -> int:
    return _server_cap("params", DEFAULT_MAX_PARAMS)


def max_macs(film: bool = False) -> int:
    """Multiply-adds a model may need per patch (per film for a segmentation model)."""
    name = "film_multiply_adds" if film else "multiply_adds"
    return _server_cap(name, CAPS[name].default)


@dataclass(frozen=True)
class Summary:
    params: int
    layers: int
    multiply_adds: int = 0     # per patch, counted as xray_core/cost.py counts
    peak_bytes: int = 0        # largest layer input + output for one patch (float32)
    total_bytes: int = 0       # every layer's output for one patch (what a gradient keeps)


class _Bad(Exception):
    pass


def _depth(obj) -> int:
    """Nesting depth, iteratively (a deep document must not blow the stack)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_JSON_DEPTH:
            return d
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return deepest


def _read_config(path: str) -> dict:
    try:
        size = os.path.getsize(path)
    except OSError:
        raise _Bad("cannot be read") from None
    if size > MAX_ARCHIVE_BYTES:
        raise _Bad(f"the file is {size / 2**20:.0f} MB, over the {MAX_ARCHIVE_BYTES >> 20} MB limit")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise _Bad(f"the archive holds {len(infos)} files; a Keras model has 3")
            names = {i.filename for i in infos}
            if "config.json" not in names or "model.weights.h5" not in names:
                raise _Bad("not a Keras 3 model archive (config.json or model.weights.h5 missing)")
            # zipfile never returns more than a member's declared size, so these bound the reads
            total = sum(i.file_size for i in infos)
            limit = max_params() * 8 + (16 << 20)
            if total > limit:
                raise _Bad(f"the archive unpacks to {total / 2**20:.0f} MB, more than a model "
                           f"within the {max_params():,} parameter limit needs")
            info = zf.getinfo("config.json")
            if info.file_size > MAX_CONFIG_BYTES:
                raise _Bad("its config.json is too large")
            with zf.open(info) as fh:
                raw = fh.read(MAX_CONFIG_BYTES + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError):
        raise _Bad("not a valid .keras file (a zip archive)") from None
    except OSError:
        raise _Bad("cannot be read") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise _Bad("its config.json is too large")
    try:
        cfg = json.loads(raw)
    except (ValueError, RecursionError):
        raise _Bad("its config.json is not valid JSON") from None
    if _depth(cfg) > MAX_JSON_DEPTH:
        raise _Bad("its config.json is nested too deeply")
    if not isinstance(cfg, dict):
        raise _Bad("its config.json does not describe a model")
    return cfg


def _check_modules(obj) -> None:
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            mod = o.get("module")
            if mod is not None and mod not in ALLOWED_MODULES:
                raise _Bad(f"it uses {str(o.get('class_name'))[:40]!r} from outside Keras "
                           f"(module {str(mod)[:40]!r}), which this app does not load")
            reg = o.get("registered_name")
            if reg is not None and reg != o.get("class_name"):
                raise _Bad(f"it uses a custom object {str(reg)[:40]!r}, which this app does not load")
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)


def _int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _Bad(f"{what} is not a whole number")
    return v


def _pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if not isinstance(v, list) or len(v) != 2:
        raise _Bad(f"{what} is not a pair of whole numbers")
    a, b = (_int(x, what) for x in v)
    if a < 1 or b < 1:
        raise _Bad(f"{what} must be at least 1")
    return a, b


def _spatial(n: int, k: int, s: int, d: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(n / s)
    if padding == "valid":
        return (n - (k - 1) * d - 1) // s + 1
    raise _Bad(f"padding {padding!r} is not supported")


def _layer(cls: str, c: dict, shape: tuple, name: str) -> tuple[tuple, int, int]:
    """Output shape (without batch), parameter count and multiply-adds per patch of one layer
    (cost.py's arithmetic: batch norm and pooling count no multiply-adds, as in training)."""
    if cls in ("Activation", "LeakyReLU", "Dropout"):
        return shape, 0, 0
    if cls == "Flatten":
        return (math.prod(shape),), 0, 0
    if cls == "Dense":
        units = _int(c.get("units"), f"{name}: units")
        if units < 1 or not shape:
            raise _Bad(f"{name}: units must be at least 1")
        params, macs = dense_cost(shape[-1], units, bool(c.get("use_bias", True)), math.prod(shape[:-1]))
        return shape[:-1] + (units,), params, macs
    if cls == "Conv2DTranspose":
        if len(shape) != 3:
            raise _Bad(f"{name}: expects an image-shaped input")
        if c.get("data_format", "channels_last") not in (None, "channels_last"):
            raise _Bad(f"{name}: only channels_last is supported")
        if c.get("output_padding") is not None:
            raise _Bad(f"{name}: output_padding is not supported")
        if _pair(c.get("dilation_rate", 1), f"{name}: dilation_rate") != (1, 1):
            raise _Bad(f"{name}: dilation is not supported")
        h, w, ch = shape
        filters = _int(c.get("filters"), f"{name}: filters")
        kh, kw = _pair(c.get("kernel_size"), f"{name}: kernel_size")
        sh, sw = _pair(c.get("strides", 1), f"{name}: strides")
        padding = c.get("padding", "valid")
        if padding == "same":
            out = (h * sh, w * sw, filters)
        elif padding == "valid":
            out = ((h - 1) * sh + kh, (w - 1) * sw + kw, filters)
        else:
            raise _Bad(f"padding {padding!r} is not supported")
        if filters < 1:
            raise _Bad(f"{name}: filters must be at least 1")
        params, macs = conv2d_transpose_cost(kh, kw, ch, filters, bool(c.get("use_bias", True)), h, w, out[0], out[1])
        return out, params, macs
    if cls == "UpSampling2D":
        if len(shape) != 3:
            raise _Bad(f"{name}: expects an image-shaped input")
        if c.get("data_format", "channels_last") not in (None, "channels_last"):
            raise _Bad(f"{name}: only channels_last is supported")
        sh, sw = _pair(c.get("size", 2), f"{name}: size")
        if c.get("interpolation", "nearest") not in ("nearest", "bilinear"):
            raise _Bad(f"{name}: interpolation {str(c.get('interpolation'))[:20]!r} is not supported")
        return (shape[0] * sh, shape[1] * sw, shape[2]), 0, 0    # as cost.py: resizing counts nothing
    if cls in ("Conv2D", "MaxPooling2D", "AveragePooling2D"):
        if len(shape) != 3:
            raise _Bad(f"{name}: expects an image-shaped input")
        if c.get("data_format", "channels_last") not in (None, "channels_last"):
            raise _Bad(f"{name}: only channels_last is supported")
        h, w, ch = shape
        padding = c.get("padding", "valid")
        if cls == "Conv2D":
            filters = _int(c.get("filters"), f"{name}: filters")
            kh, kw = _pair(c.get("kernel_size"), f"{name}: kernel_size")
            sh, sw = _pair(c.get("strides", 1), f"{name}: strides")
            dh, dw = _pair(c.get("dilation_rate", 1), f"{name}: dilation_rate")
            groups = _int(c.get("groups", 1), f"{name}: groups") or 1
            if filters < 1 or ch % groups or filters % groups:
                raise _Bad(f"{name}: filters and groups do not fit the input")
            out = (_spatial(h, kh, sh, dh, padding), _spatial(w, kw, sw, dw, padding), filters)
            params, macs = conv2d_cost(kh, kw, ch // groups, filters, bool(c.get("use_bias", True)),
                                       max(out[0], 0), max(out[1], 0))
        else:
            ph, pw = _pair(c.get("pool_size", 2), f"{name}: pool_size")
            strides = c.get("strides")
            sh, sw = _pair(strides if strides is not None else [ph, pw], f"{name}: strides")
            out, params, macs = (_spatial(h, ph, sh, 1, padding), _spatial(w, pw, sw, 1, padding), ch), 0, 0
            if sh < ph or sw < pw:
                # overlapping windows (never in the course's 2x2/2 pools, which cost() leaves out):
                # each output compares its whole window, counted like multiply-adds so that a
                # 32x32 stride-1 pool over thousands of channels cannot pass as free
                macs = max(out[0], 0) * max(out[1], 0) * ch * ph * pw
        if out[0] < 1 or out[1] < 1:
            raise _Bad(f"{name}: the image shrinks to nothing")
        return out, params, macs
    if cls == "BatchNormalization":
        axis = c.get("axis", -1)
        axes = axis if isinstance(axis, list) else [axis]
        n = 1
        for a in axes:
            if isinstance(a, bool) or not isinstance(a, int):
                raise _Bad(f"{name}: axis is not a whole number")
            full = len(shape) + 1                     # with the batch axis
            a = a + full if a < 0 else a
            if not 1 <= a < full:
                raise _Bad(f"{name}: axis out of range")
            n *= shape[a - 1]
        per = 2 + (1 if c.get("center", True) else 0) + (1 if c.get("scale", True) else 0)
        return shape, per * n, 0
    raise _Bad(f"layer class {cls!r} is not one this app builds")


def _input_shape(c: dict) -> tuple:
    shape = c.get("batch_shape", c.get("batch_input_shape"))
    if not isinstance(shape, list) or not shape:
        raise _Bad("its input has no shape")
    dims = tuple(shape[1:])
    if dims not in (INPUT_SHAPE, FILM_SHAPE):
        raise _Bad(f"its input is {tuple(None if d is None else d for d in dims)}; "
                   f"expected {PATCH}x{PATCH}x1 patches (or {FILM}x{FILM}x1 whole films)")
    return dims


def _concatenate(c: dict, shapes: list[tuple], name: str) -> tuple:
    """Output shape of a Concatenate along the channels (the U-Net's skip connections)."""
    axis = c.get("axis", -1)
    if axis not in (-1, 3):
        raise _Bad(f"{name}: only concatenation along the channels is supported")
    if len(shapes) < 2 or any(len(s) != 3 or s[:2] != shapes[0][:2] for s in shapes):
        raise _Bad(f"{name}: joins maps of different sizes")
    return shapes[0][:2] + (sum(s[2] for s in shapes),)


def _tensor_sources(layer: dict) -> list[str]:
    """The names of the layers feeding this one (Functional inbound_nodes)."""
    out: list[str] = []
    for node in layer.get("inbound_nodes") or []:
        args = node.get("args", []) if isinstance(node, dict) else node
        stack = list(args) if isinstance(args, list) else [args]
        while stack:
            a = stack.pop()
            if isinstance(a, list):
                stack.extend(a)
            elif isinstance(a, dict) and a.get("class_name") == "__keras_tensor__":
                hist = (a.get("config") or {}).get("keras_history")
                if isinstance(hist, list) and hist and isinstance(hist[0], str):
                    out.append(hist[0])
    return out


def _walk(cfg: dict) -> Summary:
    model_cls = cfg.get("class_name")
    if model_cls not in MODEL_CLASSES:
        raise _Bad(f"the archive holds a {str(model_cls)[:40]!r}, not a Keras Functional or Sequential model")
    body = cfg.get("config")
    layers = body.get("layers") if isinstance(body, dict) else None
    if not isinstance(layers, list) or not layers:
        raise _Bad("the model has no layers")
    if len(layers) > MAX_LAYERS:
        raise _Bad(f"the model has {len(layers)} layers, more than {MAX_LAYERS}")
    shapes: dict[str, tuple] = {}
    params, prev, inputs = 0, None, 0
    macs = peak = total = 0
    film = False                # a whole-film (segmentation) model: its own input, output and cap
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
            raise _Bad("a layer has no configuration")
        cls = layer.get("class_name")
        c = layer["config"]
        name = str(c.get("name") or layer.get("name") or f"layer {i}")[:60]
        if cls not in ALLOWED_LAYERS:
            raise _Bad(f"layer {name!r} is a {str(cls)[:40]!r}; this app only loads "
                       f"{', '.join(sorted(ALLOWED_LAYERS))}")
        if cls == "InputLayer":
            out, n, m = _input_shape(c), 0, 0
            inputs += 1
            shape = out
            film = out == FILM_SHAPE
        elif cls == "Concatenate":
            src = _tensor_sources(layer) if model_cls == "Functional" else []
            if len(src) < 2 or any(s not in shapes for s in src):
                raise _Bad(f"layer {name!r} does not join earlier layers' outputs")
            # (Keras lists a node's tensors last first: order the sources as the model does)
            ins = [shapes[s] for s in src]
            out, n, m = _concatenate(c, ins, name), 0, 0
            shape = (ins[0][0], ins[0][1], sum(s[2] for s in ins))
        else:
            if model_cls == "Functional":
                src = _tensor_sources(layer)
                if len(src) != 1 or src[0] not in shapes:
                    raise _Bad(f"layer {name!r} does not take exactly one earlier layer's output")
                shape = shapes[src[0]]
            else:
                if prev is None:
                    raise _Bad("the model does not start with a 32x32x1 input")
                shape = prev
            built = (layer.get("build_config") or {}).get("input_shape")
            if built is not None and tuple(built[1:] if isinstance(built, list) else ()) != shape:
                raise _Bad(f"layer {name!r} declares an input shape that does not match the model")
            out, n, m = _layer(cls, c, shape, name)
        params += n
        if params > max_params():
            raise _Bad(f"it has more than {max_params():,} parameters (layer {name!r}); "
                       "the limit is XRAY_LAB_MAX_PARAMS")
        macs += m
        if macs > max_macs(film):
            what, env = ("film", CAPS["film_multiply_adds"].env) if film else ("patch", CAPS["multiply_adds"].env)
            raise _Bad(f"it needs more than {max_macs(film):,} multiply-adds per {what} (layer {name!r}), "
                       f"this server's limit ({env}): use fewer or smaller filters")
        peak = max(peak, layer_bytes(math.prod(shape), math.prod(out)))
        total += math.prod(out) * FLOAT_BYTES
        if peak > MAX_PATCH_BYTES or total > MAX_PATCH_TOTAL_BYTES:
            big, limit = (peak, MAX_PATCH_BYTES) if peak > MAX_PATCH_BYTES else (total, MAX_PATCH_TOTAL_BYTES)
            raise _Bad(f"one patch needs {big / 2**20:,.0f} MB of activations (layer {name!r}), more than "
                       f"this server's limit of {limit >> 20} MB: use fewer filters or pool earlier")
        if name in shapes:
            raise _Bad(f"two layers are named {name!r}")
        shapes[name] = out
        prev = out
    if inputs != 1:
        raise _Bad("the model must have exactly one 32x32x1 (or whole-film) input")
    if model_cls == "Functional":
        outs = body.get("output_layers")
        if isinstance(outs, list) and outs and isinstance(outs[0], str):
            outs = [outs]
        if not isinstance(outs, list) or len(outs) != 1 or not isinstance(outs[0], list) \
                or outs[0][0] not in shapes:
            raise _Bad("the model must have exactly one output")
        final = shapes[outs[0][0]]
    else:
        final = prev
    if film and final != (FILM, FILM, len(CLASSES)):
        raise _Bad(f"its output is {final}; expected {len(CLASSES)} class probabilities for every pixel "
                   f"({FILM}, {FILM}, {len(CLASSES)})")
    if not film and final != (len(CLASSES),):
        raise _Bad(f"its output is {final}; expected {len(CLASSES)} class probabilities")
    return Summary(params=params, layers=len(layers), multiply_adds=macs, peak_bytes=peak, total_bytes=total)


def check_archive(path: str, shown: str | None = None) -> Summary:
    """Summary of a .keras file that is safe to load, or DataError with a one-line reason.
    Messages name the file as `shown` (default: its base name, never the server folder)."""
    shown = shown or os.path.basename(path) or "model"
    try:
        cfg = _read_config(path)
        # the model is loaded with compile=False, so Keras never reads its compile_config
        # (a segmentation run's loss is a plain function there): only the rest is checked
        _check_modules({k: v for k, v in cfg.items() if k != "compile_config"})
        return _walk(cfg)
    except _Bad as e:
        raise DataError(f"{shown}: cannot load the model: {e}") from None


def load_checked(path: str, shown: str | None = None):
    """check_archive, then Keras' own loader with safe_mode on and no compile."""
    check_archive(path, shown)
    from xray_core.tf_quiet import load_keras
    keras = load_keras()
    return keras.models.load_model(path, safe_mode=True, compile=False)
