"""X-ray Lab — Inside: what each layer of a trained network learned, and why a patch got
its label. A thin view: the maths lives in xray_core.maps.explain, the figures in
xray_ui.charts_inside, model and patch sources in xray_ui.inside_view.
"""
from __future__ import annotations

import xray_ui

xray_ui.install()   # first: Streamlit's patches, version-checked, and the server's shutdown (xray_ui/__init__.py)

import numpy as np
import streamlit as st

from xray_core import CLASSES
from xray_core.maps import explain as ex
from xray_core.errors import XrayLabError, one_line
from xray_ui import charts_inside as ci
from xray_ui import classify_view as cv
from xray_ui import inside_view as iv
from xray_ui.nav import page_links

from xray_ui.icon import ICON  # noqa: E402  (the favicon ships with the app: no request leaves the server)
st.set_page_config(page_title="X-ray Lab · Inside", page_icon=ICON, layout="wide")
SOURCES = ("Test patch", "Misclassified", "Upload")
N_UNITS = 24      # first-layer units shown (most influential first)
N_MAPS = 16       # feature-map channels shown per layer


def main() -> None:
    page_links()
    st.title("X-ray Lab · Inside the network")
    st.caption("Open a trained network: what its first layer learned, what every layer does to a patch, and "
               "which pixels made it choose its label.")
    choice = model_sidebar()
    if choice is None:
        st.info("No model yet: train one on the Train page (or with one click on the Classify page), or upload "
                "a saved `.keras` model in the sidebar.")
        return
    if cv.is_segment(choice):   # a U-Net: whole film in, a label per pixel out; no 32x32 patch to open
        st.info(f"{choice.label} is a segmentation network (a U-Net): it labels every pixel of a whole film, "
                "not a 32×32 patch. See its map beside the prior's on the Classify page; this page opens "
                "patch models (fully connected and CNN).")
        return
    picked = patch_picker(choice)
    if picked is None:
        return
    try:
        why_panel(choice, picked)
        if ex.has_conv(choice.model):
            cnn_panel(choice, picked)
        else:
            fc_panel(choice)
    except XrayLabError as e:
        st.error(one_line(e))
    except Exception as e:  # an uploaded model can be anything: never a traceback
        st.error(f"This model cannot be opened here: {one_line(e)}")


def model_sidebar() -> cv.ModelChoice | None:
    sb = st.sidebar
    sb.header("Model")
    picker = sb.container()
    cv.model_upload(sb, "Open a saved model (.keras)", "inside_model_upload")
    choices = iv.models_for_inside()
    if not choices:
        return None
    by_key = {c.key: c for c in choices}
    if st.session_state.get("inside_model") not in by_key:
        st.session_state["inside_model"] = choices[-1].key
    key = picker.selectbox("Look inside", list(by_key), key="inside_model", format_func=lambda k: by_key[k].label)
    return by_key[key]


def patch_picker(choice: cv.ModelChoice) -> iv.Picked | None:
    pending = st.session_state.pop(iv.PENDING, None)
    if pending is not None:
        st.session_state["_inside_handed"] = pending
    handed = st.session_state.get("_inside_handed")
    sources = SOURCES + (("From the Classify page",) if handed else ())
    if handed and pending is not None:
        st.session_state["inside_source"] = sources[-1]
    sb = st.sidebar
    sb.header("Patch")
    src = sb.radio("Patch from", sources, key="inside_source")
    if src == "From the Classify page":
        return iv.Picked(handed["patch"], handed["source"])
    if src == "Upload":
        f = sb.file_uploader("A patch or an X-ray (resized to 32×32 as the model sees it)", type=cv.UPLOAD_TYPES,
                             key="inside_upload")
        if f is None:
            st.caption("Upload an image to see inside the network on it.")
            return None
        dec = cv.decode(f.name, f.getvalue())
        if dec.error:
            st.error(dec.error)
            return None
        return iv.Picked(dec.patch, f.name)
    try:
        x, y, pred = iv.test_predictions(choice)
    except Exception as e:
        st.error(f"No test patches for this model: {one_line(e)}")
        return None
    if src == "Test patch":
        i = sb.number_input(f"Test patch number (0–{len(x) - 1})", 0, len(x) - 1, 0, key="inside_index")
        i = int(i)
    else:
        c1 = c2 = c3 = sb
        t = c1.selectbox("True class", CLASSES, index=2, key="inside_true")
        p = c2.selectbox("Predicted as", CLASSES, index=3, key="inside_pred")
        idx = np.flatnonzero((y == CLASSES.index(t)) & (pred == CLASSES.index(p)))
        if t == p:
            c3.caption("Same class twice: these are patches the model got right.")
        if len(idx) == 0:
            sb.info(f"No test patch of class {t} was predicted as {p} (of the first {len(x):,}). "
                    "Try another pair.")
            return None
        j = c3.number_input(f"{len(idx)} such patches: which one", 0, len(idx) - 1, 0, key="inside_mis_index")
        i = int(idx[int(j)])
    return iv.Picked(x[i], f"test patch {i}", CLASSES[int(y[i])])


