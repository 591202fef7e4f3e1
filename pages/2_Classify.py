"""X-ray Lab — Classify page: upload X-rays (PNG, JPEG, TIFF, BMP, GIF, DICOM), see the
exact 32×32 input the model gets, its class probabilities, and an anatomy map of whole
films. A thin view: the logic lives in xray_ui.classify_view and xray_core.maps.inference.
"""
from __future__ import annotations

import logging
import math

import xray_ui

xray_ui.install()   # first: Streamlit's patches, version-checked, and the server's shutdown (xray_ui/__init__.py)

import streamlit as st

from xray_core import CLASSES
from xray_core.config import MAP_KNOBS, map_default
from xray_core.errors import XrayLabError, log_once, one_line
from xray_core.maps.inference import evaluate_map, overlay, predict_patches
from xray_core.train.estimate import dataset_sizes, page_estimate
from xray_ui import charts
from xray_ui import classify_view as cv
from xray_ui import films_view as fv
from xray_ui.inside_view import film_point_panel
from xray_ui.nav import page_links
from xray_ui.progress import job_status
from xray_ui.session import runs, shared_dataset
from xray_ui.texts import plain

from xray_ui.icon import ICON  # noqa: E402  (the favicon ships with the app: no request leaves the server)
st.set_page_config(page_title="X-ray Lab · Classify", page_icon=ICON, layout="wide")
REFRESH_S = 0.5
_log = logging.getLogger("xray_ui.pages.classify")


def main() -> None:
    page_links()
    st.title("X-ray Lab · Classify")
    st.caption("Upload chest X-rays — PNG, JPEG, TIFF, BMP, GIF or DICOM — and see what a trained network "
               "makes of them: a 32×32 patch gets one label, a whole film gets an anatomy map.")
    choice = model_sidebar()
    stride, opacity = map_sidebar()
    context = context_sidebar(choice)

    if choice is None:
        no_model_panel()

    with st.expander("What the model sees, and what the anatomy map is", expanded=choice is None):
        st.markdown(cv.MODEL_SEES)
        st.markdown(cv.MAP_EXPLAINER)

    files = st.file_uploader("X-ray images (one or many)", type=cv.UPLOAD_TYPES, accept_multiple_files=True,
                             key="uploads",
                             help="Patches (32×32 like the training data) or whole films. DICOM: MONOCHROME1/2, "
                                  "8–16 bit, the file's window is used. GIF: the first frame.")
    if files:
        if choice is None:
            st.info("Files are classified as soon as there is a model (see above).")
            return
        from xray_core.data.uploads import max_files
        # NAME_labels.png uploaded with NAME.png is that film's label map (the jsrt_films layout),
        # not an X-ray: it scores the film's maps instead of being classified
        films = [f for f in files if not fv.is_labels_name(f.name)]
        truths = {f.name.lower(): f for f in files if fv.is_labels_name(f.name)}
        if len(films) > max_files():  # bounded like training: one request, at most N films
            st.warning(f"Only the first {max_files()} of {len(films)} files are classified.")
        paired = set()
        for i, f in enumerate(films[:max_files()]):
            t = truths.get(fv.labels_name(f.name).lower())
            if t is not None:
                paired.add(t.name.lower())
            file_result(i, f, choice, stride, opacity, context, t)
        for name, t in truths.items():
            if name not in paired:
                stem = t.name[:-len("_labels.png")] if t.name.lower().endswith("_labels.png") else t.name
                st.error(plain(f"{t.name}: a label map without its film: upload {stem}.png with it"))
    elif choice is not None:
        demo_panel(choice, stride, opacity, context)


# ---- sidebar ---------------------------------------------------------------------------

