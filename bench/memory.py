"""Memory over many runs: 20 FC runs one after another in one process, RSS per run.

Each arm runs in a fresh Python process (so arms do not share heap history):
  drop  every finished job is released at once (no reference kept, then gc.collect()):
        what a server pays for runs nobody holds any more (sessions that went away)
  app   the Train page's policy: xray_ui.session.SessionRuns keeps every run's record
        but only the newest MAX_RUNS_WITH_MODELS (8) models; at the end the whole
        session is dropped (tab closed) and what that frees is measured
  isolated  like drop, but each job trains in a recycled worker process
        (TrainingJob(trainer=InWorker()), what the app does): the server's own RSS
  trim  (optional, --arms) like drop plus glibc malloc_trim(0): separates freed-but-
        fragmented heap from memory that is really still held
  clear (optional, --arms) like drop plus keras.backend.clear_session() after each
        run - only legal when no other thread is building or training, i.e. never
        in the app; here to show whether it frees anything
Run 0 is a warm-up (TensorFlow's one-time allocations) and is reported apart.
RSS = VmRSS from /proc/self/status. Growth per run is the least-squares slope over
runs 1..N (MiB/run); "bound" projects it to a class.

(Closing a tab no longer stops its jobs: runs live in the run store, issue 8, and
stop when asked; so there is no session-release arm any more.)

    python -m bench.memory [--runs 20] [--epochs 2] [--arms drop,app] [--data real|phantom]
"""
from __future__ import annotations

if __package__ in (None, ""):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import argparse
import gc
import json
import subprocess
import sys
import time
import weakref

import numpy as np

from bench._common import REPO, emit, log, machine, median, rss_mb


def _dataset(which: str):
    if which == "phantom":
        from xray_core.data.load import load_dataset
        return load_dataset("phantom")
    from bench._common import real_dataset
    return real_dataset()


def slope(ys) -> float | None:
    if len(ys) < 2:
        return None
    x = np.arange(len(ys), dtype=float)
    return float(np.polyfit(x, np.asarray(ys, float), 1)[0])


def arm(kind: str, runs: int, epochs: int, data: str) -> dict:
    from xray_core.config import RunConfig
    from xray_core.tf_quiet import keras
    from xray_core.train.backends.worker import InWorker
    from xray_core.train.job import DONE, Scheduler, TrainingJob, get_job

    ds = _dataset(data)
    sched = Scheduler(cap=1)
    holder = None
    if kind == "app":
        from xray_ui.session import MAX_RUNS_WITH_MODELS, SessionRuns
        holder = SessionRuns()
    gc.collect()
    base = rss_mb()
    rows = []
    for i in range(runs + 1):
        cfg = RunConfig(arch="fc", epochs=epochs, batch_size=64, seed=i, data=ds.name)
        t = time.perf_counter()
        job = TrainingJob(cfg, ds, scheduler=sched, trainer=InWorker() if kind == "isolated" else None).run()
        assert job.state == DONE, job.snapshot().error
        row = {"run": i, "seconds": time.perf_counter() - t, "rss_after_run": rss_mb()}
        ref, jid = weakref.ref(job), job.id
        if kind in ("drop", "clear", "trim", "isolated"):
            del job
            row["rss_dropped_no_gc"] = rss_mb()
            gc.collect()
            if kind == "trim":      # hand freed heap pages back to the OS: fragmentation, or a real leak?
                import ctypes
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            if kind == "clear":
                keras.backend.clear_session()
                gc.collect()
            row["job_collected"] = ref() is None and get_job(jid) is None
        else:
            holder.add(job, None)
            del job
            gc.collect()
            row["models_held"] = sum(r.job.model is not None for r in holder.runs)
        row["rss"] = rss_mb()
        rows.append(row)
        log(f"[{kind}] run {i}: {row['rss']:.1f} MiB ({row['seconds']:.1f} s)")
    steady = [r["rss"] for r in rows[1:]]
    out = {"arm": kind, "data": ds.name, "epochs_per_run": epochs, "runs": runs,
           "rss_before_any_run": base, "rss_after_warmup_run0": rows[0]["rss"],
           "rss_after_run1": rows[1]["rss"], "rss_after_last": rows[-1]["rss"],
           "growth_run1_to_last_mib": rows[-1]["rss"] - rows[1]["rss"],
           "slope_mib_per_run": slope(steady),
           "slope_last_half_mib_per_run": slope(steady[len(steady) // 2:]),
           "median_run_seconds": median([r["seconds"] for r in rows[1:]]),
           "per_run": rows}
    if kind == "app":
        out["models_held_at_end"] = rows[-1]["models_held"]
        out["max_runs_with_models"] = MAX_RUNS_WITH_MODELS
        before = rss_mb()
        refs = [weakref.ref(r.job) for r in holder.runs]
        del holder
        gc.collect()
        out["session_dropped"] = {"rss_before": before, "rss_after": rss_mb(), "freed_mib": before - rss_mb(),
                                  "jobs_collected": sum(r() is None for r in refs), "jobs": len(refs)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--arms", default="drop,app,isolated")
    ap.add_argument("--data", default="real", choices=("real", "phantom"))
    ap.add_argument("--arm", help=argparse.SUPPRESS)    # internal: run one arm in this process
    args = ap.parse_args()
    if args.arm:
        print(json.dumps(arm(args.arm, args.runs, args.epochs, args.data)))
        return
    t0 = time.perf_counter()
    result = {"benchmark": "memory", "machine": machine(), "arms": {}}
    for kind in args.arms.split(","):
        p = subprocess.run([sys.executable, "-m", "bench.memory", "--arm", kind, "--runs", str(args.runs),
                            "--epochs", str(args.epochs), "--data", args.data],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
        if p.returncode:
            raise SystemExit(f"arm {kind} failed:\n{p.stderr[-3000:]}")
        result["arms"][kind] = json.loads(p.stdout.strip().splitlines()[-1])
        a = result["arms"][kind]
        log(f"arm {kind}: slope {a['slope_mib_per_run']:.2f} MiB/run, run1->last {a['growth_run1_to_last_mib']:.1f} MiB")
    drop = result["arms"].get("drop")
    if drop:
        s = max(drop["slope_mib_per_run"], 0.0)
        result["bound"] = {
            "leak_mib_per_released_run": s,
            "projected_growth_mib_300_runs": 300 * s,
            "note": "300 runs = a class of 30 training 10 runs each; models of runs a session still holds "
                    "(at most 8 per open session) come on top and are freed when the session ends"}
    emit(result, t0)


if __name__ == "__main__":
    main()
