"""Plotly figures for the pages. Pure functions of engine data (no streamlit), so
benchmarks can time a page refresh and tests can check what a chart holds."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from xray_core import CLASSES

from xray_core.inference import CLASS_COLOURS as _RGB

# One colour per class everywhere: the bars use the anatomy overlay's colours.
CLASS_COLOURS = {c: "#%02x%02x%02x" % rgb for c, rgb in zip(CLASSES, _RGB)}
MAX_BATCH_POINTS = 2000  # the whole figure is resent on each refresh: cap the per-batch series


def _layout(fig: go.Figure, title: str, height: int = 300) -> go.Figure:
    # uirevision keeps the student's zoom across the twice-a-second refreshes.
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40, b=10),
                      uirevision="keep", legend=dict(orientation="h", y=-0.3))
    return fig


def downsample(x: list, y: list, limit: int = MAX_BATCH_POINTS) -> tuple[list, list]:
    """Every k-th point, always keeping the last, so the chart stays light."""
    n = len(x)
    if n <= limit:
        return x, y
    idx = np.unique(np.r_[np.linspace(0, n - 1, limit).astype(int), n - 1])
    return [x[i] for i in idx], [y[i] for i in idx]


def curves(history: dict, batch_epoch: list | None = None, batch_loss: list | None = None,
           overlays: list[tuple[str, dict]] = ()) -> go.Figure:
    """Loss and accuracy per epoch (train and validation), per-batch loss behind them,
    plus the per-epoch curves of other runs to compare."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    if batch_epoch and batch_loss:
        bx, by = downsample(batch_epoch, batch_loss)
        fig.add_trace(go.Scatter(x=bx, y=by, name="batch loss", mode="lines",
                                 line=dict(width=1, color="rgba(31,119,180,0.35)")), 1, 1)
    epochs = list(range(1, len(history.get("loss", [])) + 1))
    for key, col, colour, dash in (("loss", 1, "#1f77b4", None), ("val_loss", 1, "#ff7f0e", None),
                                   ("accuracy", 2, "#1f77b4", None), ("val_accuracy", 2, "#ff7f0e", None)):
        vals = history.get(key) or []
        if vals:
            fig.add_trace(go.Scatter(x=epochs[:len(vals)], y=vals, name=key.replace("_", " "),
                                     mode="lines+markers", line=dict(color=colour, dash=dash)), 1, col)
    for label, h in overlays:
        for key, col, dash in (("val_loss", 1, "dot"), ("val_accuracy", 2, "dot")):
            vals = h.get(key) or []
            if vals:
                fig.add_trace(go.Scatter(x=list(range(1, len(vals) + 1)), y=vals, mode="lines",
                                         name=f"{label} {key.replace('_', ' ')}", line=dict(dash=dash)), 1, col)
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, "Training curves", 340)


def unit_monitor(unit_stats: list) -> go.Figure:
    """Share of dead (ReLU) / never-positive / saturated hidden units per layer, per epoch."""
    fig = go.Figure()
    kind = unit_stats[0]["kind"] if unit_stats else "dead"
    names = list(unit_stats[0]["layers"]) if unit_stats else []
    for name in names:
        fig.add_trace(go.Scatter(x=[u["epoch"] for u in unit_stats],
                                 y=[100 * u["layers"][name] for u in unit_stats],
                                 name=name, mode="lines+markers"))
    fig.update_yaxes(title_text=f"% {kind} units", range=[0, 100])
    fig.update_xaxes(title_text="epoch (0 = before training)")
    return _layout(fig, f"Hidden units {kind} on a fixed probe batch", 280)


def activation_function(name: str, alpha: float = 0.01) -> go.Figure:
    """The activation and its derivative, with the LeakyReLU slope applied."""
    x = np.linspace(-5, 5, 401)
    if name == "relu":
        y, d = np.maximum(x, 0), (x > 0).astype(float)
    elif name == "leaky_relu":
        y, d = np.where(x > 0, x, alpha * x), np.where(x > 0, 1.0, alpha)
    elif name == "elu":
        y, d = np.where(x > 0, x, np.expm1(x)), np.where(x > 0, 1.0, np.exp(x))
    elif name == "sigmoid":
        y = 1 / (1 + np.exp(-x))
        d = y * (1 - y)
    else:
        y, d = np.tanh(x), 1 - np.tanh(x) ** 2
    fig = go.Figure([go.Scatter(x=x, y=y, name=f"{name}(x)"),
                     go.Scatter(x=x, y=d, name="derivative", line=dict(dash="dash"))])
    return _layout(fig, f"{name}{f' (α={alpha:g})' if name == 'leaky_relu' else ''} and its gradient", 250)


def confusion(conf: list[list[int]]) -> go.Figure:
    z = np.asarray(conf)
    fig = go.Figure(go.Heatmap(z=z, x=list(CLASSES), y=list(CLASSES), colorscale="Blues",
                               text=z, texttemplate="%{text}", hovertemplate="true %{y} → predicted %{x}: %{z}<extra></extra>"))
    fig.update_xaxes(title_text="predicted")
    fig.update_yaxes(title_text="true", autorange="reversed")
    return _layout(fig, "Confusion matrix (test)", 340)


def precision_recall(precision: dict, recall: dict) -> go.Figure:
    fig = go.Figure([
        go.Bar(x=list(CLASSES), y=[precision.get(c) for c in CLASSES], name="precision"),
        go.Bar(x=list(CLASSES), y=[recall.get(c) for c in CLASSES], name="recall")])
    fig.update_yaxes(range=[0, 1])
    return _layout(fig, "Per-class precision and recall (test)", 300)


def class_balance(summary: dict) -> go.Figure:
    fig = go.Figure()
    for split, info in summary.items():
        fig.add_trace(go.Bar(x=list(info["per_class"]), y=list(info["per_class"].values()),
                             name=f"{split} ({info['n']})"))
    return _layout(fig, "Patches per class", 250)


def probabilities(probs: dict) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(probs), y=list(probs.values()),
                           marker_color=[CLASS_COLOURS[c] for c in probs]))
    fig.update_yaxes(range=[0, 1], title_text="probability")
    return _layout(fig, "", 220)


def class_shares(shares: dict) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(shares), y=[100 * v for v in shares.values()],
                           marker_color=[CLASS_COLOURS[c] for c in shares]))
    fig.update_yaxes(title_text="% of area")
    return _layout(fig, "Area per class", 220)