def model_sidebar() -> cv.ModelChoice | None:
    sb = st.sidebar
    sb.header("Model")
    picker = sb.container()   # filled below, once an uploaded model has been loaded
    cv.model_upload(sb, "Use a saved model (.keras)", "model_upload",
                    help="A model downloaded from the Train page, or saved by `python -m xray_core train --out DIR`.")
    choices = cv.session_models()
    if not choices:
        picker.caption("No model yet: train one here (one click) or on the Train page, or upload a .keras file.")
        return None
    keys = [c.key for c in choices]
    seen = st.session_state.get("_cls_seen_models", [])
    fresh = [k for k in keys if k not in seen]
    if fresh or st.session_state.get("model_pick") not in keys:
        st.session_state["model_pick"] = fresh[-1] if fresh else keys[-1]  # newest model by default
    st.session_state["_cls_seen_models"] = keys
    by_key = {c.key: c for c in choices}
    pick = picker.selectbox("Classify with", keys, key="model_pick", format_func=lambda k: by_key[k].label)
    return by_key[pick]


def map_sidebar() -> tuple[int, float]:
    sb = st.sidebar
    sb.header("Anatomy map")
    k = MAP_KNOBS["stride"]   # the map knobs' table (xray_core.config): same range as `classify --stride`
    stride = sb.slider(k.label, int(k.min), int(k.max), map_default("stride"), step=int(k.step), key="stride",
                       help=k.help)
    opacity = sb.slider("Map opacity", 0.0, 1.0, 0.45, 0.05, key="opacity",
                        help="Only re-blends the colours: the map itself is not recomputed.")
    return int(stride), float(opacity)


def context_sidebar(choice: cv.ModelChoice | None) -> dict:
    """Where the prior comes from (the phantom's training films, or a films folder on the
    server) and, for a patch model, "use position": its map combined with the prior."""
    sb = st.sidebar
    sb.header("Position")
    names = [fv.PHANTOM]
    try:
        names += fv.films_datasets()
    except XrayLabError as e:   # the data roots cannot be listed: the phantom's films still work
        log_once(_log, "Classify: films datasets not listed", e)
    # a newly chosen model starts with the prior of its own training data (a films folder), a
    # prior the student picked stays while the model does
    model_key = choice.key if choice is not None else None
    if st.session_state.get("_prior_model") != model_key or st.session_state.get("prior_from") not in names:
        st.session_state["_prior_model"] = model_key
        st.session_state["prior_from"] = fv.prior_default(getattr(choice, "data", None), names)
    prior_from = sb.selectbox("Prior from the training films of", names, key="prior_from",
                              format_func=lambda n: "the built-in phantom" if n == fv.PHANTOM else n,
                              help=cv.PRIOR_HELP)
    segment = False
    if choice is not None:
        try:
            segment = cv.is_segment(choice)
        except Exception as e:   # a model that cannot even be read: the map says why
            log_once(_log, "Classify: model kind not known", e)
    use_pos = sb.checkbox("Use position (model × prior)", key="use_position", disabled=segment,
                          help=cv.POSITION_HELP)
    if segment:
        sb.caption("A segmentation model sees the whole film: where each pixel is, is already in its map "
                   "(and it labels every pixel in one pass: the stride does not apply).")
    return {"prior_from": prior_from, "use_position": bool(use_pos) and not segment, "segment": segment}


# ---- no model yet: the one-click quick train ------------------------------------------

def no_model_panel() -> None:
    run = cv.pending_run()
    if run is not None:
        training_panel(run)
        return
    cfg = cv.quick_config()
    with st.container(border=True):
        st.subheader("No model yet")
        st.markdown(f"Train the course's **Task 5 network** (fully connected, LeakyReLU, batch normalisation) for "
                    f"{cfg.epochs} epochs on the built-in chest phantom, right here. It also appears on the "
                    "Train page. Or upload a saved `.keras` model in the sidebar.")
        last = next(reversed(runs().runs), None)
        if last is not None and last.job.snapshot().state == "failed":
            st.error(f"The last training failed: {last.job.snapshot().error}")
        if st.button("Train a quick model", key="quick_train", type="primary"):
            try:
                cv.start_quick_train()
            except Exception as e:  # e.g. the phantom cannot be built on this server
                st.error(f"Could not start training: {one_line(e)}")
            else:
                st.rerun()
        try:
            ds = shared_dataset("phantom")
            n = len(ds.split("train"))
            est = 5 * max(1, math.ceil(page_estimate(cfg, *dataset_sizes(ds))["total"] / 5))
            st.caption(f"About {est} s on {n:,} phantom patches when the server is idle; longer while others train.")
        except Exception as e:   # only a caption (the button says what fails): the log says why, once
            log_once(_log, "Classify: no time estimate for the quick model", e)


