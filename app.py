"""X-ray Lab — Train page. `streamlit run app.py`.

A thin view: the sidebar builds a RunConfig (xray_ui.controls), Train starts an
xray_core TrainingJob in a background thread and records it in the run store under the
link's workspace (xray_ui.session), and a fragment polls its snapshot twice a second to
redraw the live charts (see ../shared/notes/live-training.md). Runs of earlier visits,
of a restarted server or of another replica are drawn from their stored records
(xray_ui.run_views).
"""
from __future__ import annotations

import xray_ui

xray_ui.install()   # first: Streamlit's patches, version-checked, and the server's shutdown (xray_ui/__init__.py)

import json

import numpy as np
import pandas as pd
import streamlit as st

from xray_core import CLASSES
from xray_core.config import COLUMN_KNOBS, KNOBS, column_cells
from xray_core.errors import XrayLabError, one_line
from xray_core.train.estimate import page_estimate  # measured on this machine (rough until measured)
from xray_core.models import layer_table
from xray_core.presets import PRESETS, matching_preset
from xray_core.runs.report import csv_cell   # a label "=HYPERLINK(…)" stays text in a spreadsheet
from xray_ui import charts
from xray_ui.classify_view import patch_png
from xray_ui.films_view import is_films, run_dataset
from xray_ui.exports import browser_record
from xray_ui.nav import page_links
from xray_ui.progress import fmt_time, job_status
from xray_ui.controls import config_from_state, mirror_to_url, sidebar
from xray_ui.run_views import RunView, workspace_views
from xray_ui.session import (model_file_bytes, prepare_model, start_job, store as session_store,
                             warm_workers, workspace, workspace_notice)
from xray_ui.session import account_bound, stop_run   # ■ Stop here or on another server (the store's stop flag)
from xray_ui import lecture   # the teacher's banners, the class experiment, the projector view (issue 25)
from xray_ui.texts import BN_AXIS_EXPLAINER, plain

from xray_ui.icon import ICON  # noqa: E402  (the favicon ships with the app: no request leaves the server)
st.set_page_config(page_title="X-ray Lab · Train", page_icon=ICON, layout="wide")
REFRESH_S = 0.5
QUEUED_REFRESH_S = 2.0  # a queued run: only its queue position moves
STARTING_REFRESH_S = 0.2  # a run before its first batch: the first point shows sooner after the click
STORE_REFRESH_S = 1.0  # a run on another server: its row is rewritten each epoch and every few s


def main() -> None:
    page_links()
    if lecture.presenting():   # ?view=present: the projector's view of the class, no sidebar
        lecture.present_view()
        return
    st.title("X-ray Lab · Train")
    st.caption("Teach a network to tell background, clavicle, lung and heart apart on 32×32 chest X-ray patches, "
               "or (Part 3, a U-Net) to label every pixel of a whole film.")
    if problem := warm_workers():  # idle training processes, so the first Train starts quickly
        st.warning(problem, icon=":material/cloud_off:")
    ws = workspace()
    workspace_notice()
    cfg, cfg_error = sidebar()
    lecture.train_panels(cfg)   # "Try this" from the teacher, "Join the class experiment"
    if msg := st.session_state.pop("_link_error", None):
        st.warning(plain(msg))  # a link's text: never Markdown
    store = session_store()
    views = workspace_views(store, ws)
    current = current_view(views)
    left, right = st.columns([3, 2], gap="large")

    with right:
        model_panel(cfg)
    with left:
        dataset = None
        if cfg_error:
            st.info(plain(cfg_error))
        else:
            mirror_to_url(cfg)
            try:   # films for a segmentation run, patches otherwise: the other kind is one line
                dataset = run_dataset(cfg.data, cfg.arch)
            except XrayLabError as e:
                st.error(plain(e))   # may name files from an uploaded zip
            except Exception as e:  # never a traceback on the page
                st.error(plain(f"Could not load the data: {one_line(e)}"))
        if dataset is not None:
            data_panel(dataset, cfg)
            if (current is None or not current.active) and cfg.arch != "segment":
                # a Train with this config starts without tracing (a U-Net run builds its own
                # model: a pre-traced one would cost an idle worker CPU for nothing)
                prepare_model(cfg, dataset)
        controls_row(cfg, dataset, current)
        if current is not None:
            live_panel(current, views)
            if not current.active:
                results_panel(current)
    runs_panel(views, current)


