"""How well does a model trained only on the phantom classify real patches?

    python scripts/phantom_to_real.py [--data ../shared/data] [--seed 0]
                                      [--setup task5|old] [--no-test] [--no-cache]

Trains with the engine, exactly as the app does: the course's Task 5 setup as this
project defines it (`get_preset("p1-task5").config`: FC Flatten -> Dense 300 ->
BatchNorm -> LeakyReLU(0.01) -> Dense 150 -> BatchNorm -> LeakyReLU -> Dense 4
softmax, He-normal, Adam lr 1e-5, batch 32, 40 epochs), run through
`xray_core.train.job.TrainingJob` on the phantom (train split; the phantom's own
validation split is the fit's validation data). `--setup old` is the figure this
script used to report: the same FC with batch norm but ReLU, batch 64, 25 epochs.

The trained model then classifies the real JSRT patches, loaded with
`xray_core.data.load.load_dataset(<data>/jsrt_patches)`, and the script prints JSON:
accuracy, per-class recall and the confusion matrix on the real validation split
and on the real test split, plus the phantom's own test accuracy.

Honesty rules for these numbers:
- nothing is trained or tuned on real images: the model sees phantom patches only;
  the phantom's look is derived (scripts/derive_phantom_stats.py) from real *train*
  patches and label maps, never from test patches;
- decisions while improving the phantom are taken on the real VALIDATION split
  (run with `--no-test` to not even print the test figure); the real TEST figure is
  reported once, at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from xray_core import CLASSES  # noqa: E402
from xray_core.data.phantom.build import GENERATOR_VERSION, build_phantom  # noqa: E402


def setup_config(name: str, seed: int):
    from xray_core.presets import get_preset
    if name == "task5":
        cfg = get_preset("p1-task5").config
    else:   # the script's former setup: BN + ReLU, batch 64, 25 epochs
        cfg = get_preset("p1-task1").config.replace(batch_norm=True)
    return cfg.replace(seed=seed)


def per_class_accuracy(model, x, y) -> tuple[float, dict, list]:
    pred = model.predict(x, batch_size=512, verbose=0).argmax(1)
    conf = np.zeros((4, 4), int)
    np.add.at(conf, (y, pred), 1)
    per = {CLASSES[c]: round(float(conf[c, c] / max(conf[c].sum(), 1)), 3) for c in range(4)}
    return round(float((pred == y).mean()), 4), per, conf.tolist()


def _rows(conf) -> list[str]:
    return [" ".join(f"{v:4d}" for v in r) for r in conf]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data"))
    ap.add_argument("--seed", type=int, default=0, help="phantom and training seed")
    ap.add_argument("--setup", choices=("task5", "old"), default="task5")
    ap.add_argument("--epochs", type=int, default=None, help="override the setup's epochs")
    ap.add_argument("--no-test", action="store_true",
                    help="report the real validation split only (use while iterating)")
    ap.add_argument("--no-cache", action="store_true", help="rebuild the phantom")
    ap.add_argument("--save-validation", metavar="NPZ",
                    help="also save the real validation patches' class probabilities (for diagnosis)")
    args = ap.parse_args()

    from xray_core.data.load import load_dataset
    from xray_core.train.job import TrainingJob

    cfg = setup_config(args.setup, args.seed)
    if args.epochs:
        cfg = cfg.replace(epochs=args.epochs)
    t0 = time.time()
    ds = build_phantom(seed=args.seed, cache=not args.no_cache)
    t_build = time.time() - t0
    real = load_dataset(os.path.join(args.data, "jsrt_patches"))

    t0 = time.time()
    job = TrainingJob(cfg, ds, probe=False).run()
    t_train = time.time() - t0
    if job.state != "done":
        sys.exit(f"training ended as {job.state}: {job.snapshot().error}")
    model = job.model
    te = ds.split("test")
    out = {
        "setup": args.setup, "config": cfg.resolved().to_dict(),
        "generator_version": GENERATOR_VERSION, "phantom_seed": args.seed,
        "train_patches": len(ds.split("train")), "epochs": cfg.epochs,
    }
    rv = real.split("validation")
    va_acc, va_per, va_conf = per_class_accuracy(model, rv.x, rv.y)
    if args.save_validation:
        np.savez_compressed(args.save_validation, y=rv.y,
                            probs=model.predict(rv.x, batch_size=512, verbose=0))
    out.update({"real_validation_accuracy": va_acc, "real_validation_n": len(real.split("validation")),
                "real_validation_per_class": va_per,
                "real_validation_confusion_rows_true_bclh": _rows(va_conf)})
    if not args.no_test:
        rt = real.split("test")
        acc, per, conf = per_class_accuracy(model, rt.x, rt.y)
        out.update({"real_test_accuracy": acc, "real_test_n": len(rt), "real_test_per_class": per,
                    "real_test_confusion_rows_true_bclh": _rows(conf)})
    ph_acc, ph_per, _ = per_class_accuracy(model, te.x, te.y)
    out.update({"phantom_test_accuracy": ph_acc, "phantom_test_per_class": ph_per,
                "build_seconds": round(t_build, 1), "train_seconds": round(t_train, 1)})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