def training_panel(run) -> None:
    active = not run.job.snapshot().finished

    @st.fragment(run_every=REFRESH_S if active else None)
    def panel() -> None:
        snap = run.job.snapshot()
        with st.container(border=True):
            st.subheader(f"Training {run.label}")
            job_status(snap, run.label)
            st.caption("The model becomes available here as soon as it finishes.")
        if snap.finished and not run.announced:
            run.announced = True
            st.rerun()  # once: show the model picker and stop polling

    panel()


# ---- one uploaded file ------------------------------------------------------------------

def file_result(i: int, f, choice: cv.ModelChoice, stride: int, opacity: float, context: dict,
                truth_file=None) -> None:
    dec = cv.decode(f.name, f.getvalue())
    if dec.error:
        st.error(dec.error)
        return
    with st.container(border=True):
        h, w = dec.shape
        kind = "whole radiograph" if dec.is_film else "patch"
        st.markdown(f"#### {f.name}")
        key = f"{i}_{dec.key}"
        if context["segment"]:   # no 32x32 input: the map below is the model's whole answer
            if not dec.is_film:
                st.error(plain(f"{f.name}: a {w}×{h} patch, but this segmentation model maps whole films "
                               "(e.g. 256×256); use a patch model for patches"))
                return
            st.image(dec.thumb, caption=f"Original · {w}×{h} px · {kind}",
                     width="content" if dec.thumb.shape[1] < 360 else "stretch")
        else:
            try:
                probs = cv.probabilities(choice, dec)
            except Exception as e:
                st.error(f"{f.name}: the model could not classify it ({one_line(e)})")
                return
            show_prediction(key, dec, probs, f"{w}×{h} px · {kind}")
        if dec.is_film:
            truth = film_truth(key, f.name, dec.shape, truth_file)
            show_map(key, dec.key, dec.film, choice, stride, opacity, truth=truth, context=context)


def film_truth(key: str, name: str, shape: tuple[int, int], paired=None):
    """The film's label map: uploaded beside it (NAME_labels.png) or here, optional. A bad one
    (not an image, values outside 0..3, another size) is one line and the maps still show."""
    up = paired or st.file_uploader(f"Its label map ({fv.labels_name(name)}, optional): scores every map",
                                    type=["png", "tif", "tiff", "bmp", "gif"], key=f"truth_{key}",
                                    help=cv.TRUTH_HELP)
    if up is None:
        return None
    try:
        return fv.read_truth(up.name, up.getvalue(), shape)
    except Exception as e:   # never a traceback for a student's file
        st.error(plain(fv.error_line(e, up.name)))   # names the student's file: never Markdown
        return None


def show_prediction(key: str, dec: cv.Decoded, probs: dict, info: str) -> None:
    a, b, c = st.columns([2, 1, 2], gap="medium")
    a.image(dec.thumb, caption=f"Original · {info}", width="content" if dec.thumb.shape[1] < 360 else "stretch")
    b.image(cv.model_input_picture(dec.patch), caption="What the model sees: 32×32 (shown 4×)",
            width=128)
    label = max(probs, key=probs.get)
    with c:
        st.plotly_chart(charts.probabilities(probs), width="stretch", key=f"probs_{key}")
        st.markdown(f"Predicted: **{label}** ({100 * probs[label]:.0f} %)")
        if dec.is_film:
            st.caption("This is the whole film squeezed into one 32×32 input — not what the model was trained "
                       "on, so this single label means little. The anatomy map below asks the model about every "
                       "32×32 patch of the film instead.")


