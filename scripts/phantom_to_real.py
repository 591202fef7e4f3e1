"""How well does a model trained only on the phantom classify real patches?

    python scripts/phantom_to_real.py [--data ../shared/data] [--seed 0] [--epochs 25]

Trains the course's Task 5 FC network (Flatten -> Dense 300 -> BatchNorm -> ReLU ->
Dense 150 -> BatchNorm -> ReLU -> Dense 4 softmax; He-normal init; Adam lr 1e-5;
batch 64; 25 epochs) on the phantom's train split, then prints JSON with its
accuracy on the real JSRT test patches (jsrt_patches/test, class letter at
name[-5]) and, for comparison, on the phantom's own test split.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from xray_core import CLASSES, LETTERS  # noqa: E402
from xray_core.phantom import build_phantom  # noqa: E402


def load_real(folder: str) -> tuple[np.ndarray, np.ndarray]:
    paths = sorted(glob.glob(os.path.join(folder, "*.png")))
    if not paths:
        sys.exit(f"no patches in {folder}")
    x = np.stack([np.array(Image.open(p).convert("L")) for p in paths]).astype(np.float32) / 255
    y = np.array([LETTERS.index(os.path.basename(p)[-5]) for p in paths])
    return x[..., None], y


def fc_model(seed: int):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    init = keras.initializers.HeNormal(seed=seed)
    model = keras.Sequential([
        keras.Input((32, 32, 1)),
        layers.Flatten(),
        layers.Dense(300, kernel_initializer=init), layers.BatchNormalization(), layers.ReLU(),
        layers.Dense(150, kernel_initializer=init), layers.BatchNormalization(), layers.ReLU(),
        layers.Dense(4, activation="softmax", kernel_initializer=init),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def per_class_accuracy(model, x, y) -> tuple[float, dict, list]:
    pred = model.predict(x, batch_size=512, verbose=0).argmax(1)
    conf = np.zeros((4, 4), int)
    np.add.at(conf, (y, pred), 1)
    per = {CLASSES[c]: round(float(conf[c, c] / max(conf[c].sum(), 1)), 3) for c in range(4)}
    return round(float((pred == y).mean()), 4), per, conf.tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data"))
    ap.add_argument("--seed", type=int, default=0, help="phantom and training seed")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--no-cache", action="store_true", help="rebuild the phantom")
    args = ap.parse_args()

    t0 = time.time()
    ds = build_phantom(seed=args.seed, cache=not args.no_cache)
    t_build = time.time() - t0
    real_x, real_y = load_real(os.path.join(args.data, "jsrt_patches", "test"))
    tr, va, te = ds.split("train"), ds.split("validation"), ds.split("test")

    model = fc_model(args.seed)
    t0 = time.time()
    model.fit(tr.x, tr.y, batch_size=64, epochs=args.epochs, validation_data=(va.x, va.y),
              shuffle=True, verbose=0)
    t_train = time.time() - t0
    real_acc, real_per, real_conf = per_class_accuracy(model, real_x, real_y)
    ph_acc, ph_per, _ = per_class_accuracy(model, te.x, te.y)
    print(json.dumps({
        "phantom_seed": args.seed,
        "train_patches": len(tr), "epochs": args.epochs,
        "real_test_accuracy": real_acc, "real_test_n": int(len(real_y)),
        "real_test_per_class": real_per,
        "real_test_confusion_rows_true_bclh": [" ".join(f"{v:4d}" for v in r) for r in real_conf],
        "phantom_test_accuracy": ph_acc, "phantom_test_per_class": ph_per,
        "build_seconds": round(t_build, 1), "train_seconds": round(t_train, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
