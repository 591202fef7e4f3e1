"""Classify cost: per patch (predict_patches throughput) and per 256x256 radiograph map
(anatomy_map at stride 4 and 1), for the FC net and the corrected CNN.

Untrained weights (timing does not depend on them). Patches: the shared test split,
tiled to --patches. Film: one 256x256 phantom radiograph (xray_core.data.phantom.build), the
Classify page's size after to_film(). Stride 4 classifies 64x64 = 4,096 patches,
stride 1 all 65,536. Each figure is the median of --reps calls after a warm-up call
(the first call builds Keras' predict function); the CNN at stride 1 is run
--cnn-stride1-reps times (it is the slow one).

    python -m bench.classify [--reps 3] [--patches 8192] [--cnn-stride1-reps 1]
"""
from __future__ import annotations

if __package__ in (None, ""):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import argparse
import time

import numpy as np

from bench._common import emit, log, machine, median, real_dataset


def timed(fn, reps):
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--patches", type=int, default=8192)
    ap.add_argument("--cnn-stride1-reps", type=int, default=1)
    args = ap.parse_args()
    t0 = time.perf_counter()
    info = machine()
    from xray_core.config import RunConfig
    from xray_core.maps.inference import anatomy_map, predict_patches
    from xray_core.models import build_model, multiply_adds
    from xray_core.data.phantom.build import render_radiograph

    test = real_dataset(("test",)).split("test")
    reps_needed = -(-args.patches // len(test))
    x = np.concatenate([test.x] * reps_needed)[:args.patches]
    film = render_radiograph(np.random.default_rng(0))[0].astype(np.float32) / 255.0
    result = {"benchmark": "classify", "machine": info, "film_shape": list(film.shape), "models": {}}
    for name, cfg in (("fc", RunConfig(arch="fc")), ("cnn_corrected", RunConfig(arch="cnn", cnn_mode="corrected"))):
        model = build_model(cfg, compile=False)
        r = {"params": int(model.count_params()), "multiply_adds_per_patch": multiply_adds(cfg)}
        n = args.patches if name == "fc" else max(1024, args.patches // 4)
        xb = x[:n]
        predict_patches(model, xb[:64])                      # warm-up: builds predict
        ts = timed(lambda: predict_patches(model, xb), args.reps)
        r["predict_patches"] = {"n": n, "median_s": median(ts), "per_patch_us": median(ts) / n * 1e6,
                                "patches_per_s": n / median(ts), "runs_s": ts}
        one = timed(lambda: predict_patches(model, xb[:1]), 10)
        r["single_patch_call_ms"] = median(one) * 1e3
        log(f"{name}: {r['predict_patches']['per_patch_us']:.1f} us/patch, single call {r['single_patch_call_ms']:.1f} ms")
        for stride in (4, 1):
            reps = args.cnn_stride1_reps if (name != "fc" and stride == 1) else args.reps
            anatomy_map(model, film, stride=stride) if stride == 4 else None   # warm-up (same shapes)
            maps = []
            for _ in range(reps):
                m = anatomy_map(model, film, stride=stride)
                maps.append(m.seconds)
            gh, gw = m.grid_shape
            r[f"map_stride{stride}"] = {"patches": gh * gw, "median_s": median(maps), "runs_s": maps,
                                        "per_patch_us": median(maps) / (gh * gw) * 1e6}
            log(f"{name} stride {stride}: {median(maps):.2f} s for {gh * gw} patches")
        result["models"][name] = r
        del model
    emit(result, t0)


if __name__ == "__main__":
    main()
