"""Dense vs patch-by-patch anatomy maps, and the CNN's CPU efficiency.

Maps: one JSRT radiograph (../shared/data/jsrt_radiographs, read in place), for each
model: patch-by-patch and dense (xray_core/dense.py) wall time at stride 4 and 1,
the share of pixels labelled the same, and how many grid points the dense path
re-checked patch by patch (`refined`). "dense_raw" is the dense pass alone (no
re-check): its agreement shows the patch-border effect honestly. Models: untrained
corrected CNNs ('same' padding at full width 64-128-128-256-256 and quarter width
16-32-32-64-64; 'valid' padding at half width 32-64-64-128-128, p2-corrected's layout,
whose dense pass is exact) and any trained .keras files given with --model. Patch-by-patch at stride 1 of the full-width
CNN would take minutes: it is estimated as 16x its stride-4 time unless --full-stride1.

Efficiency: multiply-adds per second the corrected CNN achieves in inference
(predict_on_batch, 4,096 patches) and in training (fit, forward + backward = 3x the
forward multiply-adds), against a plain float32 tf.linalg.matmul of 2048x2048 matrices,
as ratios; training with Keras' default (no XLA on a CPU-only machine) and with
jit_compile=True, side by side. Everything is repeated --reps times, interleaved, and
reported as medians; the load average is recorded (the machine may be shared).

    python -m bench.dense [--reps 3] [--model trained.keras ...] [--full-stride1]
"""
from __future__ import annotations

if __package__ in (None, ""):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import argparse
import os
import time
from pathlib import Path

import numpy as np

from bench._common import REPO, emit, log, machine, median

FILMS = Path(os.environ.get("XRAY_LAB_BENCH_FILMS", str(REPO.parent / "shared" / "data" / "jsrt_radiographs")))
NARROW = (16, 32, 32, 64, 64)
FULL = (64, 128, 128, 256, 256)
HALF = (32, 64, 64, 128, 128)


def timed(fn, reps):
    out, res = [], None
    for _ in range(reps):
        t = time.perf_counter()
        res = fn()
        out.append(time.perf_counter() - t)
    return median(out), res


def film():
    from xray_core.data.images import read_image
    names = sorted(p for p in FILMS.glob("*.png") if not p.stem.endswith("_labels"))
    if not names:
        raise SystemExit(f"no radiographs at {FILMS} (set XRAY_LAB_BENCH_FILMS)")
    return names[0].name, read_image(names[0].read_bytes(), names[0].name)


def bench_maps(name, model, img, reps, full_stride1):
    from xray_core.maps.inference import anatomy_map
    anatomy_map(model, img, stride=8, method="patches")   # warm-up: builds predict functions
    anatomy_map(model, img, stride=8, method="dense")
    row = {"model": name}
    for stride in (4, 1):
        log(f"  {name} stride {stride}")
        r = {}
        slow_patches = stride == 1 and name.startswith("untrained-full") and not full_stride1
        d_raw, raw = timed(lambda: anatomy_map(model, img, stride=stride, refine_margin=0), reps)
        # an untrained net is unsure everywhere: its re-check is a whole patch pass, timed once
        if slow_patches:   # its re-check would be the very patch pass we skip: dense alone
            d_ref, ref = d_raw, raw
        else:
            d_ref, ref = timed(lambda: anatomy_map(model, img, stride=stride),
                               1 if name.startswith("untrained") else reps)
        if slow_patches:
            r["patches_seconds_estimated"] = row["stride4"]["patches_seconds"] * 16
            p_sec = r["patches_seconds_estimated"]
        else:
            p_sec, pat = timed(lambda: anatomy_map(model, img, stride=stride, method="patches"),
                               1 if stride == 1 else reps)
            r["patches_seconds"] = p_sec
            r["agreement_dense_raw"] = float(np.mean(raw.labels == pat.labels))
            r["agreement_dense"] = float(np.mean(ref.labels == pat.labels))
            r["max_prob_diff_raw"] = float(np.abs(raw.probs - pat.probs).max())
        r.update(dense_raw_seconds=d_raw, dense_seconds=d_ref, refined=ref.refined,
                 grid_points=ref.grid_shape[0] * ref.grid_shape[1], method=ref.method,
                 speedup_dense=p_sec / d_ref, speedup_dense_raw=p_sec / d_raw)
        row[f"stride{stride}"] = r
    return row