# ---- why this label ----------------------------------------------------------------------

def why_panel(choice: cv.ModelChoice, picked: iv.Picked) -> None:
    p = ex.probabilities(choice.model, picked.patch)
    pred = int(np.argmax(p))
    shown = (choice.key, ex.patch_key(picked.patch))
    if st.session_state.get("_inside_target_for") != shown:   # a new patch or model: explain its prediction
        st.session_state["_inside_target_for"] = shown
        st.session_state["inside_target"] = CLASSES[pred]
    target = st.sidebar.selectbox("Explain the class", CLASSES, key="inside_target",
                                  help="Defaults to the predicted class; pick another to see what speaks for it.")
    st.subheader(f"Why {CLASSES[pred]} ({100 * p[pred]:.0f} %)?" + (f" The true class is {picked.true}." if picked.true else ""))
    methods = ["saliency", "occlusion"] + (["gradcam"] if ex.has_conv(choice.model) else [])
    cols = st.columns(2 + len(methods))
    cols[0].plotly_chart(ci.patch(picked.patch, picked.source), width="stretch", key="inside_patch_fig")
    cols[1].plotly_chart(ci.probabilities_bar(p), width="stretch", key="inside_probs")
    cols[1].caption("The model's probabilities for this patch." + (
        "" if ex.has_conv(choice.model) else " Grad-CAM needs convolutional layers: this network is fully connected."))
    titles = {"saliency": "Integrated gradients", "occlusion": "Occlusion", "gradcam": "Grad-CAM"}
    for col, m in zip(cols[2:], methods):
        with col:
            s = ex.explain(choice.model, picked.patch, m, target=target)
            st.plotly_chart(ci.saliency(picked.patch, s, f"{titles[m]} · {target}", signed=m != "gradcam"),
                            width="stretch", key=f"inside_{m}")
            st.caption(iv.METHOD_TEXT[m])


# ---- FC ---------------------------------------------------------------------------------------