# ---- panels ------------------------------------------------------------------------

def data_panel(dataset, cfg) -> None:
    if is_films(dataset):
        films_panel(dataset)
        return
    summ = dataset.summary()
    sizes = " · ".join(f"{k} {v['n']:,}" for k, v in summ.items())
    with st.expander(f"Data: {dataset.name} — {sizes} patches", expanded=False):
        key = ("balance", repr(sorted((k, v["n"], tuple(v["per_class"].values())) for k, v in summ.items())))
        st.plotly_chart(charts.FIGURES.get(key, lambda: charts.class_balance(summ)), width="stretch",
                        key="balance_chart")
        for w in dataset.warnings:
            st.warning(plain(w))   # dataset warnings name the student's files


def films_panel(dataset) -> None:
    """A films dataset (segmentation runs): films per split and each class's share of the pixels."""
    summ = dataset.summary()
    sizes = " · ".join(f"{k} {v['films']:,}" for k, v in summ.items())
    with st.expander(f"Data: {dataset.name} — {sizes} films with label maps", expanded=False):
        key = ("film_balance", dataset.name, repr(sorted((k, v["films"]) for k, v in summ.items())))
        st.plotly_chart(charts.FIGURES.get(key, lambda: charts.film_balance(summ)), width="stretch",
                        key="balance_chart")
        for w in dataset.warnings:
            st.warning(plain(w))   # dataset warnings name the student's files


def controls_row(cfg, dataset, current) -> None:
    busy = current is not None and current.active
    c1, c2, c3 = st.columns([1, 1, 3])
    can_train = cfg is not None and dataset is not None and dataset.has("train")
    train = c1.button("▶ Train", key="train", type="primary", disabled=busy or not can_train, width="stretch")
    can_stop = busy   # a run on another server too: its stop flag in the store reaches it
    stop = c2.button("■ Stop", key="stop", disabled=not can_stop, width="stretch")
    if busy and not current.live_here:
        c3.caption("This run trains on another server of this class: ■ Stop reaches it there within a "
                   "second or two.")
    elif cfg is not None and dataset is not None and dataset.has("train"):
        n = len(dataset.split("train"))
        n_val = len(dataset.splits["validation"]) if dataset.has("validation") else 0
        est = page_estimate(cfg, n, n_val, len(dataset.splits["test"]) if dataset.has("test") else 0)["total"]
        used = min(n, cfg.limit_train or n)
        tip = " Tip: use fewer patches (sidebar) for a quick CNN try." if est > 120 and cfg.arch == "cnn" else ""
        unit = "films" if is_films(dataset) else "patches"
        c3.caption(f"Estimated time on this server: **~{fmt_time(est)}** for {cfg.epochs} epochs on "
                   f"{used:,} {unit}, if it trains alone.{tip}")
    elif dataset is not None and not dataset.has("train"):
        c3.warning("This dataset has no training split: it can only be used to evaluate (Classify page).")
    if stop and can_stop:
        stop_run(current.id)  # this workspace's own run only, here or on another server
        st.toast("Stopping after the current batch…")
    if train and can_train:
        preset = matching_preset(cfg)
        group = lecture.turn_for(cfg)   # a class experiment's turn: recorded in its group
        try:
            start_job(cfg, dataset, preset.name if preset else None, group_id=group)
        except XrayLabError as e:
            st.error(plain(e))
            return
        lecture.took_turn(group)
        st.rerun()