def bench_efficiency(reps):
    import tensorflow as tf
    from xray_core.config import RunConfig
    from xray_core.models import build_model, multiply_adds
    from xray_core.tf_quiet import keras

    n = 2048
    a = tf.random.uniform((n, n), dtype=tf.float32)
    b = tf.random.uniform((n, n), dtype=tf.float32)

    def mm():
        tf.linalg.matmul(a, b).numpy()
    mm()
    rng = np.random.default_rng(0)
    out = {"matmul": {"n": n}, "models": {}}
    results = {"matmul": []}
    setups = {}
    from xray_core.presets import get_preset
    for key, cfg in (("-".join(map(str, NARROW)), RunConfig(arch="cnn", cnn_mode="corrected", filters=NARROW)),
                     ("-".join(map(str, FULL)), RunConfig(arch="cnn", cnn_mode="corrected", filters=FULL)),
                     ("p2-corrected", get_preset("p2-corrected").config)):
        cfg = cfg.resolved()
        filters = cfg.filters
        macs = multiply_adds(cfg)
        n_train = 256 if filters == FULL else 1024
        x = rng.random((n_train, 32, 32, 1), dtype=np.float32)
        y = rng.integers(0, 4, n_train)
        xi = rng.random((1024 if filters == FULL else 4096, 32, 32, 1), dtype=np.float32)
        models = {}
        for jit in (False, True):
            m = build_model(cfg, compile=False)
            m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      jit_compile=jit)
            m.fit(x[:128], y[:128], batch_size=64, epochs=1, verbose=0)   # build + trace
            models[jit] = m
        models[False].predict_on_batch(xi)
        setups[key] = (macs, x, y, xi, models)
        out["models"][key] = {"forward_macs_per_patch": macs}
        for k in ("infer", "train_default", "train_jit"):
            results[f"{key}/{k}"] = []
    for rep in range(reps):
        log(f"  efficiency rep {rep + 1}/{reps}")
        t = time.perf_counter(); mm(); dt = time.perf_counter() - t
        results["matmul"].append(n ** 3 / dt)
        for key, (macs, x, y, xi, models) in setups.items():
            t = time.perf_counter(); models[False].predict_on_batch(xi); dt = time.perf_counter() - t
            results[f"{key}/infer"].append(len(xi) * macs / dt)
            for jit, k in ((False, "train_default"), (True, "train_jit")):
                t = time.perf_counter()
                models[jit].fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
                dt = time.perf_counter() - t
                results[f"{key}/{k}"].append(3 * len(x) * macs / dt)
    peak = median(results["matmul"])
    out["matmul"]["gmacs_per_second"] = peak / 1e9
    for key in setups:
        for k in ("infer", "train_default", "train_jit"):
            v = median(results[f"{key}/{k}"])
            out["models"][key][f"{k}_gmacs_per_second"] = v / 1e9
            out["models"][key][f"{k}_ratio_to_matmul"] = v / peak
    out["raw_gmacs_per_second"] = {k: [v / 1e9 for v in vs] for k, vs in results.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--model", action="append", default=[], help="a trained .keras model (repeatable)")
    ap.add_argument("--full-stride1", action="store_true", help="also time the full CNN patch by patch at stride 1")
    ap.add_argument("--skip-efficiency", action="store_true")
    ap.add_argument("--trained-only", action="store_true", help="maps of the --model files only")
    args = ap.parse_args()
    t0 = time.perf_counter()
    import tensorflow as tf
    from xray_core.config import RunConfig
    from xray_core.maps.inference import load_model
    from xray_core.models import build_model

    fname, img = film()
    res = {"benchmark": "dense", "machine": machine(), "film": fname, "reps": args.reps,
           "tf_threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                          "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
           "maps": []}
    models = [] if args.trained_only else [
        ("untrained-narrow " + ",".join(map(str, NARROW)),
         build_model(RunConfig(arch="cnn", cnn_mode="corrected", filters=NARROW), compile=False)),
        ("untrained-full " + ",".join(map(str, FULL)),
         build_model(RunConfig(arch="cnn", cnn_mode="corrected", filters=FULL), compile=False)),
        ("untrained-valid " + ",".join(map(str, HALF)),     # p2-corrected's layout
         build_model(RunConfig(arch="cnn", cnn_mode="corrected", filters=HALF, padding="valid"), compile=False))]
    models += [(f"trained {p}", load_model(p)) for p in args.model]
    for name, model in models:
        log(f"maps: {name}")
        res["maps"].append(bench_maps(name, model, img, args.reps, args.full_stride1))
    if not args.skip_efficiency:
        log("efficiency")
        res["efficiency"] = bench_efficiency(args.reps)
    res["machine"]["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    emit(res, t0)


if __name__ == "__main__":
    main()
