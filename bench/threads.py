"""TensorFlow threads per trainer when two students train at once.

The worker pool gives each training process cores // trainers TensorFlow threads
(`xray_core.train.backends.worker.worker_threads`: 1 each on this 2-core machine with its cap of 2).
This bench measures whether that is right: two `train` processes of the same preset
run side by side, first with TensorFlow's default (every process uses all cores:
2 x 2 threads on 2 cores), then with one intra-op and one inter-op thread each, and,
for reference, one process alone with the default and with one thread (what a student
training alone in the app gets). Settings are interleaved per rep;
reported are medians of the wall time until both runs finished (start-up included) and
of each run's `fit_seconds`, and the patches per second the pair trained together
(until the slower one finished fitting).

    python -m bench.threads [--preset p2-corrected] [--limit-train 4000] [--epochs 2] [--reps 2]
"""
from __future__ import annotations

if __package__ in (None, ""):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import REAL_DATA, REPO, emit, log, machine, median

# The child sets its threads through TensorFlow's API before anything runs, then trains
# through the CLI (the same path as `python -m xray_core train`).
CHILD = """
import sys
threads = int(sys.argv[1])
import tensorflow as tf
if threads:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
from xray_core.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def trial(n_procs: int, threads: int, args, tmp: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads))
    procs, outs = [], []
    t0 = time.perf_counter()
    for i in range(n_procs):
        out = tmp / f"run{i}-{threads}-{time.monotonic_ns()}.json"
        cmd = [sys.executable, "-c", CHILD, str(threads), "train", "--preset", args.preset, "--data", args.data,
               "--limit-train", str(args.limit_train), "--epochs", str(args.epochs), "--seed", str(i),
               "--json", str(out)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        outs.append(out)
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a training process failed (exit {p.returncode})")
    wall = time.perf_counter() - t0
    fits = [json.loads(o.read_text())["timing"]["fit_seconds"] for o in outs]
    return {"wall_seconds": wall, "fit_seconds": fits}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="p2-corrected")
    ap.add_argument("--data", default=REAL_DATA)
    ap.add_argument("--limit-train", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    t0 = time.perf_counter()
    settings = {"alone, default threads": (1, 0), "alone, 1 thread": (1, 1),
                "two at once, default threads": (2, 0), "two at once, 1 thread each": (2, 1)}
    seen: dict[str, list[dict]] = {k: [] for k in settings}
    with tempfile.TemporaryDirectory() as d:
        for rep in range(args.reps):
            for name, (n, threads) in settings.items():
                log(f"rep {rep + 1}/{args.reps}: {name}")
                seen[name].append(trial(n, threads, args, Path(d)))
    res = {"benchmark": "threads", "machine": machine(), "preset": args.preset, "limit_train": args.limit_train,
           "epochs": args.epochs, "reps": args.reps, "settings": {}}
    for name, (n, threads) in settings.items():
        walls = [r["wall_seconds"] for r in seen[name]]
        fits = [f for r in seen[name] for f in r["fit_seconds"]]
        res["settings"][name] = {
            "processes": n, "threads_each": threads or "default (all cores)",
            "wall_seconds_median": median(walls), "fit_seconds_median": median(fits),
            # fit time (not the processes' start-up): patches trained per second by the pair,
            # until the slower of the two finished fitting
            "fit_patches_per_second_together": median(
                [n * args.limit_train * args.epochs / max(r["fit_seconds"]) for r in seen[name]]),
            "runs": seen[name]}
    res["machine"]["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    emit(res, t0)


if __name__ == "__main__":
    main()
