"""Plotly figures for the Experiments page: repeats, comparisons, sweeps, the course study.
Pure functions of xray_core.runs.experiments records and xray_core.stats summaries (no streamlit)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .charts import _layout

RUN_COLOUR = "rgba(31,119,180,0.25)"     # each seed: faint
MEAN_COLOUR = "#1f77b4"                  # the mean: bold
COURSE_COLOUR = "#d62728"


def _pct(v):
    return None if v is None else 100 * v


def _mean_curve(curves: list[list]) -> list[float]:
    """Per-epoch mean over the runs that reached that epoch (runs may still be training)."""
    n = max((len(c) for c in curves), default=0)
    out = []
    for i in range(n):
        vals = [c[i] for c in curves if len(c) > i and c[i] is not None]
        out.append(float(np.mean(vals)) if vals else None)
    return out


def repeat_curves(records: list[dict]) -> go.Figure:
    """Validation loss and accuracy of every seed, faint, with their mean bold (training mean dashed)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Validation loss", "Validation accuracy (%)"))
    for col, key in ((1, "val_loss"), (2, "val_accuracy")):
        scale = 100 if col == 2 else 1
        curves = []
        for r in records:
            ys = [None if v is None else scale * v for v in r["history"].get(key) or []]
            if not ys:
                continue
            curves.append(ys)
            fig.add_trace(go.Scatter(x=list(range(1, len(ys) + 1)), y=ys, mode="lines",
                                     line=dict(width=1, color=RUN_COLOUR), name=f"seed {r['seed']}",
                                     legendgroup="seeds", showlegend=False,
                                     hovertemplate=f"seed {r['seed']}: %{{y:.3f}}<extra></extra>"), 1, col)
        mean = _mean_curve(curves)
        if mean:
            fig.add_trace(go.Scatter(x=list(range(1, len(mean) + 1)), y=mean, mode="lines",
                                     line=dict(width=4, color=MEAN_COLOUR), name="mean of the seeds",
                                     showlegend=col == 1), 1, col)
        train = _mean_curve([[None if v is None else scale * v for v in r["history"].get(key[4:]) or []]
                             for r in records])
        if train:
            fig.add_trace(go.Scatter(x=list(range(1, len(train) + 1)), y=train, mode="lines",
                                     line=dict(width=2, color="#ff7f0e", dash="dash"), name="training (mean)",
                                     showlegend=col == 1), 1, col)
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, f"{len(records)} seeds: each run faint, their mean bold", 340)


def spread(summary: dict, title: str, course: float | None = None, percent: bool = True) -> go.Figure:
    """One dot per seed, the mean ± sd bar, the 95 % interval of the mean as a band, and the
    course's single figure as a line: is the course's number inside the seed-to-seed spread?"""
    k = 100 if percent else 1
    fig = go.Figure()
    vals = [k * v for v in summary.get("values") or []]
    if summary.get("ci95"):
        lo, hi = (k * v for v in summary["ci95"])
        fig.add_vrect(x0=lo, x1=hi, fillcolor="rgba(31,119,180,0.12)", line_width=0,
                      annotation_text="95 % CI of the mean", annotation_position="top left")
    fig.add_trace(go.Scatter(x=vals, y=[0] * len(vals), mode="markers", name="one seed",
                             marker=dict(size=11, color=RUN_COLOUR, line=dict(width=1, color=MEAN_COLOUR))))
    if summary.get("mean") is not None:
        sd = summary.get("sd")
        fig.add_trace(go.Scatter(x=[k * summary["mean"]], y=[0.5], mode="markers", name="mean ± sd",
                                 marker=dict(size=14, color=MEAN_COLOUR, symbol="diamond"),
                                 error_x=dict(type="data", array=[k * sd]) if sd is not None else None))
    if course is not None:
        fig.add_vline(x=course, line=dict(color=COURSE_COLOUR, width=3, dash="dash"),
                      annotation_text=f"course: {course:g}", annotation_position="bottom right")
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="the course's one run",
                                 line=dict(color=COURSE_COLOUR, dash="dash")))
    fig.update_yaxes(visible=False, range=[-0.6, 1.1])
    return _layout(fig, title + (" (%)" if percent else ""), 220)


