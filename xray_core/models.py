"""The course's models, built so that `model.summary()` reads like the assignment.

- fc:  Flatten → Dense 300 → [BatchNorm] → activation → Dense 150 → [BatchNorm]
       → activation → Dense 4 softmax, He-normal init (353,254 params; 355,054 with BN).
- cnn/seed: the course's CNN as handed out, including its two mistakes:
       BatchNormalization(axis=1) on NHWC tensors normalises image *rows*, and
       lr 1e-5 under L2 1e-2 barely moves the weights (3,271,492 params).
- cnn/corrected: the same five convs and dense head, with batch norm over channels
       placed before the activation, light L2 and a learning rate that trains; the
       dropout before its dense head is its own knob (head_dropout, default 0.3).

Every layer gets a readable name and its own seed, so a run is reproducible from
config + seed without touching Keras' global (thread-shared) random state.
"""
from __future__ import annotations

import functools

from xray_core.tf_quiet import keras
from keras import layers, regularizers  # noqa: E402  (after the quiet import)

from xray_core import CLASSES, PATCH
from xray_core.config import RunConfig
from xray_core.cost import cost  # noqa: F401  (parameters and multiply-adds without building the model)

INPUT_SHAPE = (PATCH, PATCH, 1)


def build_model(config: RunConfig, compile: bool = True, steps_per_epoch: int | None = None) -> keras.Model:
    cfg = config.resolved()
    if cfg.arch == "segment":
        return _build_segment(cfg, compile, steps_per_epoch)
    seeds = iter(range(cfg.seed * 1000, cfg.seed * 1000 + 1000))
    model = _build_fc(cfg, seeds) if cfg.arch == "fc" else _build_cnn(cfg, seeds)
    if compile:
        model.compile(optimizer=make_optimizer(cfg, steps_per_epoch), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    return model


def make_optimizer(cfg: RunConfig, steps_per_epoch: int | None = None) -> keras.optimizers.Optimizer:
    lr = cfg.lr
    if cfg.lr_schedule == "cosine" and steps_per_epoch:
        # decays to 0 at the end of the last epoch: the final weights are not a snapshot of
        # a still-jumping run (the lesson: a big step early, small steps late)
        lr = keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=cfg.epochs * int(steps_per_epoch))
    elif cfg.lr_schedule == "warmup_cosine" and steps_per_epoch:
        # from lr/10 up to lr over the first tenth of the steps (at least one epoch, at most
        # half the run), then cosine decay to 0 by the last step
        total = cfg.epochs * int(steps_per_epoch)
        warm = min(max(int(steps_per_epoch), total // 10), total // 2)
        lr = keras.optimizers.schedules.CosineDecay(cfg.lr / 10, decay_steps=max(1, total - warm),
                                                    warmup_target=cfg.lr, warmup_steps=warm)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=cfg.momentum)
    return keras.optimizers.Adam(learning_rate=lr)


def _activation(cfg: RunConfig, name: str) -> layers.Layer:
    if cfg.activation == "leaky_relu":
        # Keras 3 calls the slope negative_slope; the course calls it alpha.
        return layers.LeakyReLU(negative_slope=cfg.alpha, name=name)
    return layers.Activation(cfg.activation, name=name)


def _build_fc(cfg: RunConfig, seeds) -> keras.Model:
    he = lambda: keras.initializers.HeNormal(seed=next(seeds))  # noqa: E731
    reg = regularizers.L2(cfg.l2) if cfg.l2 else None
    x = inp = keras.Input(INPUT_SHAPE, name="patch")
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate((300, 150), start=1):
        x = layers.Dense(units, kernel_initializer=he(), kernel_regularizer=reg, name=f"dense{i}")(x)
        if cfg.batch_norm:
            x = layers.BatchNormalization(name=f"batchnorm{i}")(x)
        x = _activation(cfg, f"{cfg.activation}{i}")(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, seed=next(seeds), name=f"dropout{i}")(x)
    out = layers.Dense(len(CLASSES), activation="softmax", kernel_initializer=he(), name="output")(x)
    return keras.Model(inp, out, name=f"fc_{cfg.activation}{'_bn' if cfg.batch_norm else ''}")


def _build_cnn(cfg: RunConfig, seeds) -> keras.Model:
    seed_mode = cfg.cnn_mode == "seed"
    reg = regularizers.L2(cfg.l2) if cfg.l2 else None
    x = inp = keras.Input(INPUT_SHAPE, name="patch")
    side = PATCH
    for i, filters in enumerate(cfg.filters, start=1):
        if cfg.padding == "valid":
            side -= 2
        init = keras.initializers.GlorotUniform(seed=next(seeds))
        if seed_mode:
            # As in the course: conv+ReLU, Dropout, then BatchNormalization(axis=1).
            # On NHWC tensors axis=1 is the image row, so BN learns one scale per row.
            x = layers.Conv2D(filters, 3, padding=cfg.padding, activation=cfg.activation if cfg.activation != "leaky_relu" else None,
                              kernel_initializer=init, kernel_regularizer=reg, name=f"conv{i}")(x)
            if cfg.activation == "leaky_relu":
                x = _activation(cfg, f"{cfg.activation}{i}")(x)
            x = layers.Dropout(cfg.dropout, seed=next(seeds), name=f"dropout{i}")(x)
            x = layers.BatchNormalization(axis=1, name=f"batchnorm{i}")(x)
        else:
            # Fixed: BN over channels, before the non-linearity (Ioffe & Szegedy). Momentum
            # 0.9 (not Keras' 0.99) so the running statistics used at test time catch up
            # within an epoch of ~150 steps; otherwise validation lags far behind training.
            x = layers.Conv2D(filters, 3, padding=cfg.padding, kernel_initializer=init,
                              kernel_regularizer=reg, name=f"conv{i}")(x)
            x = layers.BatchNormalization(axis=-1, momentum=0.9, name=f"batchnorm{i}")(x)
            x = _activation(cfg, f"{cfg.activation}{i}")(x)
        if i in (1, 3, 5):
            # 'valid' convs leave a 1x1 map before the last pool: keep the course's layer,
            # which then has nothing to pool ('same' on 1x1 is the identity)
            x = layers.MaxPooling2D(2, padding="same" if side == 1 else "valid", name=f"maxpool{(i + 1) // 2}")(x)
            side = max(1, side // 2)
            if not seed_mode and cfg.dropout:
                x = layers.Dropout(cfg.dropout, seed=next(seeds), name=f"dropout{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="elu", kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)),
                     name="dense512")(x)
    # the course's CNN uses its one rate here too; the corrected one has its own knob (no hidden floor)
    x = layers.Dropout(cfg.dropout if seed_mode else cfg.head_dropout, seed=next(seeds),
                       name="dropout_dense")(x)
    x = layers.Dense(128, activation="elu", kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)),
                     name="dense128")(x)
    out = layers.Dense(len(CLASSES), activation="softmax",
                       kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)), name="output")(x)
    return keras.Model(inp, out, name=f"cnn_{cfg.cnn_mode}")


