"""Page refresh cost: building the live charts from a full snapshot, as the Train page's
fragment does twice a second (app.REFRESH_S = 0.5 s).

The snapshot is shaped like a finished p1-task4 run (FC, 40 epochs, batch 32 on 9,600
patches: 12,000 per-batch points, 40 epochs of loss/accuracy/val_*, 41 dead-unit
entries for two layers), with two other runs overlaid (the runs table allows it).
Per refresh the page calls charts.curves(...) and charts.unit_monitor(...), and
st.plotly_chart then does exactly
    plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True)
    plotly.io.to_json(fig, validate=False)
(streamlit 1.67 elements/plotly_chart.py). Each stage is timed, --reps times.
Goal: well under the 0.5 s refresh period (we take <= 0.1 s, a fifth of it).

    python -m bench.refresh [--reps 30]
"""
from __future__ import annotations

if __package__ in (None, ""):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import argparse
import time

import numpy as np

from bench._common import emit, log, machine, median, pct

GOAL_S = 0.1


def fake_snapshot(epochs=40, steps=300, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    n = epochs * steps
    x = [(i // steps) + ((i % steps) + 1) / steps for i in range(n)]
    loss = list(1.4 * np.exp(-np.arange(n) / 4000) + 0.25 + rng.normal(0, 0.12, n))
    acc = list(np.clip(0.4 + 0.5 * (1 - np.exp(-np.arange(n) / 3000)) + rng.normal(0, 0.06, n), 0, 1))
    e = np.arange(1, epochs + 1)
    history = {"loss": list(1.3 * np.exp(-e / 12) + 0.3), "accuracy": list(0.9 - 0.5 * np.exp(-e / 10)),
               "val_loss": list(1.3 * np.exp(-e / 12) + 0.45), "val_accuracy": list(0.7 - 0.3 * np.exp(-e / 10))}
    units = [{"epoch": k, "kind": "dead", "layers": {"leaky_relu1": float(rng.random() * 0.2),
                                                     "leaky_relu2": float(rng.random() * 0.3)}}
             for k in range(epochs + 1)]
    return {"history": {k: [float(v) for v in vs] for k, vs in history.items()},
            "batch_epoch": x, "batch_loss": [float(v) for v in loss], "batch_accuracy": [float(v) for v in acc],
            "unit_stats": units}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    t0 = time.perf_counter()
    info = machine()
    import plotly
    import plotly.io
    import plotly.tools

    from xray_ui import charts

    snap = fake_snapshot()
    overlays = [("#1 p1-task2", fake_snapshot(seed=1)["history"]), ("#2 p1-task3", fake_snapshot(seed=2)["history"])]

    def one_refresh(with_overlays: bool) -> dict:
        t = {}
        s = time.perf_counter()
        # the copy a snapshot() hands out (lists are copied under the job's lock)
        b_x, b_l = list(snap["batch_epoch"]), list(snap["batch_loss"])
        hist = {k: list(v) for k, v in snap["history"].items()}
        t["copy_lists"] = time.perf_counter() - s
        s = time.perf_counter()
        fig = charts.curves(hist, b_x, b_l, overlays=overlays if with_overlays else ())
        t["curves_build"] = time.perf_counter() - s
        s = time.perf_counter()
        fig = plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True)
        spec = plotly.io.to_json(fig, validate=False)
        t["curves_plotly_chart"] = time.perf_counter() - s
        s = time.perf_counter()
        fig2 = charts.unit_monitor(snap["unit_stats"])
        t["units_build"] = time.perf_counter() - s
        s = time.perf_counter()
        fig2 = plotly.tools.return_figure_from_figure_or_data(fig2, validate_figure=True)
        spec2 = plotly.io.to_json(fig2, validate=False)
        t["units_plotly_chart"] = time.perf_counter() - s
        t["total"] = sum(t.values())
        t["_bytes"] = (len(spec), len(spec2))
        return t

    one_refresh(True)  # warm-up: plotly's validators are built lazily on first use
    out = {}
    for label, ov in (("no_overlays", False), ("two_overlays", True)):
        rows = [one_refresh(ov) for _ in range(args.reps)]
        stages = [k for k in rows[0] if not k.startswith("_")]
        out[label] = {k: {"median_ms": median([r[k] for r in rows]) * 1e3,
                          "p99_ms": pct([r[k] for r in rows], 99) * 1e3} for k in stages}
        out[label]["json_bytes_curves"], out[label]["json_bytes_units"] = rows[0]["_bytes"]
        log(f"{label}: total median {out[label]['total']['median_ms']:.1f} ms")
    tot = out["two_overlays"]["total"]["median_ms"] / 1e3
    emit({"benchmark": "refresh", "machine": info,
          "snapshot": {"epochs": 40, "batches": len(snap["batch_loss"]), "unit_entries": len(snap["unit_stats"]),
                       "batch_points_sent": charts.MAX_BATCH_POINTS},
          "plotly": plotly.__version__, "reps": args.reps, "stages": out,
          "refresh_period_s": 0.5, "goal_s": GOAL_S, "met": tot <= GOAL_S,
          "share_of_refresh_period": tot / 0.5}, t0)


if __name__ == "__main__":
    main()