def show_map(key: str, image_key: str, film, choice: cv.ModelChoice, stride: int, opacity: float,
             truth=None, context: dict | None = None) -> None:
    n = cv.patch_count(film.shape, stride)
    segment = bool(context and context["segment"])
    try:
        with st.spinner("Mapping the film in one pass…" if segment else f"Mapping: classifying {n:,} patches…"):
            amap, cached = cv.film_map(choice, image_key, film, stride)
    except XrayLabError as e:
        st.error(one_line(e))
        return
    except Exception as e:
        st.error(f"The anatomy map failed: {one_line(e)}")
        return
    left, right = st.columns([3, 2], gap="medium")
    with left:
        if truth is None:
            st.image(cv.blend(amap, opacity), width=cv.MAP_PX,
                     caption=f"Anatomy map at stride {amap.stride} over the film as the model saw it "
                             f"({amap.film.shape[1]}×{amap.film.shape[0]} px)")
        else:
            p, t = st.columns(2)
            p.image(cv.blend(amap, opacity), width="stretch", caption="Predicted anatomy map")
            t.image(overlay(amap.film, truth, opacity=opacity), width="stretch", caption="True label map")
    with right:
        st.markdown(cv.legend_html(), unsafe_allow_html=True)
        st.plotly_chart(charts.class_shares(amap.shares), width="stretch", key=f"shares_{key}")
        gh, gw = amap.grid_shape
        kept = " (kept from before: moving the opacity does not recompute the map)" if cached else ""
        if amap.method == "segment":
            st.caption(f"Every pixel labelled in one pass in {amap.seconds:.2f} s{kept}")
        else:
            st.caption(f"{gh * gw:,} patches ({gw}×{gh}) classified in {amap.seconds:.2f} s{kept}")
        st.caption(cv.method_note(amap), help="How the map was computed: README, 'Dense anatomy maps'.")
        if truth is not None:
            ev = evaluate_map(amap.labels, truth)
            m1, m2 = st.columns(2)
            m1.metric("Pixel accuracy", f"{100 * ev['pixel_accuracy']:.1f} %")
            m2.metric("Mean Dice", f"{ev['mean_dice']:.2f}" if ev["mean_dice"] is not None else "–")
            st.caption("Dice per class (1 = perfect overlap with the true map): "
                       + " · ".join(f"{c} {ev['dice'][c]:.2f}" for c in CLASSES if c in ev["dice"]))
    if context is not None:
        context_panel(key, amap, truth, context, opacity)
    if amap.method != "segment":   # the "why" of one 32x32 patch: a patch model's question
        film_point_panel(key, amap, choice, opacity)   # "why?" for a clicked point of the film (xray_ui/inside_view.py)


