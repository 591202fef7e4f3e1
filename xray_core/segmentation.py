"""Part 3 of the course, from patches to pixels: a U-Net style encoder-decoder.

A patch model answers one label per 32x32 patch; a segmentation model answers a label
for every pixel of the whole film at once, and sees the whole film while it does:
the heart is told from the lung below it by where it is, not only by how it looks.

The network, in plain Keras, with layer names a student can read in the layer table::

    film (256x256x1)
    shrink                      average-pool the film to input_size (e.g. 128x128)
    enc1_conv1 enc1_bn1 enc1_relu1 enc1_conv2 enc1_bn2 enc1_relu2      base filters
    pool1                       halve the map (2x2 max-pool)
    enc2_...  pool2  ...  encD_...  poolD                              filters double per level
    bottleneck_conv1 ... bottleneck_relu2 [bottleneck_drop]            the coarsest, widest map
    upD                         2x2 transposed conv: double the map, halve the filters
    skipD                       concatenate encD's output (the skip connection: fine detail)
    decD_conv1 decD_bn1 decD_relu1 decD_conv2 decD_bn2 decD_relu2
    ...  up1 skip1 dec1_...     back at input_size
    head                        1x1 conv: one score per class per pixel
    grow                        bilinear upsampling back to the film size
    probabilities               softmax over the 4 classes

`dec{i}` works at the same resolution as `enc{i}` and joins its output through
`skip{i}`, so the table reads as pairs. `depth` is the number of pooling steps (4 on a
128x128 input: 128 -> 64 -> 32 -> 16 -> 8 at the bottleneck). With batch norm, convs
have no bias (the norm's beta replaces it) and its running statistics use momentum 0.9. Dropout, when > 0, is applied once, after
the bottleneck.

Knobs: `input_size`, `depth`, `base_filters`, `batch_norm`, `dropout`; losses
`crossentropy | dice | both` (`segmentation_loss`). `unet_cost` counts parameters and
multiply-adds by arithmetic alone (no Keras: xray_core/cost.py's conventions, a bias is
one multiply-add per output), tests/test_segmentation.py checks it against Keras.

Keras is imported inside the functions that need it, so `unet_cost` and the checks
stay instant.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from xray_core import CLASSES, FILM
from xray_core.errors import ConfigError

__all__ = ["LOSSES", "DEFAULTS", "check_knobs", "unet_cost", "build_unet", "segmentation_loss",
           "compile_unet", "predict_maps", "layer_names"]

N_CLASSES = len(CLASSES)
LOSSES = ("crossentropy", "dice", "both")
DEFAULTS = {"input_size": 128, "depth": 4, "base_filters": 16, "batch_norm": True,
            "dropout": 0.0, "film_size": FILM}
MAX_DEPTH = 6
# Batch norm's running statistics (used when mapping) follow the batches with this momentum:
# Keras' 0.99 needs hundreds of steps to forget its start, more than a short run of a few
# epochs on 150 films makes; 0.9 settles within ~30 steps.
BN_MOMENTUM = 0.9
MAX_BASE_FILTERS = 128


def check_knobs(input_size: int = 128, depth: int = 4, base_filters: int = 16, batch_norm: bool = True,
                dropout: float = 0.0, film_size: int = FILM) -> dict[str, Any]:
    """The knobs, checked; a ConfigError with one line saying what is wrong otherwise."""
    def whole(v, name, lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= int(v) <= hi:
            raise ConfigError(f"{name} must be a whole number from {lo} to {hi}, got {v!r}")
        return int(v)

    film_size = whole(film_size, "film size", 16, 4096)
    input_size = whole(input_size, "input size", 16, film_size)
    depth = whole(depth, "depth", 1, MAX_DEPTH)
    base_filters = whole(base_filters, "base filters", 1, MAX_BASE_FILTERS)
    if film_size % input_size:
        raise ConfigError(f"input size {input_size} must divide the film size {film_size} "
                          f"(e.g. {film_size // 2} or {film_size // 4})")
    if input_size % (2 ** depth):
        raise ConfigError(f"input size {input_size} cannot be halved {depth} times "
                          f"(depth {depth} needs a multiple of {2 ** depth})")
    try:
        dropout = float(dropout)
    except (TypeError, ValueError):
        raise ConfigError(f"dropout must be a number from 0 to 0.9, got {dropout!r}") from None
    if not 0.0 <= dropout <= 0.9:
        raise ConfigError(f"dropout must be from 0 to 0.9, got {dropout}")
    return {"input_size": input_size, "depth": depth, "base_filters": base_filters,
            "batch_norm": bool(batch_norm), "dropout": dropout, "film_size": film_size}


def _filters(base: int, level: int) -> int:
    """Filters at encoder level `level` (1-based); the bottleneck is level depth+1."""
    return base * 2 ** (level - 1)


# the activation layers' names: enc1_relu1, enc1_leaky1, ...
ACTIVATION_NAMES = {"relu": "relu", "leaky_relu": "leaky", "elu": "elu", "tanh": "tanh", "sigmoid": "sigmoid"}


def layer_names(depth: int = 4, batch_norm: bool = True, dropout: float = 0.0,
                shrink: bool = True, activation: str = "relu") -> list[str]:
    """The layer names build_unet gives, in order (the input layer 'film' first)."""
    act = ACTIVATION_NAMES[activation]

    def block(prefix):
        out = []
        for j in (1, 2):
            out += [f"{prefix}_conv{j}"] + ([f"{prefix}_bn{j}"] if batch_norm else []) + [f"{prefix}_{act}{j}"]
        return out

    names = ["film"] + (["shrink"] if shrink else [])
    for i in range(1, depth + 1):
        names += block(f"enc{i}") + [f"pool{i}"]
    names += block("bottleneck") + (["bottleneck_drop"] if dropout > 0 else [])
    for i in range(depth, 0, -1):
        names += [f"up{i}", f"skip{i}"] + block(f"dec{i}")
    names += ["head"] + (["grow"] if shrink else []) + ["probabilities"]
    return names


def unet_cost(input_size: int = 128, depth: int = 4, base_filters: int = 16, batch_norm: bool = True,
              dropout: float = 0.0, film_size: int = FILM, n_classes: int = N_CLASSES) -> dict[str, int]:
    """{"params": all parameters (trainable + batch-norm statistics), "multiply_adds": of one
    forward pass on one film} by arithmetic, as build_unet builds it. Pooling, the bilinear
    `grow` and the softmax count no multiply-adds (as in cost.py)."""
    k = check_knobs(input_size, depth, base_filters, batch_norm, dropout, film_size)
    from xray_core.cost import unet_cost as arithmetic   # one count: the cost caps use it too
    return arithmetic(k["input_size"], k["depth"], k["base_filters"], k["batch_norm"], k["film_size"], n_classes)


def build_unet(input_size: int = 128, depth: int = 4, base_filters: int = 16, batch_norm: bool = True,
               dropout: float = 0.0, film_size: int = FILM, n_classes: int = N_CLASSES,
               seed: int | None = None, name: str = "unet", activation: str = "relu",
               alpha: float = 0.01, l2: float = 0.0):
    """The U-Net (see the module doc): film (film_size, film_size, 1) in [0, 1] ->
    per-pixel class probabilities (film_size, film_size, n_classes), whatever input_size
    the network works at inside. `activation` (alpha: LeakyReLU's slope) after every conv
    of the blocks; `l2` weight decay on the convs' kernels (0: none). With `seed`, every
    initialiser and the dropout get their own seed from it (Keras' global random state
    is left alone: runs in other threads are not disturbed)."""
    import keras
    from keras import layers, regularizers

    k = check_knobs(input_size, depth, base_filters, batch_norm, dropout, film_size)
    if activation not in ACTIVATION_NAMES:
        raise ConfigError(f"activation must be one of {', '.join(ACTIVATION_NAMES)}, got {activation!r}")
    seeds = iter(range(int(seed or 0) * 1000, int(seed or 0) * 1000 + 1000))
    bias = not k["batch_norm"]
    reg = regularizers.L2(float(l2)) if l2 else None
    act = ACTIVATION_NAMES[activation]

    def init():
        return keras.initializers.HeNormal(seed=next(seeds)) if seed is not None else "he_normal"

    def block(x, prefix, filters):
        for j in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=bias, kernel_initializer=init(),
                              kernel_regularizer=reg, name=f"{prefix}_conv{j}")(x)
            if k["batch_norm"]:
                x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_bn{j}")(x)
            if activation == "leaky_relu":
                x = layers.LeakyReLU(negative_slope=float(alpha), name=f"{prefix}_{act}{j}")(x)
            else:
                x = layers.Activation(activation, name=f"{prefix}_{act}{j}")(x)
        return x

    factor = k["film_size"] // k["input_size"]
    film = keras.Input((k["film_size"], k["film_size"], 1), name="film")
    x = layers.AveragePooling2D(factor, name="shrink")(film) if factor > 1 else film
    skips = []
    for i in range(1, k["depth"] + 1):
        x = block(x, f"enc{i}", _filters(k["base_filters"], i))
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = block(x, "bottleneck", _filters(k["base_filters"], k["depth"] + 1))
    if k["dropout"] > 0:
        x = layers.Dropout(k["dropout"], seed=next(seeds) if seed is not None else None,
                           name="bottleneck_drop")(x)
    for i in range(k["depth"], 0, -1):
        f = _filters(k["base_filters"], i)
        x = layers.Conv2DTranspose(f, 2, strides=2, kernel_initializer=init(), name=f"up{i}")(x)
        x = layers.Concatenate(name=f"skip{i}")([x, skips[i - 1]])
        x = block(x, f"dec{i}", f)
    x = layers.Conv2D(n_classes, 1, name="head", kernel_initializer=(
        keras.initializers.GlorotUniform(seed=next(seeds)) if seed is not None else "glorot_uniform"))(x)
    if factor > 1:
        x = layers.UpSampling2D(factor, interpolation="bilinear", name="grow")(x)
    out = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(film, out, name=name)


def segmentation_loss(kind: str = "both", n_classes: int = N_CLASSES, smooth: float = 1.0):
    """A Keras loss for integer label maps (B, H, W) against probabilities (B, H, W, C):
    'crossentropy' (mean over pixels), 'dice' (1 - the mean over classes of the soft Dice
    over the whole batch), or 'both' (their sum: cross-entropy teaches every pixel, Dice
    keeps the small clavicle from being drowned by the background)."""
    import keras
    from keras import ops

    if kind not in LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")

    def crossentropy(y_true, y_pred):
        y = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
        return ops.mean(keras.losses.sparse_categorical_crossentropy(y, y_pred))

    def dice(y_true, y_pred):
        y = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
        onehot = ops.one_hot(y, n_classes, dtype=y_pred.dtype)
        axes = (0, 1, 2)
        inter = ops.sum(onehot * y_pred, axis=axes)
        total = ops.sum(onehot, axis=axes) + ops.sum(y_pred, axis=axes)
        return 1.0 - ops.mean((2.0 * inter + smooth) / (total + smooth))

    def both(y_true, y_pred):
        return crossentropy(y_true, y_pred) + dice(y_true, y_pred)

    fn = {"crossentropy": crossentropy, "dice": dice, "both": both}[kind]
    fn.__name__ = f"{kind}_loss" if kind != "both" else "crossentropy_dice_loss"
    return fn


def compile_unet(model, loss: str = "both", lr: float | Any = 1e-3):
    """Adam, the chosen loss, pixel accuracy. `lr` may be a Keras schedule."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr), loss=segmentation_loss(loss),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy")])
    return model


def predict_maps(model, films: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Label maps (N, H, W) uint8 of films (N, H, W, 1) float32 in [0, 1]."""
    films = np.asarray(films, np.float32)
    if films.ndim == 3:
        films = films[..., None]
    out = np.empty(films.shape[:3], np.uint8)
    for i in range(0, len(films), batch_size):
        p = model(films[i:i + batch_size], training=False)
        out[i:i + batch_size] = np.argmax(np.asarray(p), axis=-1).astype(np.uint8)
    return out
