"""The projector's chart (issue 25, item 3): the class's race of validation curves. Pure
plotly, no streamlit. Sized for 1280x720 read from the back of a room: large type, thick
means, one faint line per run."""
from __future__ import annotations

import plotly.graph_objects as go

# colour-blind-safe, distinct on a washed-out projector (Okabe-Ito)
SETUP_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
FONT = 22


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def race(curves: dict, height: int = 530) -> go.Figure:
    """Validation accuracy (%) per epoch: each run a faint line in its setup's colour, each
    setup's mean (over the runs that reached that epoch) bold and named in the legend."""
    fig = go.Figure()
    for k, setup in enumerate(curves.get("setups") or []):
        colour = SETUP_COLOURS[k % len(SETUP_COLOURS)]
        for run in setup["runs"]:
            ys = [100 * v for v in run["val_accuracy"]]
            fig.add_trace(go.Scatter(x=list(range(1, len(ys) + 1)), y=ys, mode="lines", showlegend=False,
                                     hoverinfo="skip", line=dict(color=_rgba(colour, 0.35), width=2)))
        if setup["mean"]:
            ys = [100 * v for v in setup["mean"]]
            fig.add_trace(go.Scatter(x=list(range(1, len(ys) + 1)), y=ys, mode="lines+markers",
                                     name=f"{setup['label']} (mean of {len(setup['runs'])})",
                                     line=dict(color=colour, width=7), marker=dict(size=10)))
    longest = _longest(curves)
    axis = dict(tickfont=dict(size=FONT - 2), title_font=dict(size=FONT), automargin=True)
    fig.update_layout(
        height=height, font=dict(size=FONT), margin=dict(l=10, r=10, t=10, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0, font=dict(size=FONT)),
        xaxis=dict(title="epoch", dtick=1 if longest <= 15 else None, range=[0.8, max(longest, 2) + 0.2], **axis),
        yaxis=dict(title="validation accuracy %", range=[0, 100], **axis), plot_bgcolor="white",
        paper_bgcolor="white",
    )
    fig.update_xaxes(showgrid=True, gridcolor="#ddd")
    fig.update_yaxes(showgrid=True, gridcolor="#ddd")
    if not any(s["runs"] for s in curves.get("setups") or []):
        fig.add_annotation(text="The curves appear here as the class's runs finish their first epoch.",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=FONT))
    return fig


def _longest(curves: dict) -> int:
    return max((len(r["val_accuracy"]) for s in curves.get("setups") or [] for r in s["runs"]), default=0)
