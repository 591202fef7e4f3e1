"""Does the time estimate hold? Estimate vs actual for several runs, on this machine.

For each case: the estimate before the run (xray_core.train.estimate.estimate: calibrated
by timing a few real steps of the model, cached per cost key in a temporary
XRAY_LAB_HOME so the first case of each key pays for its own measurement), then
the run itself (TrainingJob.run, probe on, as the app and the CLI train), then
actual / estimated for the whole job (start -> results) and for the fit alone.
Cases: FC p1-task1 and p1-task5 on the real patches (or the phantom), a small seed
CNN (limit_train), the corrected CNN on a few hundred patches. With --learn, each
case is run twice: the second estimate is corrected by what the first run taught
(source "learned").

    nice -n 10 python -m bench.estimate [--data phantom|PATH] [--learn] [--fc-epochs N]

On a loaded shared machine every figure is noisy: the ratios of one run are what
to read, and the load average at start is in the output.
"""
from __future__ import annotations

if __package__ in (None, ""):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import tempfile
import time

from bench._common import REAL_DATA, log, machine


def cases(fc_epochs: int | None):
    from xray_core.presets import get_preset
    t1, t5 = get_preset("p1-task1").config, get_preset("p1-task5").config
    if fc_epochs:
        t1, t5 = t1.replace(epochs=fc_epochs), t5.replace(epochs=fc_epochs)
    cnn = get_preset("p2-task2").config.replace(epochs=2, limit_train=320)
    corr = get_preset("p2-task1").config.replace(cnn_mode="corrected", lr=None, l2=None, dropout=None,
                                                  epochs=2, limit_train=400)
    return [("fc p1-task1", t1), ("fc p1-task5", t5), ("cnn p2-task2 small (320 patches)", cnn),
            ("cnn corrected (400 patches)", corr)]


def run_case(name: str, cfg, ds, learn: bool) -> dict:
    from xray_core.train import estimate as est
    from xray_core.train.job import TrainingJob
    n_train = len(ds.split("train"))
    n_val = len(ds.splits["validation"]) if ds.has("validation") else 0
    n_test = len(ds.splits["test"]) if ds.has("test") else 0
    t = time.perf_counter()
    e = est.estimate(cfg, n_train, n_val, n_test)
    estimate_call = time.perf_counter() - t
    rough = est.rough_estimate(cfg, n_train, n_val, n_test)
    job = TrainingJob(cfg, ds)
    started = time.perf_counter()   # run() trains in this thread: no hand-off to count
    job.run()
    snap = job.snapshot()
    total = job.ended_at - started
    fit = snap.result["timing"]["fit_seconds"]
    startup = (job.first_batch_at or started) - started
    out = {"case": name, "config": cfg.resolved().to_dict(), "source": e["source"],
           "estimate_call_seconds": round(estimate_call, 2),
           "estimated": {k: round(e[k], 2) for k in ("total", "fit", "startup", "per_epoch")},
           # first_batch includes the first-step trace, which also lies inside fit;
           # outside_fit = model build + test evaluation
           "actual": {"total": round(total, 2), "fit": round(fit, 2), "first_batch": round(startup, 2),
                      "outside_fit": round(total - fit, 2)},
           "ratio_total": round(total / e["total"], 3), "ratio_fit": round(fit / e["fit"], 3),
           "rough_ratio_total": round(total / rough["total"], 3),
           "state": snap.state, "loadavg": [round(v, 1) for v in os.getloadavg()]}
    if learn:
        est.learn(cfg, n_train, n_val, n_test, fit, total)
    log(f"{name}: {e['source']} est {e['total']:.1f}s actual {total:.1f}s "
        f"ratio {out['ratio_total']} (fit {out['ratio_fit']}, rough {out['rough_ratio_total']})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=REAL_DATA, help="phantom or a course-layout folder")
    ap.add_argument("--learn", action="store_true", help="run each case twice: measured, then learned")
    ap.add_argument("--fc-epochs", type=int, help="shorten the FC presets (default: their own epochs)")
    ap.add_argument("--only", help="run only cases whose name contains this")
    a = ap.parse_args()
    os.environ["XRAY_LAB_HOME"] = tempfile.mkdtemp(prefix="xray-bench-estimate-")
    from xray_core.data.load import load_dataset
    info = machine()
    ds = load_dataset(a.data)
    rows = []
    for name, cfg in cases(a.fc_epochs):
        if a.only and a.only not in name:
            continue
        rows.append(run_case(name, cfg, ds, a.learn))
        if a.learn:
            rows.append(run_case(name + " (again)", cfg, ds, a.learn))
    print(json.dumps({"benchmark": "estimate", "data": a.data, "machine": info, "cases": rows}, indent=1))


if __name__ == "__main__":
    main()
