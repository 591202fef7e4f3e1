"""Helpers behind the Inside page (pages/5_Inside.py): which models it can open, which
patches it can show (test, misclassified, uploaded, a point of a Classify film), and the
Classify page's "why?" panel for a point of an anatomy map.

`models_for_inside()` is the one place that says where models come from (today: this
session's finished runs and an uploaded .keras, shared with the Classify page); point it
at the run store's workspace when that lands.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from xray_core import CLASSES
from xray_core.maps import explain as ex
from xray_core.errors import XrayLabError, one_line
from xray_core.maps.inference import predict_patches

from . import classify_view as cv

PENDING = "_inside_pending_patch"   # a patch handed over from the Classify page
MAX_TEST = 2048                     # test patches scanned for misclassified ones

METHOD_TEXT = {
    "saliency": "**Integrated gradients** — red pixels pushed the probability of this class up, blue ones "
                "pushed it down; we fade the patch in from black in 32 steps and add up how much each pixel "
                "moved the answer.",
    "occlusion": "**Occlusion** — we paint a grey 8×8 square over every part of the patch in turn: red where "
                 "hiding that part made the model less sure of this class, blue where it made it surer.",
    "gradcam": "**Grad-CAM** — which places in the last convolutional layer's feature maps the class depends on "
               "most, enlarged to the patch: coarse (8×8 with 'same' padding, 3×3 with 'valid', whose last "
               "1×1 map has no places) but it shows where the network looked.",
}


def models_for_inside() -> list[cv.ModelChoice]:
    """Models the Inside page can open: this session's finished runs that still hold a model,
    then the uploaded .keras (if any). Each has .key, .label, .model and .dataset."""
    return cv.session_models()


def run_config(choice: cv.ModelChoice):
    """The RunConfig behind a session or stored run (None for uploads)."""
    if choice.key.startswith("stored:"):
        from xray_core.config import RunConfig
        from .session import store
        rec = store().get(choice.key.split(":", 1)[1])
        try:
            return RunConfig.from_dict(rec.config) if rec else None
        except XrayLabError:
            return None
    if not choice.key.startswith("run:"):
        return None
    from .session import runs
    for run in runs().runs:
        if f"run:{run.job.id}" == choice.key:
            return run.job.config
    return None


def test_split(choice: cv.ModelChoice):
    return cv.demo_dataset(choice).split("test")


@st.cache_data(show_spinner=False, max_entries=16)
def _predictions(model_key: str, _model, _x: np.ndarray) -> np.ndarray:
    return predict_patches(_model, _x).argmax(1)


def test_predictions(choice: cv.ModelChoice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (n, 32, 32), true y, predicted y) on the first MAX_TEST test patches, once per model."""
    test = test_split(choice)
    x = test.x[:MAX_TEST, :, :, 0]
    return x, test.y[:MAX_TEST], _predictions(f"{choice.key}:{cv.demo_dataset(choice).name}", choice.model, x)


def probe(choice: cv.ModelChoice, n: int = 256) -> np.ndarray:
    """The fixed probe batch for dead units: the first n test patches."""
    return test_split(choice).x[:n, :, :, 0]


@dataclass
class Picked:
    patch: np.ndarray    # float32 32x32, exactly the model's input
    source: str          # one line for the caption
    true: str | None = None


def hand_over(patch: np.ndarray, source: str) -> None:
    """Open the Inside page on this patch (used by the Classify page's point picker)."""
    st.session_state[PENDING] = {"patch": np.asarray(patch, np.float32), "source": source}


def film_point_panel(key: str, amap, choice: cv.ModelChoice, opacity: float = 0.45) -> None:
    """Classify page: click a point of the mapped film (or set x/y), see its patch,
    probabilities and why."""
    from . import charts_inside as ci
    # A toggle, not an expander: an expander's body is computed even when closed, and
    # most students never ask.
    if not st.toggle("Why this colour? Click a point of the film", key=f"why_on_{key}"):
        return
    with st.container(border=True):
        h, w = amap.film.shape
        xk, yk, mk, last = f"why_x_{key}", f"why_y_{key}", f"why_map_{key}", f"_why_clicked_{key}"
        st.session_state.setdefault(xk, w // 2)
        st.session_state.setdefault(yk, h // 2)
        # A new click moves the sliders (set before they are drawn in this run); the same
        # selection seen again on later reruns does not undo a slider the student moved.
        clicked = ci.picked_point(st.session_state.get(mk), w, h)
        if clicked is not None and clicked != st.session_state.get(last):
            st.session_state[last] = clicked
            st.session_state[xk], st.session_state[yk] = clicked
        x, y = int(st.session_state[xk]), int(st.session_state[yk])
        st.plotly_chart(ci.film_picker(cv.blend(amap, opacity), (x, y)), key=mk, on_select="rerun",
                        selection_mode="points", width=cv.MAP_PX)
        c1, c2 = st.columns(2)
        x = c1.slider("x (film pixels)", 0, w - 1, key=xk, help="Or fine-tune the point here.")
        y = c2.slider("y (film pixels)", 0, h - 1, key=yk)
        try:
            patch = ex.film_patch(amap.film, int(y), int(x))
            p = ex.probabilities(choice.model, patch)
            sal = ex.integrated_gradients(choice.model, patch)
        except Exception as e:   # an uploaded model can be anything: one line, never a traceback
            st.error(f"Cannot explain this point: {one_line(e)}")
            return
        a, b, c = st.columns(3)
        a.plotly_chart(ci.patch(patch, f"Patch centred on ({x}, {y})"), width="stretch", key=f"why_patch_{key}")
        b.plotly_chart(ci.probabilities_bar(p), width="stretch", key=f"why_probs_{key}")
        label = CLASSES[int(np.argmax(p))]
        c.plotly_chart(ci.saliency(patch, sal, f"Why {label}"), width="stretch", key=f"why_sal_{key}")
        st.caption(METHOD_TEXT["saliency"])
        if st.button("Open this patch on the Inside page", key=f"why_open_{key}"):
            hand_over(patch, f"film point ({x}, {y})")
            st.switch_page("pages/5_Inside.py")
