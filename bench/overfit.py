"""Where does the course's train >> test gap (overfitting) show? Measured, not assumed.

Trains FC presets on a small training subset (`limit_train`, like the course's own
small dataset) and on the full split, on the phantom and on the real patches, and
prints final train / validation / test accuracy and the train - test gap. The
presets' notes (xray_core/presets.py) quote these figures.

    nice -n 10 python -m bench.overfit [--data phantom PATH...] [--limits 300 1000 0] [--presets p1-task1 p1-task5]
"""
from __future__ import annotations

if __package__ in (None, ""):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import argparse
import json

from bench._common import REAL_DATA, log, machine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", default=["phantom", REAL_DATA])
    ap.add_argument("--limits", nargs="+", type=int, default=[300, 1000, 0], help="0 = the whole split")
    ap.add_argument("--presets", nargs="+", default=["p1-task1", "p1-task5"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    a = ap.parse_args()
    from xray_core.data.load import load_dataset
    from xray_core.presets import get_preset
    from xray_core.train.job import TrainingJob
    rows = []
    for data in a.data:
        ds = load_dataset(data)
        for name in a.presets:
            for limit in a.limits:
                for seed in a.seeds:
                    cfg = get_preset(name).config.replace(limit_train=limit or None, seed=seed)
                    job = TrainingJob(cfg, ds, probe=False).run()
                    r = job.record()
                    row = {"data": data, "preset": name, "limit_train": limit or len(ds.split("train")),
                           "seed": seed, "train": round(100 * r["train_accuracy"], 1),
                           "val": round(100 * (r["val_accuracy"] or 0), 1),
                           "test": round(100 * r["test"]["accuracy"], 1)}
                    row["gap"] = round(row["train"] - row["test"], 1)
                    log(json.dumps(row))
                    rows.append(row)
    print(json.dumps({"benchmark": "overfit", "machine": machine(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
