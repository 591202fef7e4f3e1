"""Plotly figures for the pages. Pure functions of engine data (no streamlit), so
benchmarks can time a page refresh and tests can check what a chart holds."""
from __future__ import annotations

import copy
import functools
import threading
from collections import OrderedDict

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from xray_core import CLASSES
from xray_core.maps.inference import CLASS_COLOURS as _RGB

# One colour per class everywhere (bars, legends, the anatomy overlay): the overlay's table.
# Background is its grey, never white, so it shows on a white page and in legends.
CLASS_COLOURS = {c: "#%02x%02x%02x" % rgb for c, rgb in zip(CLASSES, _RGB)}
# The whole figure is resent to every watcher on each change: the per-batch trace is cut to
# at most this many points (min and max of each bin, so the noise band keeps its width).
MAX_BATCH_POINTS = 400
TITLE_FONT = 16       # readable on a projector at 1280x720


def _layout(fig: go.Figure, title: str, height: int = 300) -> go.Figure:
    # uirevision keeps the student's zoom across the twice-a-second refreshes.
    # The legend sits at the bottom of the figure (container coordinates), below the x-axis
    # title whatever the height: a paper-relative y overlapped it on short charts.
    fig.update_layout(title=dict(text=title, font=dict(size=TITLE_FONT)), height=height,
                      margin=dict(l=10, r=10, t=50, b=75), font=dict(size=13), uirevision="keep",
                      legend=dict(orientation="h", yref="container", y=0.0, yanchor="bottom"))
    return fig


