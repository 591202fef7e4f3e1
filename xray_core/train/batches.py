"""A run's batches: a fresh order every epoch, drawn from the run's own seed."""
from __future__ import annotations

from xray_core.data.dataset import Split


def batches(split: Split, batch_size: int, seed: int):
    """Batches in a fresh order every epoch, drawn from the run's own seed.

    A tf.random.Generator seeded by the run draws each epoch's permutation: plain
    tf.data shuffle would mix in TensorFlow's process-wide global seed, which other
    code may set, so the same config could train differently. The permutation is
    cut into whole batches of indices (as Keras' own array adapter does) and the
    patches are gathered per batch, all inside TensorFlow."""
    import tensorflow as tf
    x = tf.constant(split.x)
    y = tf.constant(split.y.astype("int32"))
    n = len(split)
    full = (n // batch_size) * batch_size
    gen = tf.random.Generator.from_seed(seed)

    def epoch_batches(_):
        perm = tf.argsort(gen.uniform([n]))
        out = tf.data.Dataset.from_tensor_slices(tf.reshape(perm[:full], [-1, batch_size]))
        if full < n:
            out = out.concatenate(tf.data.Dataset.from_tensors(perm[full:]))
        return out

    ds = tf.data.Dataset.range(1).flat_map(epoch_batches)
    ds = ds.map(lambda i: (tf.gather(x, i), tf.gather(y, i)), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE)


# ---- whole films (arch segment) ----------------------------------------------------------
# Augmentation of a film and its label map, drawn afresh for every film of every epoch from
# the run's seed (stateless ops on a seed per batch: the same run gives the same films even
# with parallel map calls). The same affine warp moves the film (bilinear) and its label map
# (nearest: labels stay 0..3); outside the film its edge pixels are repeated.
SHIFT, SCALE, ROTATE_DEG = 0.06, 0.08, 5.0   # up to ±6 % of the side, ±8 %, ±5°
GAMMA, CONTRAST = 0.2, 0.1                    # gamma e^U(-0.2, 0.2); contrast ×U(0.9, 1.1) about the mean


def _warp(images, transforms, interpolation: str):
    import tensorflow as tf
    side = tf.shape(images)[1:3]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=side, fill_value=0.0,
        interpolation=interpolation, fill_mode="NEAREST")


def augment_films(x, y, seed):
    """x float32 (B, H, W, 1) in [0, 1], y int32 (B, H, W); seed: shape (2,) int. Returns
    both warped alike (shift, scale, rotation) and the films' gamma and contrast changed."""
    import math

    import tensorflow as tf
    b = tf.shape(x)[0]
    h = tf.cast(tf.shape(x)[1], tf.float32)
    w = tf.cast(tf.shape(x)[2], tf.float32)
    u = tf.random.stateless_uniform([b, 6], seed=seed, minval=-1.0, maxval=1.0)
    scale = 1.0 + SCALE * u[:, 0]
    theta = ROTATE_DEG * math.pi / 180.0 * u[:, 1]
    tx, ty = SHIFT * w * u[:, 2], SHIFT * h * u[:, 3]
    # output pixel (x, y) reads input pixel inv · ((x, y) - centre - shift) + centre
    cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    a0, a1, b0, b1 = cos, sin, -sin, cos
    a2 = cx - a0 * (cx + tx) - a1 * (cy + ty)
    b2 = cy - b0 * (cx + tx) - b1 * (cy + ty)
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    xw = _warp(x, transforms, "BILINEAR")
    yw = _warp(tf.cast(y, tf.float32)[..., None], transforms, "NEAREST")[..., 0]
    gamma = tf.exp(GAMMA * u[:, 4])[:, None, None, None]
    contrast = (1.0 + CONTRAST * u[:, 5])[:, None, None, None]
    xw = tf.clip_by_value(xw, 0.0, 1.0) ** gamma
    mean = tf.reduce_mean(xw, axis=[1, 2, 3], keepdims=True)
    xw = tf.clip_by_value((xw - mean) * contrast + mean, 0.0, 1.0)
    yw = tf.cast(tf.round(yw), tf.int32)
    xw.set_shape(x.shape)           # the warp forgets the static shape the network's layers need
    yw.set_shape(y.shape)
    return xw, yw


def film_batches(split, batch_size: int, seed: int, augment: bool = False):
    """Batches of whole films and their label maps (FilmSplit: x (N, H, W, 1), y (N, H, W)),
    in a fresh order every epoch from the run's seed as `batches`; with `augment`, each film
    warped and re-toned afresh (augment_films)."""
    import tensorflow as tf
    x = tf.constant(split.x)
    y = tf.constant(split.y.astype("int32"))
    n = len(split)
    nb = -(-n // batch_size)
    full = (n // batch_size) * batch_size
    gen = tf.random.Generator.from_seed(seed)

    def epoch_batches(_):
        perm = tf.argsort(gen.uniform([n]))
        if full < n:
            # the last batch is topped up with the epoch's first films: every batch has one shape,
            # so the XLA-compiled step (models._build_segment) compiles once, not twice (~10 s each)
            perm = tf.tile(perm, [-(-nb * batch_size // n)])[:nb * batch_size]
        out = tf.data.Dataset.from_tensor_slices(tf.reshape(perm, [-1, batch_size]))
        seeds = tf.data.Dataset.from_tensor_slices(tf.transpose(gen.make_seeds(nb)))   # (nb, 2)
        return tf.data.Dataset.zip((out, seeds))

    def gather(i, s):
        xb, yb = tf.gather(x, i), tf.gather(y, i)
        if augment:
            xb, yb = augment_films(xb, yb, s)
        return xb, yb

    ds = tf.data.Dataset.range(1).flat_map(epoch_batches)
    ds = ds.map(gather, num_parallel_calls=2)
    ds = ds.apply(tf.data.experimental.assert_cardinality(nb))
    # Fixed parallelism, autotuning off: Keras drops each epoch's iterator, and with autotuning
    # on, dropping it waited ~10 s for tf.data's background threads in about every other epoch
    # (seen here with py-spy: ~IteratorResource blocked; 19.5 vs 9.8 s epochs of p3-unet)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)