def fc_panel(choice: cv.ModelChoice) -> None:
    st.subheader("What the first layer learned")
    probe = iv.probe(choice)
    u = ex.fc_units(choice.model, probe)
    top = u.order[:N_UNITS]
    st.plotly_chart(ci.tiles(u.images[top], [f"#{k}" for k in top], 8,
                             f"{u.layer}: the weights of its {N_UNITS} most influential units, as 32×32 pictures",
                             marked=list(u.dead[top]), mark_text=u.dead_kind),
                    width="stretch", key="inside_fc_units")
    st.caption(f"Each unit of {u.layer} multiplies the patch by one weight per pixel: its weights, drawn as a "
               "picture, are the pattern it looks for (red = bright pixels excite it, blue = they inhibit it). "
               "Ordered by influence: how strongly it fires on real patches × how much the next layer listens to it. "
               f"**{100 * u.dead_share:.0f} % of the {len(u.dead)} units are {u.dead_kind}** on "
               f"{len(probe)} test patches" + (" — they output 0 for every patch, so no gradient ever reaches "
                                                "them again (the dying ReLU)." if u.dead_kind == "dead" else
                                                " — with LeakyReLU they still pass a small gradient and can recover."))
    others = [c for c in iv.models_for_inside() if c.key != choice.key and not ex.has_conv(c.model)]
    st.subheader("Compare with another run")
    if not others:
        st.caption("Train a second FC run (e.g. LeakyReLU instead of ReLU, or with batch norm) to compare "
                   "their first layers here.")
        return
    by_key = {c.key: c for c in others}
    k = st.selectbox("Compare with", list(by_key), key="inside_compare", format_func=lambda k: by_key[k].label)
    other = by_key[k]
    cmp = ex.compare_fc(choice.model, other.model, probe)
    a, b = st.columns([1, 2])
    a.plotly_chart(ci.comparison(cmp, ("this run", "other run")), width="stretch", key="inside_cmp_bars")
    a.metric("Weight-image similarity", f"{cmp['similarity_top']:.2f}",
             help="For each of this run's 20 most influential units, the |cosine| of its weight picture with the "
                  "most similar unit of the other run, averaged: 1 = the same patterns were learned.")
    uo = ex.fc_units(other.model, probe)
    otop = uo.order[:N_UNITS // 2]
    b.plotly_chart(ci.tiles(uo.images[otop], [f"#{j}" for j in otop], 6, f"{other.label}: most influential units",
                            marked=list(uo.dead[otop]), mark_text=uo.dead_kind),
                   width="stretch", key="inside_cmp_units")


# ---- CNN --------------------------------------------------------------------------------------

def cnn_panel(choice: cv.ModelChoice, picked: iv.Picked) -> None:
    st.subheader("What the first layer learned: its filters")
    f = ex.conv_filters(choice.model)
    n = min(len(f), 32)
    st.plotly_chart(ci.tiles(f[:n], [str(i) for i in range(n)], 16, f"conv1: {n} of its {len(f)} 3×3 filters",
                             height=140 + 60 * (-(-n // 16))), width="stretch", key="inside_filters")
    st.caption("Each filter slides over the patch and lights up where the 3×3 neighbourhood looks like it: "
               "red weights want bright pixels, blue want dark ones — edge and blob detectors.")

    st.subheader("Every layer's feature maps for this patch")
    fm = ex.feature_maps(choice.model, picked.patch)
    layer = st.radio("Layer", fm.names, key="inside_layer", horizontal=True)
    i = fm.names.index(layer)
    maps = fm.maps[i]
    k = min(maps.shape[-1], N_MAPS)
    strongest = np.argsort(-maps.mean(axis=(0, 1)))[:k]
    st.plotly_chart(ci.tiles(np.transpose(maps[:, :, strongest], (2, 0, 1)), [f"ch {c}" for c in strongest], 8,
                             f"{layer}: the {k} most active of {maps.shape[-1]} channels "
                             f"({maps.shape[0]}×{maps.shape[1]})", signed=False),
                    width="stretch", key="inside_fmaps")
    st.plotly_chart(ci.histograms(fm.names, fm.hist, fm.zero_share), width="stretch", key="inside_hist")
    st.caption("Deeper layers see more of the patch through pooling but at lower resolution; the histograms show "
               "how many activations the ReLU switched off (≤ 0) in each layer.")

    if ex.rowwise_bn_layers(choice.model):
        st.subheader("The seed CNN's batch norm normalises image rows")
        x, _, _ = iv.test_predictions(choice)
        batch = np.concatenate([picked.patch[None], x[:31]])
        r = ex.batchnorm_rows(choice.model, batch, index=0)
        st.plotly_chart(ci.bn_panel(r), width="stretch", key="inside_bn")
        s = r["channel_mean_spread"]
        st.caption(f"The course's `BatchNormalization(axis=1)` on NHWC tensors takes one mean and variance per "
                   f"image **row** ({r['rows']} rows here), mixing all {r['channels']} channels: every row is pushed "
                   f"to the same average, so the up–down layout (clavicle above lung above heart) is flattened "
                   f"(right panel), while channels of different strength stay unequal (spread of channel means "
                   f"{s['rowwise']:.2f} after row-wise vs {s['channelwise']:.2f} after channel-wise). "
                   "Channel-wise batch norm (axis=-1) keeps each map's picture and puts the channels on one scale.")


main()
