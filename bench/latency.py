"""Start-to-first-batch latency, snapshot cost while training, and Stop under load (in process).

1. first_batch: TensorFlow is imported and the real data loaded (cached) first; then
   jobs are started one after another. A reader thread polls job.snapshot() every
   2 ms, as a (very eager) page would; "visible" is the first snapshot with a batch
   metric in it, measured from job.start(). The first job of the process ("cold":
   first Keras model ever built and traced here) is reported apart from the later
   ones ("warm", median of --n). Goal <= 1 s. The page itself polls every 0.5 s
   (app.REFRESH_S), so a browser sees it up to 0.5 s (+ network) later.
2. snapshot: a 40-epoch FC run with 300 steps per epoch (12,000 batches, the history
   size of preset p1-task4; batches of 8 on 2,400 train patches to save CPU time) with
   a reader calling snapshot() every 20 ms; cost in µs while training, and again on the
   finished job (full history, no contention).
3. stop_under_load: two jobs keep training while a third is stopped, --stops times;
   batches published after stop() (goal <= 1: "within one batch") and the time until
   the job leaves the training state; the other two must keep going.

    python -m bench.latency [--n 5] [--epochs 40] [--stops 4]
"""
from __future__ import annotations

if __package__ in (None, ""):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import argparse
import threading
import time

from bench._common import emit, log, machine, median, pct, real_dataset


def first_batch(cfg, ds, scheduler) -> dict:
    from xray_core.train.job import TrainingJob
    job = TrainingJob(cfg, ds, scheduler=scheduler)
    seen: dict = {}

    def reader():
        end = time.perf_counter() + 60
        while time.perf_counter() < end:
            s = job.snapshot()
            if s.state == "training" and "training_at" not in seen:
                seen["training_at"] = time.perf_counter()
            if s.batch_loss:
                seen["visible_at"] = time.perf_counter()
                return
            if s.finished:
                return
            time.sleep(0.002)

    t = threading.Thread(target=reader, daemon=True)
    job.start()
    t.start()
    t.join(65)
    job.stop()
    job.join(120)
    if "visible_at" not in seen:
        raise RuntimeError(f"no batch seen: {job.snapshot().state} {job.snapshot().error}")
    return {"visible_s": seen["visible_at"] - job.started_at,
            "engine_first_batch_s": job.first_batch_at - job.started_at,
            "until_training_state_s": seen.get("training_at", float("nan")) - job.started_at}


def part_first_batch(ds, n: int) -> dict:
    from xray_core.config import RunConfig
    from xray_core.train.job import Scheduler
    sched = Scheduler(cap=1)
    cases = {"fc_bs64": RunConfig(arch="fc", epochs=5, batch_size=64),
             "fc_bs32": RunConfig(arch="fc", epochs=5, batch_size=32),
             "cnn_seed": RunConfig(arch="cnn", cnn_mode="seed", epochs=1, batch_size=64, limit_train=2000),
             "cnn_corrected": RunConfig(arch="cnn", cnn_mode="corrected", epochs=1, batch_size=64,
                                        limit_train=2000)}
    from xray_core.data.dataset import Dataset
    # no test split here: each job is stopped after its first batch, and evaluating a stopped
    # CNN on 2,368 test patches would only burn time (it is not part of the latency)
    ds = Dataset(ds.name, {k: v for k, v in ds.splits.items() if k != "test"})
    out = {}
    cold = first_batch(cases["fc_bs64"].replace(data=ds.name), ds, sched)
    out["cold_first_job_fc_bs64"] = cold
    log(f"cold fc: {cold}")
    for name, cfg in cases.items():
        reps = n if cfg.arch == "fc" else max(1, min(n, 3))
        rows = [first_batch(cfg.replace(data=ds.name, seed=i), ds, sched) for i in range(reps)]
        for r in rows:
            log(f"{name}: visible {r['visible_s']:.3f}s")
        vis = [r["visible_s"] for r in rows]
        out[name] = {"visible_s": {"median": median(vis), "max": max(vis), "runs": vis},
                     "engine_first_batch_s_median": median([r["engine_first_batch_s"] for r in rows]),
                     "until_training_state_s_median": median([r["until_training_state_s"] for r in rows]),
                     "goal_s": 1.0, "met": median(vis) <= 1.0}
    return out


