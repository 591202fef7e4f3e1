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
