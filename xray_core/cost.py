"""Parameter and multiply-add counts of a RunConfig's model, by arithmetic alone.

Validation (config.py) refuses a model over the server's cost caps with these
counts, so a 2048-filter CNN is refused in microseconds instead of being built:
no Keras here (importing it takes seconds). The arithmetic follows models.py layer
by layer; tests/test_models.py checks it equals Keras' own counts.
"""
from __future__ import annotations

from typing import Any

from xray_core import CLASSES, FILM, PATCH
N_CLASSES = len(CLASSES)
FC_UNITS = (300, 150)
CNN_POOL_AFTER = (1, 3, 5)   # MaxPooling2D(2) after these convs
CNN_DENSE = (512, 128)


def _dense(n_in: int, n_out: int) -> tuple[int, int]:
    """(params, multiply-adds) of a Dense layer; the bias counts as one multiply-add,
    as in models.multiply_adds (weights + bias applied once per output)."""
    p = n_in * n_out + n_out
    return p, p


def cost(config: Any) -> dict[str, int]:
    """{"params": total parameters (trainable + batch-norm statistics),
    "multiply_adds": of one forward pass on one patch}. Reads only knobs flagged step_cost in
    the knob table: validation hands it config.step_cost_view(config), which holds nothing else."""
    params = macs = 0
    if config.arch == "segment":
        # a U-Net maps a whole film: its multiply-adds are per film (their own cap)
        c = unet_cost(config.input_size, config.depth, config.base_filters, config.batch_norm)
        return {"params": c["params"], "film_multiply_adds": c["multiply_adds"]}
    if config.arch == "fc":
        n = PATCH * PATCH
        for units in FC_UNITS:
            p, m = _dense(n, units)
            params, macs = params + p, macs + m
            if config.batch_norm:
                params += 4 * units      # gamma, beta, moving mean, moving variance
            n = units
        p, m = _dense(n, N_CLASSES)
        return {"params": params + p, "multiply_adds": macs + m}

    side, channels = PATCH, 1
    for i, filters in enumerate(config.filters, start=1):
        p = 3 * 3 * channels * filters + filters
        if config.padding == "valid":
            side -= 2                                         # 'valid': the map shrinks by 2
        params, macs = params + p, macs + p * side * side   # one output per pixel of the map
        # seed mode: BatchNormalization(axis=1) = per image row; corrected: per channel
        params += 4 * (side if config.cnn_mode == "seed" else filters)
        channels = filters
        if i in CNN_POOL_AFTER:
            side = max(1, side // 2)                          # a 1x1 map is left as it is
    n = side * side * channels
    for units in (*CNN_DENSE, N_CLASSES):
        p, m = _dense(n, units)
        params, macs, n = params + p, macs + m, units
    return {"params": params, "multiply_adds": macs}


def unet_cost(input_size: int, depth: int, base_filters: int, batch_norm: bool, film_size: int = FILM,
              n_classes: int = N_CLASSES) -> dict[str, int]:
    """{"params": all parameters (trainable + batch-norm statistics), "multiply_adds": of one
    forward pass on one film} of segmentation.build_unet's U-Net, by arithmetic, for knobs
    already checked (segmentation.unet_cost checks them first). Pooling, the bilinear `grow`
    and the softmax count no multiply-adds; a bias is one multiply-add per output; dropout
    changes nothing."""
    params = macs = 0

    def conv(cin, cout, side, kernel=3, with_bias=not batch_norm):
        nonlocal params, macs
        p = kernel * kernel * cin * cout + (cout if with_bias else 0)
        params += p
        macs += p * side * side
        if batch_norm and kernel == 3:
            params += 4 * cout        # gamma, beta, moving mean, moving variance

    side, channels = input_size, 1
    skips = []
    for i in range(1, depth + 1):
        f = base_filters * 2 ** (i - 1)
        conv(channels, f, side)
        conv(f, f, side)
        skips.append((f, side))
        channels, side = f, side // 2
    f = base_filters * 2 ** depth                      # the bottleneck
    conv(channels, f, side)
    conv(f, f, side)
    channels = f
    for f_skip, s_skip in reversed(skips):
        # up: 2x2 transposed conv, stride 2: each output pixel gets one tap of each input
        # channel per filter, plus the bias
        params += 2 * 2 * channels * f_skip + f_skip
        macs += (channels * f_skip + f_skip) * s_skip * s_skip
        side = s_skip
        conv(2 * f_skip, f_skip, side)      # after the skip: the up's f_skip + the encoder's f_skip
        conv(f_skip, f_skip, side)
        channels = f_skip
    conv(channels, n_classes, side, kernel=1, with_bias=True)   # head
    del film_size                             # the film's own size costs nothing (shrink, grow)
    return {"params": int(params), "multiply_adds": int(macs)}


def conv2d_transpose_cost(kernel_h: int, kernel_w: int, channels: int, filters: int, bias: bool,
                          in_h: int, in_w: int, out_h: int, out_w: int) -> tuple[int, int]:
    """(params, multiply-adds) of a Conv2DTranspose: every input pixel spreads its kernel's
    taps over the output (in_h*in_w*kh*kw*channels*filters), plus one bias per output; with
    stride = kernel (the U-Net's 2x2/2) that is unet_cost's count."""
    p = kernel_h * kernel_w * channels * filters + (filters if bias else 0)
    macs = in_h * in_w * kernel_h * kernel_w * channels * filters + (filters * out_h * out_w if bias else 0)
    return p, macs


# ---- any model, layer by layer -----------------------------------------------------------
# maps/modelcheck.py measures an uploaded (or any) .keras model from its config.json with
# these, before Keras builds it: the same counting as cost() above (a bias is one
# multiply-add, applied once per output), so one limit, XRAY_LAB_MAX_MACS, means the same
# thing for a model trained here and a model brought in. Activations are float32.
FLOAT_BYTES = 4


def conv2d_cost(kernel_h: int, kernel_w: int, channels_per_group: int, filters: int, bias: bool,
                out_h: int, out_w: int) -> tuple[int, int]:
    """(params, multiply-adds per patch) of a Conv2D: as cost()'s convs, every output pixel
    applies every filter's weights (and bias) once."""
    p = kernel_h * kernel_w * channels_per_group * filters + (filters if bias else 0)
    return p, p * out_h * out_w


def dense_cost(n_in: int, units: int, bias: bool, positions: int = 1) -> tuple[int, int]:
    """(params, multiply-adds per patch) of a Dense layer applied at `positions` places
    (1 after a Flatten; Keras applies a Dense on an image-shaped input at every pixel)."""
    p = n_in * units + (units if bias else 0)
    return p, p * positions


def layer_bytes(in_elements: int, out_elements: int) -> int:
    """Bytes one layer holds for one patch while it runs: its input and its output
    (float32). The peak over the layers bounds what a prediction batch needs per patch."""
    return (in_elements + out_elements) * FLOAT_BYTES