def downsample(x: list, y: list, limit: int = MAX_BATCH_POINTS) -> tuple[list, list]:
    """At most `limit` points: the first and last, and the minimum and maximum of each of
    (limit - 2) // 2 equal bins in order, so spikes and the noise band survive."""
    n = len(x)
    if n <= limit:
        return list(x), list(y)
    yv = np.asarray(y, dtype=float)
    bins = max(1, (limit - 2) // 2)
    edges = np.unique(np.linspace(1, n - 1, bins + 1).astype(int))
    starts, end = edges[:-1], edges[-1]
    # Vectorised (it runs on every new batch of a watched run): the first position of each
    # bin's min and max; NaNs never win, an all-NaN bin keeps its first point.
    seg = np.repeat(np.arange(len(starts)), np.diff(edges))
    vals = yv[starts[0]:end]
    nan = np.isnan(vals)
    keep = {0, n - 1}
    for reduce, fill in ((np.minimum, np.inf), (np.maximum, -np.inf)):
        target = reduce.reduceat(np.where(nan, fill, vals), starts - starts[0])
        hits = np.flatnonzero(vals == target[seg])
        chosen = starts.copy()
        found, first = np.unique(seg[hits], return_index=True)
        chosen[found] = starts[0] + hits[first]
        keep.update(chosen.tolist())
    idx = sorted(keep)
    return [x[i] for i in idx], [y[i] for i in idx]


def curves(history: dict, batch_epoch: list | None = None, batch_loss: list | None = None,
           overlays: list[tuple[str, dict]] = (), accuracy: str = "accuracy") -> go.Figure:
    """Loss and accuracy per epoch (train and validation), per-batch loss behind them,
    plus the per-epoch curves of other runs to compare. `accuracy`: what the accuracy
    axis counts ("pixel accuracy" for a segmentation run: the share of pixels right)."""
    data = []
    if batch_epoch and batch_loss:
        bx, by = downsample(batch_epoch, batch_loss)
        data.append(_line(1, bx, by, "batch loss", "lines", line=dict(width=1, color="rgba(31,119,180,0.35)")))
    epochs = list(range(1, len(history.get("loss", [])) + 1))
    for key, col, colour in (("loss", 1, "#1f77b4"), ("val_loss", 1, "#ff7f0e"),
                             ("accuracy", 2, "#1f77b4"), ("val_accuracy", 2, "#ff7f0e")):
        vals = history.get(key) or []
        if vals:
            data.append(_line(col, epochs[:len(vals)], _in_unit(key, vals), key.replace("_", " "),
                              "lines+markers", line=dict(color=colour)))
    for label, h in overlays:
        for key, col in (("val_loss", 1), ("val_accuracy", 2)):
            vals = h.get(key) or []
            if vals:
                data.append(_line(col, list(range(1, len(vals) + 1)), _in_unit(key, vals),
                                  f"{label} {key.replace('_', ' ')}", "lines", line=dict(dash="dot")))
    # Rebuilt on every new batch of a watched run: plotly's validation of the same axes and
    # titles each time cost ~20 ms, so the layout is validated once and the traces (plain
    # scatter dicts, checked against plotly's validator in tests/test_charts.py) go in as is.
    return go.Figure(data=data, layout=copy.deepcopy(_curves_layout(accuracy)), _validate=False)


def _line(col: int, x: list, y: list, name: str, mode: str, **style) -> dict:
    axis = "" if col == 1 else str(col)
    return dict(type="scatter", x=list(x), y=list(y), name=name, mode=mode, xaxis="x" + axis, yaxis="y" + axis,
                **style)


@functools.lru_cache(maxsize=2)
def _curves_layout(accuracy: str = "accuracy") -> dict:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", accuracy.capitalize()), horizontal_spacing=0.14)
    fig.update_xaxes(title_text="epoch")
    # a segmentation run's loss may be Dice or cross-entropy + Dice (its "loss" knob)
    fig.update_yaxes(title_text="loss (cross-entropy)" if accuracy == "accuracy" else "loss",
                     rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text=f"{accuracy} (%)", range=[0, 100], row=1, col=2)
    return _layout(fig, "Training curves", 360).to_dict()["layout"]


def _in_unit(key: str, vals: list) -> list:
    """Accuracy in % on every chart (the status line and metrics say % too)."""
    if "accuracy" in key:
        return [None if v is None else 100 * v for v in vals]
    return list(vals)


def curves_key(snap, overlays: list[tuple[str, dict]] = ()) -> tuple:
    """What the curves figure depends on, cheap to compare: a figure is rebuilt only when
    this moves (a new batch, epoch or state), not on every poll of every watcher."""
    return (snap.job_id, snap.state, snap.epoch, len(snap.batch_loss),
            tuple(len(v or ()) for v in snap.history.values()),
            tuple((label, len(h.get("val_loss") or ())) for label, h in overlays))


class SharedFigure(go.Figure):
    """A figure of the cache: shared by every watcher and never changed once built, so the
    dict that st.plotly_chart serialises is made once, not deep-copied on every refresh of
    every watcher (≈ 1 ms each, tens of times a second with a class of 30)."""

    def to_dict(self) -> dict:
        d = self.__dict__.get("_shared_dict")
        if d is None:
            d = self._shared_dict = super().to_dict()
        return d


def _share(obj):
    if type(obj) is go.Figure:
        obj.__class__ = SharedFigure    # same data, no copy; frozen from here on
        obj.to_dict()
    return obj


class FigureCache:
    """Figures shared by all watchers of a run, process-wide: built once per version of the
    run's data, then reused by every session's refresh. Small LRU; thread-safe."""

    def __init__(self, size: int = 256):
        self.size = size
        self._d: "OrderedDict[tuple, go.Figure]" = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0          # figures actually built (tests and benchmarks read it)

    def get(self, key: tuple, build) -> go.Figure:
        with self._lock:
            fig = self._d.get(key)
            if fig is not None:
                self._d.move_to_end(key)
                return fig
        fig = _share(build())
        with self._lock:
            self.builds += 1
            self._d[key] = fig
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return fig

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self.builds = 0


FIGURES = FigureCache()


def table(key: tuple, rows: list[dict]) -> "pa.Table":
    """A table for st.dataframe, converted from rows once per key and shared (pandas to
    Arrow on every rerun was a tenth of a results page's server time)."""
    def build():
        import pandas as pd
        import pyarrow as pa
        return pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    return FIGURES.get(("table",) + key, build)


def live_curves(snap, overlays: list[tuple[str, dict]] = (), accuracy: str = "accuracy") -> go.Figure:
    """The live panel's curves for a snapshot, built once per (run, data version)."""
    return FIGURES.get(("curves", accuracy) + curves_key(snap, overlays),
                       lambda: curves(snap.history, snap.batch_epoch, snap.batch_loss, overlays=overlays,
                                      accuracy=accuracy))


DICE_KEYS = tuple(f"val_dice_{c}" for c in CLASSES)   # a segmentation run's history (train/segment.py)


def has_dice(history: dict) -> bool:
    return any(history.get(k) for k in DICE_KEYS)


def dice_curves(history: dict) -> go.Figure:
    """Dice of each class on the validation films, per epoch, in the class colours: the thin
    clavicle is the one that lags (pixel accuracy hides it, being mostly background and lung)."""
    fig = go.Figure()
    for c, k in zip(CLASSES, DICE_KEYS):
        vals = history.get(k) or []
        if vals:
            fig.add_trace(go.Scatter(x=list(range(1, len(vals) + 1)), y=list(vals), name=c,
                                     mode="lines+markers", line=dict(color=CLASS_COLOURS[c])))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="Dice (1 = perfect overlap)", range=[0, 1])
    return _layout(fig, "Dice per class (validation films)", 300)


