"""Inside-page cost: one "view" of a new patch = everything the Inside page computes for it
(probabilities, integrated gradients, gradient x input, occlusion; CNNs also Grad-CAM, every
conv layer's feature maps and, for the seed CNN, the row-wise BN panel). Goal: <= 1 s for
the FC net, <= 2 s for CNNs on this 2-core CPU.

Per model: `first` = the first view of a freshly loaded model (builds Keras sub-models),
`cold` = median over --patches new patches (model warm, nothing cached), `cached` = the
same patch again (the LRU). `cold_cpu_median_s` = CPU seconds of this process per cold view
(all threads): on a shared, overloaded machine the wall time says more about the neighbours,
the CPU time bounds what an idle 2-core machine needs (wall >= cpu / 2). Untrained weights: timing does not depend on them.

--deletion-real also trains the Task 5 FC on the real patches (~40 s) and reports the
deletion test (xray_core.maps.explain.deletion_test) on --deletion-patches real test patches.

    python -m bench.explain [--patches 5] [--deletion-real] [--deletion-patches 50]
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


def view(model, patch, probe, cnn: bool, seed_cnn: bool) -> None:
    from xray_core.maps import explain as ex
    ex.probabilities(model, patch)
    ex.integrated_gradients(model, patch)
    ex.gradient_x_input(model, patch)
    ex.occlusion(model, patch)
    if cnn:
        ex.grad_cam(model, patch)
        ex.feature_maps(model, patch)
        if seed_cnn:
            ex.batchnorm_rows(model, np.concatenate([patch[None], probe[:15]]))
    else:
        ex.fc_units(model, probe)


def bench_model(name, model, patches, probe, cnn, seed_cnn) -> dict:
    t = time.perf_counter()
    view(model, patches[0], probe, cnn, seed_cnn)
    first = time.perf_counter() - t
    cold, cpu = [], []
    for p in patches[1:]:
        t, c = time.perf_counter(), time.process_time()
        view(model, p, probe, cnn, seed_cnn)
        cold.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    t = time.perf_counter()
    view(model, patches[1], probe, cnn, seed_cnn)
    cached = time.perf_counter() - t
    log(f"{name}: first {first:.2f}s cold {median(cold):.2f}s cached {cached * 1000:.1f}ms")
    return {"first_s": first, "cold_median_s": median(cold), "cold_max_s": max(cold),
            "cold_cpu_median_s": median(cpu), "cached_s": cached,
            "goal_s": 2.0 if cnn else 1.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patches", type=int, default=5)
    ap.add_argument("--deletion-real", action="store_true")
    ap.add_argument("--deletion-patches", type=int, default=50)
    args = ap.parse_args()
    t0 = time.perf_counter()
    from xray_core.config import RunConfig
    from xray_core.models import build_model
    from xray_core.maps import explain as ex
    rng = np.random.default_rng(0)
    try:
        test = real_dataset(("test",)).split("test")
        pick = rng.choice(len(test), size=args.patches + 1 + 16, replace=False)
        patches = test.x[pick, :, :, 0]
        source = "real test patches"
    except SystemExit:
        patches = rng.random((args.patches + 1 + 16, 32, 32)).astype(np.float32)
        source = "random patches (real data not found)"
    probe, patches = patches[-16:], patches[:args.patches + 1]

    out = {"machine": machine(), "patches": source, "views": {}}
    import os
    for name, cfg in (("fc_task5", RunConfig(arch="fc", activation="leaky_relu", batch_norm=True)),
                      ("cnn_seed", RunConfig(arch="cnn", cnn_mode="seed")),
                      ("cnn_corrected", RunConfig(arch="cnn", cnn_mode="corrected"))):
        model = build_model(cfg, compile=False)
        cnn = cfg.arch == "cnn"
        out["views"][name] = bench_model(name, model, patches, probe, cnn, cnn and cfg.cnn_mode == "seed")
    ex.cache_clear()
    out["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]

    if args.deletion_real:
        from xray_core.presets import get_preset
        from xray_core.train.job import TrainingJob
        ds = real_dataset()
        log("training p1-task5 on the real patches…")
        t = time.perf_counter()
        job = TrainingJob(get_preset("p1-task5").config.replace(data="real"), ds, probe=False).run()
        acc = (job.record().get("test") or {}).get("accuracy")
        log(f"trained in {time.perf_counter() - t:.0f}s, test accuracy {acc}")
        test = ds.split("test")
        idx = np.random.default_rng(1).choice(len(test), size=args.deletion_patches, replace=False)
        out["deletion_real"] = {"model": "p1-task5 FC on ../shared/data/jsrt_patches", "test_accuracy": acc,
                                **{m: ex.deletion_test(job.model, test.x[idx, :, :, 0], m, 0.1, 5, 0)
                                   for m in ("saliency", "occlusion")}}
    emit(out, t0)


if __name__ == "__main__":
    main()