def current_view(views: list[RunView]) -> RunView | None:
    """The run the live and results panels show: the last one picked in the runs table,
    the one just started, or (a new tab) the workspace's newest. An F5 may resume the
    browser's Streamlit session (server.disconnectedSessionTTL), which keeps its pick."""
    if not views:
        return None
    by_id = {v.id: v for v in views}
    picked = _picked_ids(views)
    if picked != st.session_state.get("_prev_pick"):
        st.session_state["_prev_pick"] = picked
        if picked:
            st.session_state["current_run"] = picked[-1]
    return by_id.get(st.session_state.get("current_run")) or views[-1]


def _picked_ids(views: list[RunView]) -> list[str]:
    state = st.session_state.get("runs_table")
    try:
        rows = state["selection"]["rows"]
    except (KeyError, TypeError):
        rows = []
    return [views[i].id for i in rows if isinstance(i, int) and 0 <= i < len(views)]


def live_panel(view: RunView, views: list[RunView]) -> None:
    # Poll while the run trains, and (a job of this process) until its end and model are
    # written to the store; the store-only view of another server's run polls its row.
    # A queued run polls slowly (its queue position is all that moves) and reruns the page
    # once when it starts, to poll at the training rate.
    # A run not yet at its first batch polls fast, then reruns the page once to slow down.
    polling = view.active or view.rec.state in ("queued", "training")
    now = view.snapshot() if view.live_here else None
    queued = now is not None and now.state == "queued"
    starting = now is not None and now.state in ("loading", "training") and not now.batch_loss
    every = None
    if polling:
        every = ((QUEUED_REFRESH_S if queued else STARTING_REFRESH_S if starting else REFRESH_S)
                 if view.live_here else STORE_REFRESH_S)
    overlays = _overlays(views, view)

    @st.fragment(run_every=every)
    def live() -> None:
        v = view.refresh(session_store()) if polling and not view.live_here else view
        snap = v.snapshot()
        status_line(v, snap)
        headline(v, snap)
        if queued and snap.state != "queued" and not st.session_state.get("_started_" + v.id):
            st.session_state["_started_" + v.id] = True
            st.rerun()  # once: poll at the training rate from now on
        # Figures are shared by every watcher of the run and rebuilt only when its data moved
        # (charts.FIGURES); a refresh with nothing new resends the same small figure.
        segment = v.rec.config.get("arch") == "segment"
        if snap.batch_loss or snap.history.get("loss"):
            fig = charts.live_curves(snap, overlays, accuracy="pixel accuracy" if segment else "accuracy")
        else:
            fig = charts.FIGURES.get(("waiting", snap.state), lambda: charts.waiting(waiting_text(snap)))
        st.plotly_chart(fig, width="stretch", key="live_curves")
        if segment:
            segment_live(v, snap)
        if snap.unit_stats:
            units = charts.FIGURES.get(("units", snap.job_id, len(snap.unit_stats), snap.state),
                                       lambda: charts.unit_monitor(snap.unit_stats))
            st.plotly_chart(units, width="stretch", key="live_units")
            st.caption("Dead-unit monitor: ReLU units that output 0 for every patch of a fixed probe batch get no "
                       "gradient and may never recover (dying ReLU). LeakyReLU/ELU units only go negative; "
                       "sigmoid/tanh units can saturate, where their gradient vanishes.")
        if not polling:
            return
        if starting and snap.batch_loss:
            # one refresh after the first point was drawn, rerun the page once to poll at the
            # training rate (rerunning in that same refresh redrew the page while the browser drew the point)
            seen = st.session_state.setdefault("_first_" + v.id, 0)
            st.session_state["_first_" + v.id] = seen + 1
            if seen == 1:
                st.rerun()
        announced = st.session_state.setdefault("_announced", set())
        if not v.active and v.id not in announced:
            announced.add(v.id)
            st.rerun()  # once: show the results
        if v.rec.state not in ("queued", "training") and ("stored", v.id) not in announced:
            announced.add(("stored", v.id))
            st.rerun()  # once more when the store has the end (and the model): stop polling

    live()


