"""Plotly figures for the Inside page (pages/5_Inside.py). Pure functions of engine data
(xray_core.maps.explain), no streamlit, so tests can check what a figure holds.

Small images (32x32 patches, 3x3 filters, feature maps) are drawn as ONE heatmap mosaic
per figure rather than one subplot per image: a grid of 48 subplots takes seconds to
lay out in the browser, a single heatmap milliseconds."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from xray_core import CLASSES
GRAY = [[0, "#000000"], [1, "#ffffff"]]
HEAT = "Inferno"
SIGNED = "RdBu_r"   # red = positive (pushes the class up / excites the unit), blue = negative


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=height, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def patch(p: np.ndarray, title: str = "The patch (what the model sees)") -> go.Figure:
    fig = go.Figure(go.Heatmap(z=p, colorscale=GRAY, zmin=0, zmax=1, showscale=False,
                               hovertemplate="x %{x}, y %{y}: %{z:.2f}<extra></extra>"))
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    return _layout(fig, title, 260)


def saliency(p: np.ndarray, s: np.ndarray, title: str, signed: bool = True, opacity: float = 0.65) -> go.Figure:
    """The map over the patch: the patch in grey underneath, the map on top (semi-transparent).
    Signed maps are centred on 0 (red helps the class, blue speaks against it)."""
    s = np.asarray(s, dtype=np.float32)
    lim = float(np.abs(s).max()) or 1.0
    over = (go.Heatmap(z=s, colorscale=SIGNED, zmid=0, zmin=-lim, zmax=lim, opacity=opacity, name="map",
                       colorbar=dict(thickness=10, len=0.8), hovertemplate="x %{x}, y %{y}: %{z:.3g}<extra></extra>")
            if signed else
            go.Heatmap(z=s, colorscale=HEAT, zmin=0, zmax=lim, opacity=opacity, name="map",
                       colorbar=dict(thickness=10, len=0.8), hovertemplate="x %{x}, y %{y}: %{z:.3g}<extra></extra>"))
    fig = go.Figure([go.Heatmap(z=p, colorscale=GRAY, zmin=0, zmax=1, showscale=False, hoverinfo="skip",
                                name="patch"), over])
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    return _layout(fig, title, 280)


def mosaic(images: np.ndarray, cols: int, gap: int = 1, per_tile: bool = True, signed: bool = True) -> np.ndarray:
    """Tiles (n, h, w) -> one (rows*(h+gap), cols*(w+gap)) array with NaN gaps; each tile
    scaled to [-1, 1] (signed) or [0, 1] on its own so faint ones stay visible."""
    imgs = np.asarray(images, dtype=np.float32)
    n, h, w = imgs.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan, np.float32)
    for k, t in enumerate(imgs):
        if per_tile:
            if signed:
                t = t / (float(np.abs(t).max()) or 1.0)
            else:
                lo, hi = float(t.min()), float(t.max())
                t = (t - lo) / (hi - lo) if hi > lo else np.zeros_like(t)
        r, c = divmod(k, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = t
    return out


def tiles(images: np.ndarray, labels: list[str], cols: int, title: str, signed: bool = True,
          marked: list[bool] | None = None, mark_text: str = "dead", height: int | None = None) -> go.Figure:
    """A grid of small images in one heatmap; `marked` tiles get a red frame and `mark_text`."""
    imgs = np.asarray(images, dtype=np.float32)
    n, h, w = imgs.shape
    gap = max(1, h // 8)
    z = mosaic(imgs, cols, gap, signed=signed)
    fig = go.Figure(go.Heatmap(z=z, colorscale=SIGNED if signed else "Viridis", zmid=0 if signed else None,
                               showscale=False, hoverongaps=False, hoverinfo="skip"))
    for k, lab in enumerate(labels):
        r, c = divmod(k, cols)
        x0, y0 = c * (w + gap) - 0.5, r * (h + gap) - 0.5
        dead = bool(marked[k]) if marked is not None else False
        if dead:
            fig.add_shape(type="rect", x0=x0, y0=y0, x1=x0 + w, y1=y0 + h, line=dict(color="#e31a1c", width=3))
        fig.add_annotation(x=x0 + w / 2, y=y0 + 0.5, text=lab + (f" · {mark_text}" if dead else ""),
                           showarrow=False, yanchor="top", font=dict(size=9, color="#e31a1c" if dead else "#222"),
                           bgcolor="rgba(255,255,255,0.6)")
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    rows = -(-n // cols)
    return _layout(fig, title, height or max(200, 60 + rows * int(700 / cols)))


def histograms(names: list[str], hist: list[tuple[np.ndarray, np.ndarray]], zero_share: list[float]) -> go.Figure:
    """Activation distribution per conv layer, one small panel each (log counts)."""
    fig = make_subplots(rows=1, cols=len(names),
                        subplot_titles=[f"{n} · {100 * z:.0f} % ≤ 0" for n, z in zip(names, zero_share)])
    for i, (counts, edges) in enumerate(hist, start=1):
        centres = (edges[:-1] + edges[1:]) / 2
        fig.add_trace(go.Bar(x=centres, y=counts, name=names[i - 1], marker_color="#1f77b4",
                             showlegend=False), 1, i)
    fig.update_yaxes(type="log", title_text="count", row=1, col=1)
    fig.update_xaxes(title_text="activation")
    fig.update_layout(bargap=0)
    return _layout(fig, "Activation distribution per conv layer (this patch)", 260)


def bn_panel(r: dict) -> go.Figure:
    """One feature-map channel before BN, after the seed CNN's row-wise BN (the model),
    after row-wise and channel-wise standardisation of the batch; and the row profiles."""
    keys = (("before", "before batch norm"), ("model", "the model's row-wise BN"),
            ("rowwise", "row-wise (batch stats)"), ("channelwise", "channel-wise (batch stats)"))
    fig = make_subplots(rows=1, cols=5, subplot_titles=[t for _, t in keys] + ["mean per image row"],
                        column_widths=[0.19, 0.19, 0.19, 0.19, 0.24], horizontal_spacing=0.03)
    for i, (k, _) in enumerate(keys, start=1):
        m = r[k]
        lim = float(np.abs(m).max()) or 1.0
        fig.add_trace(go.Heatmap(z=m, colorscale=SIGNED, zmid=0, zmin=-lim, zmax=lim, showscale=False,
                                 hovertemplate="row %{y}, col %{x}: %{z:.3g}<extra>" + k + "</extra>"), 1, i)
        fig.update_xaxes(visible=False, row=1, col=i)
        fig.update_yaxes(visible=False, autorange="reversed", row=1, col=i)
    rows = np.arange(r["rows"])
    for k, colour in (("before", "#555"), ("rowwise", "#d62728"), ("channelwise", "#1f77b4")):
        fig.add_trace(go.Scatter(x=r["row_profile"][k], y=rows, mode="lines", name=k,
                                 line=dict(color=colour)), 1, 5)
    fig.update_yaxes(autorange="reversed", title_text="image row", row=1, col=5)
    fig.update_layout(legend=dict(orientation="h", y=-0.15))
    return _layout(fig, f"{r['layer']}, channel {r['channel']} of {r['channels']}", 300)


def comparison(cmp: dict, labels: tuple[str, str]) -> go.Figure:
    kinds = cmp["dead_kind"]
    fig = go.Figure(go.Bar(x=[f"{labels[0]}<br>({kinds[0]})", f"{labels[1]}<br>({kinds[1]})"],
                           y=[100 * v for v in cmp["dead_share"]], marker_color=["#7f7f7f", "#2ca02c"],
                           text=[f"{100 * v:.0f} %" for v in cmp["dead_share"]], textposition="outside"))
    fig.update_yaxes(range=[0, 100], title_text="% of first-layer units")
    return _layout(fig, "Units that never fire on the probe patches", 260)


def probabilities_bar(probs: np.ndarray) -> go.Figure:
    from .charts import probabilities
    return probabilities({c: float(v) for c, v in zip(CLASSES, probs)})


PICK_STEP = 8   # film pixels between the clickable points of the Classify page's map


def film_picker(rgb: np.ndarray, picked: tuple[int, int], step: int = PICK_STEP) -> go.Figure:
    """The anatomy map as a picture you click on: the blended map as one PNG image (not
    65,536 numbers of JSON), with a grid of invisible points every `step` film pixels that
    Streamlit's point selection reports back (plotly selects markers, not image pixels).
    The picked point is drawn as a white ring."""
    import base64
    import io

    from PIL import Image
    h, w = rgb.shape[:2]
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    src = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step]
    fig = go.Figure([
        go.Image(source=src, hoverinfo="skip", name="map"),
        go.Scatter(x=xs.ravel().tolist(), y=ys.ravel().tolist(), mode="markers", name="points",
                   marker=dict(size=12, color="rgba(255,255,255,0)"),
                   selected=dict(marker=dict(color="rgba(255,255,255,0)")),
                   unselected=dict(marker=dict(opacity=0)),
                   hovertemplate="x %{x}, y %{y} · click to explain<extra></extra>"),
        go.Scatter(x=[picked[0]], y=[picked[1]], mode="markers", name="picked", hoverinfo="skip",
                   marker=dict(size=16, symbol="circle-open", color="white", line=dict(width=3))),
    ])
    fig.update_xaxes(visible=False, range=[-0.5, w - 0.5], constrain="domain")
    fig.update_yaxes(visible=False, range=[h - 0.5, -0.5], scaleanchor="x")
    fig.update_layout(showlegend=False, height=480, margin=dict(l=0, r=0, t=30, b=0), clickmode="event+select",
                      title=dict(text="Click a point of the map", font=dict(size=14)))
    return fig


def picked_point(selection, w: int, h: int) -> tuple[int, int] | None:
    """(x, y) of the clicked grid point in a Streamlit plotly selection, or None."""
    try:
        points = selection["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for p in points or ():
        if p.get("curve_number", 1) == 1 and p.get("x") is not None and p.get("y") is not None:
            return (min(max(int(round(p["x"])), 0), w - 1), min(max(int(round(p["y"])), 0), h - 1))
    return None