def comparison(a: dict, b: dict, a_label: str, b_label: str, figure: float | None = None) -> go.Figure:
    """Both groups' seeds side by side with mean ± 95 % CI, or a group against one figure (%)."""
    fig = go.Figure()
    groups = [(a_label, a)] + ([(b_label, b)] if figure is None else [])
    for label, s in groups:
        vals = [100 * v for v in s["values"]]
        fig.add_trace(go.Box(y=vals, name=label, boxpoints="all", jitter=0.3, pointpos=0, fillcolor="rgba(0,0,0,0)",
                             line=dict(color="rgba(0,0,0,0)"), marker=dict(color=MEAN_COLOUR, size=9),
                             showlegend=False))
        if s.get("ci95"):
            lo, hi = s["ci95"]
            fig.add_trace(go.Scatter(x=[label], y=[100 * s["mean"]], mode="markers", showlegend=False,
                                     marker=dict(size=14, symbol="diamond", color="black"),
                                     error_y=dict(type="data", symmetric=False, array=[100 * (hi - s["mean"])],
                                                  arrayminus=[100 * (s["mean"] - lo)]),
                                     hovertemplate="mean %{y:.2f} % (95 % CI)<extra></extra>"))
    if figure is not None:
        fig.add_hline(y=100 * figure, line=dict(color=COURSE_COLOUR, dash="dash", width=3),
                      annotation_text=f"{b_label}: {100 * figure:.1f} %")
    fig.update_yaxes(title_text="test accuracy (%)")
    return _layout(fig, "Each seed, and each group's mean with its 95 % interval", 320)


def sweep_chart(points: list[dict], knob_label: str, log_x: bool = False) -> go.Figure:
    """Test and training accuracy (mean ± sd over seeds) against the knob; the gap between the
    two lines is overfitting (it closes as the training set grows)."""
    fig = go.Figure()
    xs = [p["value"] for p in points]
    for key, name, colour in (("train_accuracy", "training accuracy", "#ff7f0e"),
                              ("test_accuracy", "test accuracy", MEAN_COLOUR)):
        ys = [_pct(p[key]["mean"]) for p in points]
        err = [_pct(p[key]["sd"]) or 0 for p in points]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name + " (mean ± sd)",
                                 line=dict(color=colour, width=3), error_y=dict(type="data", array=err)))
        for p in points:  # every seed as a faint dot behind the mean
            fig.add_trace(go.Scatter(x=[p["value"]] * len(p[key]["values"]),
                                     y=[100 * v for v in p[key]["values"]], mode="markers", showlegend=False,
                                     marker=dict(color=colour, opacity=0.3, size=6), hoverinfo="skip"))
    fig.update_xaxes(title_text=knob_label, type="log" if log_x else None)
    fig.update_yaxes(title_text="accuracy (%)")
    return _layout(fig, f"Accuracy against {knob_label}", 360)


def study_chart(points: list[dict]) -> go.Figure:
    """The course's seven single figures against our mean ± sd over seeds, preset by preset."""
    names = [p["preset"] for p in points]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=names, y=[_pct(p["test_accuracy"]["mean"]) for p in points], mode="markers",
                             name="this server: mean ± sd", marker=dict(size=12, color=MEAN_COLOUR),
                             error_y=dict(type="data", array=[_pct(p["test_accuracy"]["sd"]) or 0 for p in points])))
    for p in points:
        fig.add_trace(go.Scatter(x=[p["preset"]] * len(p["test_accuracy"]["values"]),
                                 y=[100 * v for v in p["test_accuracy"]["values"]], mode="markers",
                                 showlegend=False, marker=dict(color=RUN_COLOUR, size=7), hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=names, y=[p["reported"].get("test_accuracy") for p in points], mode="markers",
                             name="the course (one run)",
                             marker=dict(size=12, symbol="x", color=COURSE_COLOUR)))
    fig.update_yaxes(title_text="test accuracy (%)")
    return _layout(fig, "Test accuracy: the course's one run against several seeds here", 340)