def _build_segment(cfg: RunConfig, compile: bool, steps_per_epoch: int | None) -> keras.Model:
    """The U-Net of course Part 3 (xray_core/segmentation.py): whole film in, a label per pixel
    out. Its metric is named `accuracy` (pixel accuracy), so a run's batches, history and
    results read as any other run's."""
    from xray_core import segmentation
    model = segmentation.build_unet(
        input_size=cfg.input_size, depth=cfg.depth, base_filters=cfg.base_filters, batch_norm=cfg.batch_norm,
        dropout=cfg.dropout, seed=cfg.seed, activation=cfg.activation, alpha=cfg.alpha, l2=cfg.l2,
        name=f"unet_d{cfg.depth}_f{cfg.base_filters}_in{cfg.input_size}")
    if compile:
        model.compile(optimizer=make_optimizer(cfg, steps_per_epoch), loss=segmentation.segmentation_loss(cfg.loss),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                      # XLA fuses the U-Net's many small ops: 1.6x the training speed on this 2-core
                      # CPU (10.3 vs 15.9 s an epoch of 150 films at 128x128), for ~12 s of compiling
                      jit_compile=True)
    return model


# ---- teaching tables -------------------------------------------------------------

def layer_table(config: RunConfig) -> dict:
    """Layer name, type, output shape and params, plus totals — without training."""
    return _layer_table_cached(config.resolved())


@functools.lru_cache(maxsize=128)
def _layer_table_cached(cfg: RunConfig) -> dict:
    model = build_model(cfg, compile=False)
    return model_table(model)


def model_table(model: keras.Model) -> dict:
    rows = []
    for layer in model.layers:
        shape = tuple(layer.output.shape)
        rows.append({
            "name": layer.name,
            "type": type(layer).__name__,
            "output_shape": "(None, " + ", ".join(str(d) for d in shape[1:]) + ")",
            "params": int(layer.count_params()),
        })
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    total = int(model.count_params())
    return {"layers": rows, "total_params": total, "trainable_params": trainable,
            "non_trainable_params": total - trainable}


def activation_layer_names(model: keras.Model) -> list[str]:
    """The hidden FC activation layers whose outputs the dead-unit monitor probes."""
    return [l.name for l in model.layers
            if isinstance(l, (layers.Activation, layers.LeakyReLU)) and l.name != "output"]


# ---- time estimate ---------------------------------------------------------------
# Calibrated on this project's 2-core CPU machine: the seed CNN (≈116 M multiply-adds
# per patch) trains at ≈35 s/epoch on 9,600 patches, the FC net at ≈0.4 s/epoch.
_SECONDS_PER_MAC = 3.1e-11  # forward + backward, per multiply-add, per training patch
_SECONDS_PER_STEP = 2.0e-3  # fixed cost of one optimizer step (Python, callbacks)


def multiply_adds(config: RunConfig) -> int:
    """Multiply-adds of one forward pass on one patch (convs and dense layers)."""
    total = 0
    for r in layer_table(config)["layers"]:
        if r["type"] in ("Conv2D", "Dense"):
            dims = [int(d) for d in r["output_shape"].strip("()").split(", ")[1:]]
            spatial = dims[0] * dims[1] if len(dims) == 3 else 1
            total += r["params"] * spatial  # weights (+bias) applied at every output position
    return total


def estimate_seconds(config: RunConfig, n_train: int, n_val: int = 0) -> float:
    """Rough wall time of a whole run on this machine when it trains alone."""
    cfg = config.resolved()
    n = min(n_train, cfg.limit_train or n_train)
    macs = multiply_adds(cfg)
    steps = -(-n // cfg.batch_size)
    per_epoch = n * macs * _SECONDS_PER_MAC + steps * _SECONDS_PER_STEP + n_val * macs * _SECONDS_PER_MAC / 3
    return cfg.epochs * per_epoch