def live_dice(snap) -> go.Figure:
    """The Dice chart of a snapshot, built once per epoch of the run (shared by watchers)."""
    return FIGURES.get(("dice", snap.job_id, snap.state, len(snap.history.get(DICE_KEYS[0]) or ())),
                       lambda: dice_curves(snap.history))


def dice_vs_prior(dice: dict, prior: dict | None) -> go.Figure:
    """Test Dice per class of the model beside the prior's (each pixel's most frequent
    label over the training films, image ignored): the map any model must beat."""
    val = lambda d: [None if (d or {}).get(c) is None else d[c] for c in CLASSES]  # noqa: E731
    bars = [go.Bar(x=list(CLASSES), y=val(dice), name="model", marker_color=[CLASS_COLOURS[c] for c in CLASSES])]
    if prior:
        bars.append(go.Bar(x=list(CLASSES), y=val(prior), name="prior (image ignored)",
                           marker_color="rgba(120,120,120,0.55)"))
    fig = go.Figure(bars)
    fig.update_yaxes(range=[0, 1], title_text="Dice")
    fig.update_xaxes(tickangle=0)
    return _layout(fig, "Dice per class (test films): the model and the prior", 320)


def waiting(message: str) -> go.Figure:
    """A placeholder instead of empty axes while nothing is measured yet."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=18, color="#555"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, "Training curves", 360)


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


CONFUSION_HEIGHT = 420   # px: readable on a projector (issue 10: at least ~300)


def confusion(conf: list[list[int]], unit: str = "patches") -> go.Figure:
    """Counts and row percentages (share of each true class), labels horizontal. `unit`:
    what is counted (pixels for a segmentation run)."""
    z = np.asarray(conf, dtype=float)
    rows = z.sum(1, keepdims=True)
    share = np.divide(100 * z, rows, out=np.zeros_like(z), where=rows > 0)
    text = [[f"{int(z[i, j]):,}<br>{share[i, j]:.1f} %" for j in range(z.shape[1])] for i in range(z.shape[0])]
    fig = go.Figure(go.Heatmap(z=share, x=list(CLASSES), y=list(CLASSES), colorscale="Blues", zmin=0, zmax=100,
                               text=text, texttemplate="%{text}", textfont=dict(size=15),
                               customdata=z.astype(int), showscale=False,
                               hovertemplate="true %{y} → predicted %{x}: %{customdata} " + unit + " "
                                             "(%{z:.1f} % of the true %{y})<extra></extra>"))
    fig.update_xaxes(title_text="predicted class", tickangle=0, side="bottom")
    fig.update_yaxes(title_text="true class", tickangle=0, autorange="reversed")
    return _layout(fig, f"Confusion matrix (test): {unit} and % of the true class", CONFUSION_HEIGHT)


def precision_recall(precision: dict, recall: dict, unit: str = "patches") -> go.Figure:
    pct = lambda d: [None if d.get(c) is None else 100 * d[c] for c in CLASSES]  # noqa: E731
    fig = go.Figure([
        go.Bar(x=list(CLASSES), y=pct(precision), name="precision"),
        go.Bar(x=list(CLASSES), y=pct(recall), name="recall")])
    fig.update_yaxes(range=[0, 100], title_text=f"% of {unit}")
    fig.update_xaxes(tickangle=0)
    return _layout(fig, "Per-class precision and recall (test)", 320)


def film_balance(summary: dict) -> go.Figure:
    """A films dataset (FilmDataset.summary): each class's share of the pixels per split."""
    fig = go.Figure()
    for split, info in summary.items():
        share = info["pixel_share"]
        fig.add_trace(go.Bar(x=list(share), y=[100 * v for v in share.values()],
                             name=f"{split} ({info['films']} films)"))
    fig.update_yaxes(title_text="% of pixels")
    return _layout(fig, "Pixels per class", 250)


def class_balance(summary: dict) -> go.Figure:
    fig = go.Figure()
    for split, info in summary.items():
        fig.add_trace(go.Bar(x=list(info["per_class"]), y=list(info["per_class"].values()),
                             name=f"{split} ({info['n']})"))
    fig.update_yaxes(title_text="patches")
    return _layout(fig, "Patches per class", 250)


def probabilities(probs: dict) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(probs), y=[100 * v for v in probs.values()],
                           marker_color=[CLASS_COLOURS[c] for c in probs]))
    fig.update_yaxes(range=[0, 100], title_text="probability (%)")
    return _layout(fig, "", 220)


def class_shares(shares: dict) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(shares), y=[100 * v for v in shares.values()],
                           marker_color=[CLASS_COLOURS[c] for c in shares]))
    fig.update_yaxes(title_text="% of area")
    return _layout(fig, "Area per class", 220)