def context_panel(key: str, amap, truth, context: dict, opacity: float) -> None:
    """The prior map beside the model's (and, for a patch model, the model with position), and
    with a label map: each map's pixel accuracy and Dice per class. What context adds."""
    try:
        prior = fv.shared_prior(fv.prior_source(context["prior_from"]))
    except Exception as e:   # a films folder that cannot be read: one line, the model's map stays
        st.error(plain(fv.error_line(e, "The prior could not be built")))
        return
    shape = amap.labels.shape
    prior_film = prior.labels(amap.film.shape)
    pos_film = None
    if context["use_position"]:
        pos_film = fv.position_labels(amap, prior, amap.film.shape)
    src = "the built-in phantom" if context["prior_from"] == fv.PHANTOM else context["prior_from"]
    st.markdown(f"**Position alone, and position added** · prior from {prior.n_maps} training films of {src}")
    cols = st.columns(2)
    cols[0].image(overlay(amap.film, prior_film, opacity=opacity), width="stretch",
                  caption="Prior map: each pixel's most frequent label over the training films (the image ignored)")
    if pos_film is not None:
        cols[1].image(overlay(amap.film, pos_film, opacity=opacity), width="stretch",
                      caption="Model + position: the model's probabilities × the prior ÷ class share (Bayes)")
    elif not context["segment"]:
        cols[1].caption("Tick **Use position** in the sidebar to combine this model's map with the prior.")
    if truth is None:
        st.caption("Upload the film's label map (NAME_labels.png) to score every map against it.")
        return
    maps = [("model", amap.labels), ("prior (image ignored)", fv.to_size(prior_film, shape))]
    if pos_film is not None:
        maps.append(("model + position", fv.to_size(pos_film, shape)))
    st.dataframe(fv.score_rows(maps, truth), hide_index=True, width="stretch", key=f"scores_{key}")
    st.caption("Pixel accuracy: the share of pixels labelled right. Dice: the overlap of a class's "
               "predicted and true pixels (1 = perfect); – where the class is in neither map.")


# ---- demos: nothing to upload ------------------------------------------------------------

def demo_panel(choice: cv.ModelChoice, stride: int, opacity: float, context: dict) -> None:
    st.markdown("**Nothing to upload?** Try the model on data it has never seen:")
    c1, c2, _ = st.columns([1, 1, 2])
    if not context["segment"] and c1.button("Classify 12 test patches", key="demo_patches", width="stretch"):
        st.session_state["_cls_demo"] = {"kind": "patches", "seed": cv.new_seed()}
    if c2.button("Map a test radiograph", key="demo_film", width="stretch"):
        st.session_state["_cls_demo"] = {"kind": "film", "index": cv.new_seed() % cv.DEMO_FILMS}
    demo = st.session_state.get("_cls_demo")
    if not demo:
        return
    if demo["kind"] == "patches" and not context["segment"]:
        demo_patches(choice, demo["seed"])
    elif demo["kind"] == "film":
        demo_film(choice, demo["index"], stride, opacity, context)


def demo_patches(choice: cv.ModelChoice, seed: int) -> None:
    try:
        ds = cv.demo_dataset(choice)
        test = ds.split("test")
        idx = cv.pick_patches(len(test), seed)
        probs = predict_patches(choice.model, test.x[idx])
    except Exception as e:
        st.error(f"Could not classify test patches: {one_line(e)}")
        return
    pred = probs.argmax(1)
    right = int((pred == test.y[idx]).sum())
    st.subheader(f"{right} of {len(idx)} test patches right")
    st.caption(f"Random 32×32 patches from the test split of **{ds.name}** (never used in training), shown 3×. "
               "Each caption: true class → predicted class (probability).")
    for j, (k, p) in enumerate(zip(idx, pred)):
        if j % 6 == 0:
            cols = st.columns(6)
        true_c, pred_c = CLASSES[int(test.y[k])], CLASSES[int(p)]
        mark = "✓" if true_c == pred_c else "✗"
        cols[j % 6].image(cv.model_input_picture(test.x[k, :, :, 0], 3), width=96, output_format="PNG",
                          caption=f"{mark} {true_c} → {pred_c} ({probs[j, p]:.2f})")


def demo_film(choice: cv.ModelChoice, index: int, stride: int, opacity: float, context: dict) -> None:
    films = cv.demo_films()
    rid, film, labels = films[index % len(films)]
    st.subheader(f"Phantom test film {rid}")
    how = ("the segmentation network, in one pass over the whole film," if context["segment"]
           else "the patch classifier, slid over the whole film,")
    st.caption("A synthetic chest film from the built-in phantom's test split, with its true label map: the map's "
               f"pixel accuracy and Dice say how well {how} finds the anatomy.")
    show_map("demo", f"phantom:{rid}", film, choice, stride, opacity, truth=labels, context=context)


main()