def part_snapshot(ds, epochs: int) -> dict:
    from xray_core.config import RunConfig
    from xray_core.train.job import Scheduler, TrainingJob
    # 12,000 batches like p1-task4 (40 epochs x 300 batches of 32 on 9,600 patches), made cheaper on a
    # shared CPU: batches of 8 on 2,400 patches give the same 300 steps per epoch and history size.
    cfg = RunConfig(arch="fc", activation="leaky_relu", epochs=epochs, batch_size=8, limit_train=2400,
                    data=ds.name)
    job = TrainingJob(cfg, ds, scheduler=Scheduler(cap=1)).start()
    samples: list[tuple[int, float]] = []   # (batches in history, seconds)
    end = time.perf_counter() + 600
    while time.perf_counter() < end:
        t = time.perf_counter()
        s = job.snapshot()
        samples.append((len(s.batch_loss), time.perf_counter() - t))
        if s.finished:
            break
        time.sleep(0.02)
    job.join(60)
    snap = job.snapshot()
    full = len(snap.batch_loss)
    idle = []
    for _ in range(300):
        t = time.perf_counter()
        job.snapshot()
        idle.append(time.perf_counter() - t)
    us = lambda xs: {"median_us": median(xs) * 1e6, "p99_us": pct(xs, 99) * 1e6, "n": len(xs)}  # noqa: E731
    during = [d for n, d in samples if not (n == full and n)]   # while training
    last_quarter = [d for n, d in samples if n >= 0.75 * full and n < full]
    res = snap.result or {}
    return {"config": {"arch": "fc", "activation": "leaky_relu", "epochs": epochs, "batch_size": 8,
                       "limit_train": 2400, "steps_per_epoch": snap.steps_per_epoch},
            "state": snap.state, "batches_in_history": full, "epochs_in_history": len(snap.history["loss"]),
            "while_training": us(during), "while_training_last_quarter": us(last_quarter) if last_quarter else None,
            "finished_full_history": us(idle),
            "fit_seconds": res.get("timing", {}).get("fit_seconds"),
            "note": "reader polled every 20 ms (40x the page's 0.5 s refresh)"}


def part_stop_under_load(ds, stops: int) -> dict:
    from xray_core.config import RunConfig
    from xray_core.train.job import STOPPED, TRAINING, Scheduler, TrainingJob
    sched = Scheduler(cap=3)
    others = [TrainingJob(RunConfig(epochs=500, batch_size=32, seed=s, data=ds.name), ds, scheduler=sched).start()
              for s in (101, 102)]
    rows = []
    try:
        for k in range(stops):
            job = TrainingJob(RunConfig(epochs=500, batch_size=32, seed=k, data=ds.name), ds,
                              scheduler=sched).start()
            end = time.perf_counter() + 120
            while time.perf_counter() < end and (len(job.snapshot().batch_loss) < 30
                                                 or any(len(o.snapshot().batch_loss) < 30 for o in others)):
                time.sleep(0.01)
            before = [len(o.snapshot().batch_loss) for o in others]
            if True:                   # counted right before stop(): a batch may land in between
                n0 = len(job.snapshot().batch_loss)
                t_stop = time.perf_counter()
                job.stop()
            left_training = None
            while time.perf_counter() < t_stop + 60:
                if job.state != TRAINING:
                    left_training = time.perf_counter() - t_stop
                    break
                time.sleep(0.0005)
            job.join(120)
            s = job.snapshot()
            # the others must keep publishing batches (allow for an epoch end: validation + probe)
            t_wait = time.perf_counter() + 10
            while time.perf_counter() < t_wait:
                after = [len(o.snapshot().batch_loss) for o in others]
                if all(a > b for a, b in zip(after, before)):
                    break
                time.sleep(0.05)
            rows.append({"batches_after_stop": len(s.batch_loss) - n0,
                         "left_training_s": left_training,
                         "finished_state": s.state,
                         "total_until_finished_s": job.ended_at - t_stop if job.ended_at else None,
                         "others_kept_training": all(a > b for a, b in zip(after, before))
                                                 and all(o.state == TRAINING for o in others)})
            log(f"stop {k}: {rows[-1]}")
    finally:
        for o in others:
            o.stop()
        for o in others:
            o.join(120)
    worst = max(r["batches_after_stop"] for r in rows)
    return {"cap": 3, "concurrent_jobs": 3, "stops": rows,
            "max_batches_after_stop": worst, "median_left_training_s": median([r["left_training_s"] for r in rows]),
            "goal": "<= 1 batch", "met": worst <= 1 and all(r["others_kept_training"] for r in rows)
            and all(r["finished_state"] == STOPPED for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--stops", type=int, default=4)
    args = ap.parse_args()
    t0 = time.perf_counter()
    info = machine()
    t = time.perf_counter()
    from xray_core.tf_quiet import keras  # noqa: F401
    tf_s = time.perf_counter() - t
    t = time.perf_counter()
    ds = real_dataset(("train", "validation", "test"))
    data_s = time.perf_counter() - t
    result = {"benchmark": "latency", "machine": info, "data": ds.name,
              "setup": {"import_tensorflow_s": tf_s, "load_real_data_s": data_s}}
    result["first_batch"] = part_first_batch(ds, args.n)
    result["stop_under_load"] = part_stop_under_load(ds, args.stops)
    result["snapshot"] = part_snapshot(ds, args.epochs)
    emit(result, t0)


if __name__ == "__main__":
    main()