def segment_live(v: RunView, snap) -> None:
    """A segmentation run, live: Dice per class per epoch, and one validation film's predicted map
    as it was at the last epoch's end (the trainer sends it with the epoch's scores: no extra pass)."""
    if charts.has_dice(snap.history):
        st.plotly_chart(charts.live_dice(snap), width="stretch", key="live_dice")
    job = v.job
    preview = snap.preview or (job.snapshot().preview if job is not None else None)
    ds = job.dataset if job is not None else None
    if not preview or ds is None or not ds.has("validation"):
        if v.live_here:
            st.caption("The predicted map of a validation film appears here at the end of each epoch.")
        return
    val = ds.split("validation")
    i = int(preview["index"])
    if i >= len(val) or str(val.names[i]) != preview["film"]:
        return   # not the films this run validated on (cannot happen for a job of this process)
    pngs = charts.FIGURES.get(("preview", snap.job_id, preview["epoch"]),
                              lambda: preview_pngs(val.x[i, :, :, 0], val.y[i], preview))
    a, b = st.columns(2)
    a.image(pngs[0], output_format="PNG", width="stretch",
            caption=f"Validation film {preview['film']}: the predicted map after epoch {preview['epoch']}")
    b.image(pngs[1], output_format="PNG", width="stretch", caption="Its true label map")


