"""The yardstick for the CLI's whole process (issue 22, item 5): the course's p1-task1 run as a
plain Keras script a student would write, with nothing of X-ray Lab in it.

Same work as `python -m xray_core train --preset p1-task1 --data DIR --json OUT`:
read the course folder's train/validation/test PNGs (`*_<letter>.png`) with Pillow as the
course does (convert('L'), 32x32 bicubic, /255), build Flatten -> Dense 300 -> Dense 150 ->
Dense 4 (He-normal, ReLU, softmax), Adam lr 1e-5, batch 64, 25 epochs with validation each
epoch, evaluate on test, save model.keras and a JSON of the result.

    farm-bench -n 3 --timeout 600 --vs 'python bench/plain_keras.py --data D --out /tmp/p' \\
        -- python -m xray_core train --preset p1-task1 --data D --json /tmp/cli.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = "bclh"


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L").resize((32, 32), Image.BICUBIC), dtype=np.float32) / 255.0


def load(folder: Path, pool: ThreadPoolExecutor) -> tuple[np.ndarray, np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    x = np.stack(list(pool.map(read, files)))[..., None]
    y = np.array([CLASSES.index(p.stem[-1]) for p in files])
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=25)
    a = ap.parse_args()
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        (xt, yt), (xv, yv), (xs, ys) = (load(Path(a.data) / s, pool) for s in ("train", "validation", "test"))

    import keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(300, activation="relu", kernel_initializer="he_normal"),
        keras.layers.Dense(150, activation="relu", kernel_initializer="he_normal"),
        keras.layers.Dense(4, activation="softmax", kernel_initializer="he_normal"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t = time.perf_counter()
    h = model.fit(xt, yt, batch_size=64, epochs=a.epochs, validation_data=(xv, yv), verbose=2)
    fit_seconds = time.perf_counter() - t
    loss, acc = model.evaluate(xs, ys, batch_size=1024, verbose=0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    (out / "result.json").write_text(json.dumps({"test_accuracy": acc, "test_loss": loss,
                                                  "train_accuracy": h.history["accuracy"][-1],
                                                  "fit_seconds": fit_seconds}))
    print(f"test accuracy {acc:.4f} test loss {loss:.4f} fit {fit_seconds:.1f}s")


if __name__ == "__main__":
    main()
