"""X-ray Lab — Train page. `streamlit run app.py`.

A thin view: the sidebar builds a RunConfig (xray_ui.controls), Train starts an
xray_core TrainingJob in a background thread, and a fragment polls its snapshot
twice a second to redraw the live charts (see ../shared/notes/live-training.md).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from xray_core import CLASSES
from xray_core.errors import XrayLabError, one_line
from xray_core.estimate import page_estimate  # measured on this machine (rough until measured)
from xray_core.models import layer_table
from xray_core.presets import PRESETS, matching_preset
from xray_ui import charts
from xray_ui.nav import page_links
from xray_ui.progress import fmt_time, job_status
from xray_ui.controls import config_from_state, mirror_to_url, sidebar
from xray_ui.session import model_bytes, runs, shared_dataset, start_job, warm_workers
from xray_ui.texts import BN_AXIS_EXPLAINER

st.set_page_config(page_title="X-ray Lab · Train", page_icon=":material/radiology:", layout="wide")
REFRESH_S = 0.5


def main() -> None:
    page_links()
    st.title("X-ray Lab · Train")
    st.caption("Teach a network to tell background, clavicle, lung and heart apart on 32×32 chest X-ray patches.")
    warm_workers()  # idle training processes, so the first Train starts quickly
    cfg, cfg_error = sidebar()
    if msg := st.session_state.pop("_link_error", None):
        st.warning(msg)
    session = runs()
    left, right = st.columns([3, 2], gap="large")

    with right:
        model_panel(cfg)
    with left:
        dataset = None
        if cfg_error:
            st.info(cfg_error)
        else:
            mirror_to_url(cfg)
            try:
                dataset = shared_dataset(cfg.data)
            except XrayLabError as e:
                st.error(str(e))
            except Exception as e:  # never a traceback on the page
                st.error(f"Could not load the data: {one_line(e)}")
        if dataset is not None:
            data_panel(dataset, cfg)
        controls_row(cfg, dataset, session)
        current = session.current
        if current is not None:
            live_panel(current)
            if current.job.snapshot().finished:
                results_panel(current)
    runs_panel(session)


# ---- panels ------------------------------------------------------------------------

def data_panel(dataset, cfg) -> None:
    summ = dataset.summary()
    sizes = " · ".join(f"{k} {v['n']:,}" for k, v in summ.items())
    with st.expander(f"Data: {dataset.name} — {sizes} patches", expanded=False):
        st.plotly_chart(charts.class_balance(summ), width="stretch", key="balance_chart")
        for w in dataset.warnings:
            st.warning(w)


def controls_row(cfg, dataset, session) -> None:
    current = session.current
    busy = current is not None and not current.job.snapshot().finished
    c1, c2, c3 = st.columns([1, 1, 3])
    can_train = cfg is not None and dataset is not None and dataset.has("train")
    train = c1.button("▶ Train", key="train", type="primary", disabled=busy or not can_train, width="stretch")
    stop = c2.button("■ Stop", key="stop", disabled=not busy, width="stretch")
    if cfg is not None and dataset is not None and dataset.has("train"):
        n = len(dataset.split("train"))
        n_val = len(dataset.splits["validation"]) if dataset.has("validation") else 0
        est = page_estimate(cfg, n, n_val, len(dataset.splits["test"]) if dataset.has("test") else 0)["total"]
        used = min(n, cfg.limit_train or n)
        tip = " Tip: use fewer patches (sidebar) for a quick CNN try." if est > 120 and cfg.arch == "cnn" else ""
        c3.caption(f"Estimated time on this server: **~{fmt_time(est)}** for {cfg.epochs} epochs on "
                   f"{used:,} patches, if it trains alone.{tip}")
    elif dataset is not None and not dataset.has("train"):
        c3.warning("This dataset has no training split: it can only be used to evaluate (Classify page).")
    if stop and busy:
        current.job.stop()  # this session's own job only
        st.toast("Stopping after the current batch…")
    if train and can_train:
        preset = matching_preset(cfg)
        start_job(cfg, dataset, preset.name if preset else None)
        st.rerun()


def live_panel(run) -> None:
    active = not run.job.snapshot().finished

    @st.fragment(run_every=REFRESH_S if active else None)
    def live() -> None:
        snap = run.job.snapshot()
        job_status(snap, run.label)
        st.plotly_chart(charts.curves(snap.history, snap.batch_epoch, snap.batch_loss, overlays=_overlays(run)),
                        width="stretch", key="live_curves")
        if snap.unit_stats:
            st.plotly_chart(charts.unit_monitor(snap.unit_stats), width="stretch", key="live_units")
            st.caption("Dead-unit monitor: ReLU units that output 0 for every patch of a fixed probe batch get no "
                       "gradient and may never recover (dying ReLU). LeakyReLU/ELU units only go negative; "
                       "sigmoid/tanh units can saturate, where their gradient vanishes.")
        if snap.finished and not run.announced:
            run.announced = True
            st.rerun()  # once: show the results and stop polling

    live()


def _overlays(run) -> list:
    chosen = st.session_state.get("_overlay_runs", [])
    return [(r.label, r.job.snapshot().history) for r in runs().runs if r.number in chosen and r is not run]


def results_panel(run) -> None:
    snap = run.job.snapshot()
    res = snap.result or {}
    test = res.get("test")
    if not test:
        if snap.state == "stopped" and not res:
            st.info("Stopped before training started.")
        return
    st.subheader(f"Results · {run.label}" + (" (stopped early)" if snap.state == "stopped" else ""))
    reported = PRESETS[run.preset].reported if run.preset else {}
    c = st.columns(4)
    c[0].metric("Test accuracy", f"{100 * test['accuracy']:.1f} %",
                delta=(f"course: {reported['test_accuracy']} %" if "test_accuracy" in reported else None),
                delta_color="off")
    c[1].metric("Test loss", f"{test['loss']:.3f}",
                delta=(f"course: {reported['test_loss']}" if "test_loss" in reported else None), delta_color="off")
    if res.get("train_accuracy") is not None:
        c[2].metric("Train accuracy", f"{100 * res['train_accuracy']:.1f} %",
                    delta=(f"course: {reported['train_accuracy']} %" if "train_accuracy" in reported else None),
                    delta_color="off")
    c[3].metric("Time", fmt_time(res.get("timing", {}).get("fit_seconds")))
    if reported:
        st.caption("The course's figures were measured on its own X-ray patches; the built-in phantom is "
                   "synthetic, so expect the same trends rather than the same numbers.")
    a, b = st.columns(2)
    with a:
        event = st.plotly_chart(charts.confusion(test["confusion"]), width="stretch", key="confusion_chart",
                                on_select="rerun", selection_mode="points")
        _select_cell_from_chart(event)
    with b:
        st.plotly_chart(charts.precision_recall(test["precision"], test["recall"]), width="stretch",
                        key="pr_chart")
    misclassified_viewer(run)
    if run.job.config.arch == "cnn" and run.job.config.cnn_mode == "seed":
        st.info("This is the course CNN in **seed** mode. See the panel on the right for what "
                "`BatchNormalization(axis=1)` does, and try **corrected** mode.")


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


def misclassified_viewer(run) -> None:
    job = run.job
    if job.test_predictions is None or job.dataset is None or not job.dataset.has("test"):
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
        imgs = [np.kron(test.x[i, :, :, 0], np.ones((3, 3))) for i in idx[:24]]
        st.image(imgs, width=96, clamp=True,
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
        st.error(str(e))
        return
    st.metric("Parameters", f"{table['total_params']:,}",
              help="Weights the network learns. Trainable excludes batch norm's running mean and variance.")
    st.caption(f"trainable {table['trainable_params']:,} · non-trainable {table['non_trainable_params']:,}")
    st.dataframe(pd.DataFrame(table["layers"]), hide_index=True, width="stretch", height=280,
                 key="layer_table")
    if cfg.arch == "fc" or cfg.activation != "relu":
        st.plotly_chart(charts.activation_function(cfg.activation, cfg.alpha), width="stretch",
                        key="activation_chart")
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


def runs_panel(session) -> None:
    if not session.runs:
        return
    st.divider()
    st.subheader("Runs in this session")
    rows = []
    for r in session.runs:
        s = r.job.snapshot()
        res = s.result or {}
        t = res.get("test") or {}
        c = r.job.config
        rows.append({
            "run": r.number, "label": r.label, "state": s.state, "arch": c.arch,
            "activation": c.activation, "epochs": f"{s.epoch}/{c.epochs}", "batch": c.batch_size, "lr": c.lr,
            "bn": c.batch_norm, "filters": ",".join(map(str, c.filters)) if c.arch == "cnn" else "",
            "mode": c.cnn_mode if c.arch == "cnn" else "", "seed": c.seed,
            "train acc": _pct(res.get("train_accuracy")), "val acc": _pct(res.get("val_accuracy")),
            "test acc": _pct(t.get("accuracy")), "test loss": t.get("loss"),
            "time s": round(res.get("timing", {}).get("fit_seconds", 0.0), 1),
        })
    df = pd.DataFrame(rows)
    event = st.dataframe(df, hide_index=True, width="stretch", key="runs_table", on_select="rerun",
                         selection_mode="multi-row")
    chosen = [int(df.iloc[i]["run"]) for i in (event.selection.rows if event else [])]
    st.session_state["_overlay_runs"] = chosen
    st.caption("Select runs to overlay their validation curves on the chart above and to download them.")
    c1, c2, c3 = st.columns(3)
    c1.download_button("Runs table (CSV)", df.to_csv(index=False), "xray_lab_runs.csv", "text/csv",
                       key="dl_csv")
    pick = next((r for r in session.runs if r.number == (chosen[-1] if chosen else session.runs[-1].number)), None)
    if pick is not None and pick.job.snapshot().finished:
        import json
        c2.download_button(f"Run {pick.number} record (JSON)", lambda: json.dumps(pick.job.record(), indent=2),
                           f"xray_lab_run{pick.number}.json", "application/json", key="dl_json")
        if pick.job.model is not None:
            c3.download_button(f"Run {pick.number} model (.keras)", lambda: model_bytes(pick.job),
                               f"xray_lab_run{pick.number}.keras", "application/octet-stream", key="dl_model")


def _pct(v) -> float | None:
    return None if v is None else round(100 * v, 1)


main()