def preview_pngs(film, truth, preview) -> list[bytes]:
    """The predicted and the true map over the film, as PNG bytes made once per epoch (shared)."""
    import io

    from PIL import Image

    from xray_core.maps.inference import overlay
    from xray_core.train.job import preview_labels
    out = []
    for labels in (preview_labels(preview), truth):
        buf = io.BytesIO()
        Image.fromarray(overlay(film, labels, opacity=0.5)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def waiting_text(snap) -> str:
    if snap.state == "queued":
        return f"Waiting for a free trainer (position {snap.queue_position or '…'}): the curves start here."
    if snap.state in ("failed", "stopped", "interrupted"):
        return "No batch was trained."
    return "Starting: building the model and its first training step… the first point appears here."


def headline(v: RunView, snap) -> None:
    """When a run has ended: its headline figures where the eye already is (next to the
    status line), with a pointer to the full results below."""
    if not snap.finished and snap.state != "interrupted":
        return
    res = snap.result or {}
    test = res.get("test")
    if not test:
        return
    if "dice" in test:   # a segmentation run: its accuracy is the share of the test films' pixels right
        parts = [f"**Test pixel accuracy {100 * test['accuracy']:.1f} %**", f"test loss {test['loss']:.3f}"]
        prior = test.get("prior") or {}
        if prior.get("pixel_accuracy") is not None:
            parts.append(f"the prior {100 * prior['pixel_accuracy']:.1f} %")
    else:
        parts = [f"**Test accuracy {100 * test['accuracy']:.1f} %**", f"test loss {test['loss']:.3f}"]
    if res.get("train_accuracy") is not None:
        parts.append(f"train accuracy {100 * res['train_accuracy']:.1f} %")
    st.markdown(" · ".join(parts) + " — [full results below ↓](#results)")


def status_line(v: RunView, snap) -> None:
    if v.live_here or (v.job is not None and v.rec.state in ("queued", "training")):
        job_status(snap, v.label)
        return
    r = v.rec
    if r.state == "queued":
        st.info(f"{v.label} is waiting for a free trainer on another server.")
    elif r.state == "training":
        val = r.history.get("val_accuracy") or []
        val_txt = f" · val acc {100 * val[-1]:.1f} %" if val and val[-1] is not None else ""
        st.progress(min(1.0, r.epochs_done / max(r.epochs, 1)),
                    text=f"Training · {v.label} · {r.epochs_done}/{r.epochs} epochs done{val_txt} · "
                         "on another server (updated every few seconds)")
    elif r.state == "interrupted":
        st.warning(f"{v.label} was **interrupted at epoch {r.epochs_done}** of {r.epochs}: the server stopped. "
                   f"The {r.epochs_done} finished epochs are kept below; train again to finish it.")
    elif r.state == "failed":
        st.error(plain(f"Training failed: {r.error}"))
    else:
        st.progress(1.0, text=f"{'Done' if r.state == 'finished' else 'Stopped'} · {v.label} · "
                              f"{r.epochs_done}/{r.epochs} epochs · {fmt_time(snap.elapsed)}")


def _overlays(views: list[RunView], current: RunView) -> list:
    chosen = set(_picked_ids(views))
    return [(v.label, v.snapshot().history) for v in views if v.id in chosen and v.id != current.id]


def results_panel(view: RunView) -> None:
    snap = view.snapshot()
    res = snap.result or {}
    test = res.get("test")
    if not test:
        if view.state == "stopped" and not res:
            st.info("Stopped before training started.")
        return
    stopped = view.state == "stopped"
    st.subheader(f"Results · {view.label}" + (" (stopped early)" if stopped else ""), anchor="results")
    reported = PRESETS[view.preset].reported if view.preset in PRESETS else {}
    if "dice" in test:   # a segmentation run: pixels and Dice, beside the prior
        segment_results(view, test, res)
        share_panel(view)
        return
    c = st.columns(4)
    # The course's figure as a caption: st.metric's delta would draw an arrow ("an increase of").
    c[0].metric("Test accuracy", f"{100 * test['accuracy']:.1f} %")
    if "test_accuracy" in reported:
        c[0].caption(f"course: {reported['test_accuracy']} %")
    c[1].metric("Test loss", f"{test['loss']:.3f}")
    if "test_loss" in reported:
        c[1].caption(f"course: {reported['test_loss']}")
    if res.get("train_accuracy") is not None:
        c[2].metric("Train accuracy", f"{100 * res['train_accuracy']:.1f} %")
        if "train_accuracy" in reported:
            c[2].caption(f"course: {reported['train_accuracy']} %")
    c[3].metric("Time", fmt_time((res.get("timing") or {}).get("fit_seconds")))
    if reported:
        st.caption("The course's figures were measured on its own X-ray patches; the built-in phantom is "
                   "synthetic, so expect the same trends rather than the same numbers.")
    # One under the other, each the panel's full width: side by side, a 4x4 matrix with
    # counts and percentages and horizontal labels does not fit on a laptop or projector.
    conf = charts.FIGURES.get(("confusion", view.id, view.state), lambda: charts.confusion(test["confusion"]))
    event = st.plotly_chart(conf, width="stretch", key="confusion_chart",
                            on_select="rerun", selection_mode="points")
    _select_cell_from_chart(event)
    pr = charts.FIGURES.get(("pr", view.id, view.state),
                            lambda: charts.precision_recall(test["precision"], test["recall"]))
    st.plotly_chart(pr, width="stretch", key="pr_chart")
    share_panel(view)
    misclassified_viewer(view)
    cfg = view.rec.config
    if cfg.get("arch") == "cnn" and cfg.get("cnn_mode") == "seed":
        st.info("This is the course CNN in **seed** mode. See the panel on the right for what "
                "`BatchNormalization(axis=1)` does, and try **corrected** mode.")


def segment_results(view: RunView, test: dict, res: dict) -> None:
    """A segmentation run's test films: pixel accuracy and Dice per class beside the prior's
    (each pixel's most frequent label over the training films: the map that ignores the image)."""
    prior = test.get("prior") or {}
    c = st.columns(4)
    c[0].metric("Test pixel accuracy", f"{100 * test['accuracy']:.1f} %")
    if prior.get("pixel_accuracy") is not None:
        c[0].caption(f"the prior: {100 * prior['pixel_accuracy']:.1f} %")
    dice = [v for v in (test.get("dice") or {}).values() if v is not None]
    c[1].metric("Mean Dice", f"{np.mean(dice):.3f}" if dice else "–")
    c[2].metric("Test loss", f"{test['loss']:.3f}")
    c[3].metric("Time", fmt_time((res.get("timing") or {}).get("fit_seconds")))
    if test.get("map_ms_per_film") is not None:
        st.caption(f"{test.get('films', test.get('n'))} test films, each mapped in one pass in "
                   f"{test['map_ms_per_film']:.0f} ms.")
    fig = charts.FIGURES.get(("dice_prior", view.id, view.state),
                             lambda: charts.dice_vs_prior(test.get("dice") or {}, prior.get("dice")))
    st.plotly_chart(fig, width="stretch", key="dice_prior_chart")
    conf = charts.FIGURES.get(("confusion", view.id, view.state),
                              lambda: charts.confusion(test["confusion"], unit="pixels"))
    st.plotly_chart(conf, width="stretch", key="confusion_chart")
    pr = charts.FIGURES.get(("pr", view.id, view.state),
                            lambda: charts.precision_recall(test["precision"], test["recall"], unit="pixels"))
    st.plotly_chart(pr, width="stretch", key="pr_chart")
    st.caption("Map any film with this model on the Classify page: it labels every pixel in one pass, "
               "beside the prior's map.")


def share_panel(view: RunView) -> None:
    """A nickname and the "share with the class" switch (the class board shows config and
    results only, never the workspace key)."""
    if st.session_state.get("_share_for") != view.id:  # another run shown: its own values
        st.session_state["_share_for"] = view.id
        st.session_state["nickname"] = view.rec.nickname or ""
        st.session_state["share"] = bool(view.rec.shared)
    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
    c1.text_input("Nickname on the class board", key="nickname", max_chars=40, on_change=_save_share,
                  args=(view.id,), placeholder="e.g. Ada")
    c2.toggle("Share with the class", key="share", on_change=_save_share, args=(view.id,),
              help="Shows this run's settings and results (not your workspace link) on the Class board page.")


def _save_share(run_id: str) -> None:
    try:
        session_store().set_shared(run_id, bool(st.session_state.get("share")),
                                   nickname=st.session_state.get("nickname") or "")
    except XrayLabError as e:
        st.session_state["_link_error"] = str(e)


def _select_cell_from_chart(event) -> None:
    """Clicking a confusion-matrix cell picks it in the patch viewer below (once per click)."""
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", []) or []
    if not points:
        return
    cell = (points[0].get("y"), points[0].get("x"))
    if cell != st.session_state.get("_last_cell") and all(c in CLASSES for c in cell):
        st.session_state["_last_cell"] = cell
        st.session_state["mis_true"], st.session_state["mis_pred"] = cell


def misclassified_viewer(view: RunView) -> None:
    job = view.job
    if job is None or job.test_predictions is None or job.dataset is None or not job.dataset.has("test"):
        st.caption("The misclassified-patch viewer is available for runs trained since the server started.")
        return
    test = job.dataset.split("test")
    pred = job.test_predictions.argmax(1)
    c1, c2 = st.columns(2)
    st.session_state.setdefault("mis_true", "lung")
    st.session_state.setdefault("mis_pred", "heart")
    st.caption("Click a cell of the confusion matrix, or pick the pair here, to see those test patches.")
    true_c = c1.selectbox("True class", CLASSES, key="mis_true")
    pred_c = c2.selectbox("Predicted as", CLASSES, key="mis_pred")
    ti, pi = CLASSES.index(true_c), CLASSES.index(pred_c)
    idx = np.flatnonzero((test.y == ti) & (pred == pi))
    kind = "correct" if ti == pi else "misclassified"
    st.caption(f"{len(idx)} test patches are {true_c} predicted as {pred_c} ({kind}); showing up to 24.")
    if len(idx):
        # PNG bytes made once per run and cell (shared LRU): a page rerun would otherwise
        # enlarge and encode 24 images again (a third of a results page's server time).
        imgs = charts.FIGURES.get(("mis_png", job.id, ti, pi),
                                  lambda: [patch_png(test.x[i, :, :, 0]) for i in idx[:24]])
        st.image(imgs, width=96, output_format="PNG",   # as made: "auto" re-encodes a JPEG each rerun
                 caption=[f"p={job.test_predictions[i, pi]:.2f}" for i in idx[:24]])


def model_panel(cfg) -> None:
    st.subheader("The model")
    if cfg is None:
        cfg = _fallback_config()
        if cfg is None:
            return
    try:
        table = layer_table(cfg)
    except XrayLabError as e:
        st.error(plain(e))
        return
    st.metric("Parameters", f"{table['total_params']:,}",
              help="Weights the network learns. Trainable excludes batch norm's running mean and variance.")
    st.caption(f"trainable {table['trainable_params']:,} · non-trainable {table['non_trainable_params']:,}")
    st.dataframe(charts.table(("layers", cfg.resolved()), table["layers"]), hide_index=True, width="stretch",
                 height=280, key="layer_table", column_config=LAYER_COLUMNS)
    if cfg.arch == "fc" or cfg.activation != "relu":
        st.plotly_chart(charts.FIGURES.get(("activation", cfg.activation, cfg.alpha),
                                           lambda: charts.activation_function(cfg.activation, cfg.alpha)),
                        width="stretch", key="activation_chart")
    if cfg.arch == "cnn":
        with st.expander("Why the course CNN does not learn", expanded=cfg.cnn_mode == "seed"):
            st.markdown(BN_AXIS_EXPLAINER)
            seed_t = layer_table(cfg.replace(cnn_mode="seed"))
            fixed_t = layer_table(cfg.replace(cnn_mode="corrected"))
            rows = [{"layer": f"batchnorm{i}",
                     "axis=1 (rows) params": next(r["params"] for r in seed_t["layers"] if r["name"] == f"batchnorm{i}"),
                     "axis=-1 (channels) params": next(r["params"] for r in fixed_t["layers"] if r["name"] == f"batchnorm{i}")}
                    for i in range(1, 6)]
            st.dataframe(pd.DataFrame(rows), hide_index=True, key="bn_table")
            if cfg.cnn_mode == "seed":
                st.button("Switch to corrected mode", key="fix_cnn", on_click=_to_corrected)


def _to_corrected() -> None:
    from xray_core.config import RunConfig
    d = RunConfig(arch="cnn", cnn_mode="corrected").resolved()
    st.session_state.update({"cnn_mode": "corrected", "lr": d.lr, "l2": d.l2, "dropout": d.dropout,
                             "preset": "(custom)"})


def _fallback_config():
    try:
        return config_from_state("phantom")
    except XrayLabError:
        return None


def runs_panel(views: list[RunView], current: RunView | None) -> None:
    if not views:
        return
    st.divider()
    st.subheader("Runs in this workspace")
    if account_bound():   # signed in with the school's account (xray_ui/accounts.py)
        st.caption("Kept on the server with your account: sign in on any computer to come back to these runs.")
    else:
        st.caption("Kept on the server under this page's link (the `ws` key in the address bar): bookmark it to "
                   "come back to these runs; anyone with the link sees them.")
    rows = []
    for v in views:
        s = v.snapshot()
        res = s.result or {}
        t = res.get("test") or {}
        knobs = column_cells(v.rec.config)    # the knob table's runs-table columns (KNOBS: column)
        knobs[KNOBS["epochs"].column.title] = f"{s.epoch}/{s.epochs}"   # the epochs column shows progress
        rows.append({
            "run": v.number, "label": v.rec.label, "state": v.state_text(), **knobs,
            "train acc": _pct(res.get("train_accuracy")), "val acc": _pct(res.get("val_accuracy")),
            "test acc": _pct(t.get("accuracy")), "test loss": t.get("loss"),
            "time s": round((res.get("timing") or {}).get("fit_seconds") or 0.0, 1),
            "shared": v.rec.shared,
        })
    key = tuple(tuple(r.values()) for r in rows)   # the table changes only when a row does
    st.dataframe(charts.table(("runs", key), rows), hide_index=True, width="stretch", key="runs_table",
                 on_select="rerun", selection_mode="multi-row", column_config=RUN_COLUMNS)
    chosen = _picked_ids(views)
    st.caption("Select runs to show one (the last selected) above, overlay the others' validation curves, "
               "and download or delete it.")
    pick = next((v for v in views if v.id == (chosen[-1] if chosen else None)), current)
    c1, c2, c3, c4 = st.columns(4)
    c1.download_button("Runs table (CSV)", lambda: pd.DataFrame(rows).map(csv_cell).to_csv(index=False), "xray_lab_runs.csv",
                       "text/csv", key="dl_csv")   # made when clicked, not on every rerun
    if pick is None:
        return
    if not pick.active:
        c2.download_button(f"Run {pick.number} record (JSON)", lambda: json.dumps(browser_record(pick.rec), indent=2),
                           f"xray_lab_run{pick.number}.json", "application/json", key="dl_json")
        if pick.rec.model_path:
            c3.download_button(f"Run {pick.number} model (.keras)", lambda: model_file_bytes(pick.rec.model_path),
                               f"xray_lab_run{pick.number}.keras", "application/octet-stream", key="dl_model")
        elif pick.rec.state in ("queued", "training"):
            c3.caption("Saving the model…")
        c4.button(f"Delete run {pick.number}", key="delete_run", on_click=_ask_delete, args=(pick.id,))
    if st.session_state.get("_confirm_delete") == pick.id:
        with st.container(border=True):
            st.warning(f"Delete run {pick.number} ({pick.rec.label}) with its curves, results and model? "
                       "This cannot be undone.")
            d1, d2 = st.columns(2)
            d1.button("Yes, delete it", key="delete_confirm", type="primary", on_click=_delete, args=(pick.id,))
            d2.button("Cancel", key="delete_cancel", on_click=_ask_delete, args=(None,))


# Widths that fit each column's longest usual value, so nothing is cut off at 1280 px.
LAYER_COLUMNS = {   # auto widths: the four columns fit the narrow right column
    "name": st.column_config.TextColumn("layer"),
    "output_shape": st.column_config.TextColumn("output shape"),
    "params": st.column_config.NumberColumn("params", format="localized"),
}


def _knob_column(name: str):
    """A knob's runs-table column, from its row of the knob table."""
    k, c = KNOBS[name], KNOBS[name].column
    if k.kind is bool:
        return st.column_config.CheckboxColumn(c.title, width=c.width)
    if k.kind in (int, float) and name != "epochs":   # the epochs column shows progress ("3/25")
        return st.column_config.NumberColumn(c.title, format=c.format, width=c.width)
    return st.column_config.TextColumn(c.title, width=c.width)


RUN_COLUMNS = {
    "run": st.column_config.NumberColumn("run", width=40),
    "label": st.column_config.TextColumn("label", width="large"),
    "state": st.column_config.TextColumn("state", width="medium"),
    **{KNOBS[n].column.title: _knob_column(n) for n in COLUMN_KNOBS},
    "train acc": st.column_config.NumberColumn("train acc", format="%.1f %%", width=80),
    "val acc": st.column_config.NumberColumn("val acc", format="%.1f %%", width=75),
    "test acc": st.column_config.NumberColumn("test acc", format="%.1f %%", width=75),
    "test loss": st.column_config.NumberColumn("test loss", format="%.3f", width=75),
    "time s": st.column_config.NumberColumn("time s", format="%.1f", width=60),
    "shared": st.column_config.CheckboxColumn("shared", width=60),
}


def _ask_delete(run_id: str | None) -> None:
    st.session_state["_confirm_delete"] = run_id


def _delete(run_id: str) -> None:
    st.session_state["_confirm_delete"] = None
    rec = session_store().get(run_id)
    if rec is None or rec.workspace != st.session_state.get("xray_ws"):
        return  # only this workspace's runs
    if rec.state in ("queued", "training"):
        st.session_state["_link_error"] = "A run that is still training cannot be deleted: stop it first."
        return
    session_store().delete(run_id)
    if st.session_state.get("current_run") == run_id:
        st.session_state.pop("current_run", None)
    st.toast("Run deleted.")


def _pct(v) -> float | None:
    return None if v is None else round(100 * v, 1)


main()
