"""X-ray Lab — Experiments page: is the difference real?

Repeat the sidebar's setup with N seeds, compare two groups (or a group and the course's
figure), sweep one knob, or run the course's seven presets as a study. A thin view: the
runs are xray_core.runs.experiments groups of ordinary TrainingJobs (queued on the trainers
like any run, in worker processes), the statistics come from xray_core.stats and the
figures from xray_ui.charts_stats. Groups live in st.session_state for now.
"""
from __future__ import annotations

import xray_ui

xray_ui.install()   # first: Streamlit's patches, version-checked, and the server's shutdown (xray_ui/__init__.py)

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from xray_core.config import KNOBS, bounds
from xray_core.runs import experiments as ex
from xray_core.runs import service
from xray_core import stats
from xray_core.errors import XrayLabError, one_line
from xray_core.train.estimate import dataset_sizes, page_estimate
from xray_core.presets import COURSE_PRESETS, PRESETS, matching_preset
from xray_ui import charts_stats
from xray_ui.controls import sidebar
from xray_ui.nav import page_links
from xray_ui.progress import fmt_time
from xray_ui import session
from xray_ui.films_view import run_dataset
from xray_ui.session import ISOLATE, warm_workers
from xray_ui.icon import ICON

st.set_page_config(page_title="X-ray Lab · Experiments", page_icon=ICON, layout="wide")
REFRESH_S = 1.0
COURSE = "the course's figure"
VIEWS = ("Repeat", "Compare", "Sweep", "The course as a study")


@dataclass
class Entry:
    number: int
    label: str
    group: ex.Group
    announced: bool = False


def entries() -> list[Entry]:
    return st.session_state.setdefault("xray_experiments", [])


def busy() -> Entry | None:
    """This session's experiment still training (one at a time: the trainers are shared)."""
    return next((e for e in entries() if not e.group.finished), None)


def _stored() -> dict:
    """Every run of a group is recorded in the workspace's run store: it outlives the tab and
    shows in the Train page's runs table and the report."""
    return {"store": session.store(), "workspace": session.workspace(), "client": session.client_id()}


def launch(kind_label: str, start) -> None:
    try:
        group = start()
    except XrayLabError as e:
        st.error(str(e))
        return
    except Exception as e:  # never a traceback on the page
        st.error(f"Could not start: {one_line(e)}")
        return
    n = len(entries()) + 1
    entries().append(Entry(n, f"#{n} {kind_label}", group))
    st.rerun()


def main() -> None:
    page_links()
    st.title("X-ray Lab · Experiments")
    st.caption("The course concludes from single runs. A different random seed alone moves the test accuracy: "
               "repeat a setup with several seeds, and see whether a gap is larger than that.")
    warm_workers()
    cfg, cfg_error = sidebar()
    dataset = None
    if cfg_error:
        st.info(cfg_error)
    else:
        try:
            dataset = run_dataset(cfg.data, cfg.arch)   # films for a U-Net setup, patches otherwise
        except XrayLabError as e:
            st.error(str(e))
        except Exception as e:
            st.error(f"Could not load the data: {one_line(e)}")
    for e in entries():
        if e.group.finished:
            e.group.drop_models()  # records and curves are all this page shows
    running = busy()
    if running is not None:
        c1, c2 = st.columns([4, 1])
        done, total = running.group.progress()
        c1.info(f"{running.label}: {done} of {total} runs finished. The runs wait for free trainers like "
                "any other run; you can leave this page and come back.")
        if c2.button("■ Stop", key="exp_stop", width="stretch"):
            running.group.stop()
            st.toast("Stopping this experiment's runs…")
    mine = service.live_runs(session.workspace())
    if mine and running is None:   # e.g. an experiment started in a tab that was closed
        c1, c2 = st.columns([4, 1])
        c1.info(f"Your workspace has {len(mine)} runs queued or training on this server.")
        if c2.button("■ Cancel them", key="exp_cancel_mine", width="stretch"):
            st.toast(f"Stopping {service.cancel(session.workspace())} runs…")
    can_run = cfg is not None and dataset is not None and dataset.has("train") and running is None
    # A radio, not st.tabs: tabs fall back to the first one whenever the elements above them
    # change (the "running" box appears on Start), which threw students out of Sweep/Study.
    view = st.radio("View", VIEWS, key="exp_view", horizontal=True, label_visibility="collapsed")
    if view == "Repeat":
        repeat_tab(cfg, dataset, can_run)
    elif view == "Compare":
        compare_tab()
    elif view == "Sweep":
        sweep_tab(cfg, dataset, can_run)
    else:
        study_tab(cfg, dataset, can_run)


def _estimate(configs, dataset) -> str:
    sizes = dataset_sizes(dataset)
    # measured on this server (estimate.py): cached per model shape, so the seed changes nothing
    secs = sum(page_estimate(c, *sizes)["total"] for c in configs)
    return f"~{fmt_time(secs)} of training if the runs have the server to themselves"


# ---- Repeat --------------------------------------------------------------------------------

def repeat_tab(cfg, dataset, can_run) -> None:
    st.markdown("Train the sidebar's setup (pick a **course preset** there) with seeds *S, S+1, …*: every "
                "curve faint, their mean bold, and the test accuracy as mean ± sd with a 95 % interval.")
    c1, c2, c3 = st.columns([1, 1, 2])
    seeds = c1.number_input("Seeds", 2, ex.MAX_SEEDS, 5, key="exp_seeds")
    go = c2.button("▶ Repeat", key="exp_repeat", type="primary", disabled=not can_run, width="stretch")
    if cfg is not None and dataset is not None and dataset.has("train"):
        c3.caption(f"Seeds {cfg.seed}–{cfg.seed + seeds - 1} · "
                   f"{_estimate([cfg.replace(seed=s) for s in range(seeds)], dataset)}.")
    if go and can_run:
        p = matching_preset(cfg)
        launch(f"{p.name if p else 'custom setup'} × {seeds} seeds",
               lambda: ex.start_repeat(cfg, int(seeds), dataset=dataset, isolated=ISOLATE, **_stored()))
    reps = [e for e in entries() if e.group.kind == "repeat"]
    if reps:
        pick = st.selectbox("Show", [e.number for e in reversed(reps)], key="exp_show_repeat",
                            format_func=lambda n: next(e.label for e in reps if e.number == n))
        live_group(next(e for e in reps if e.number == pick), repeat_view)


def live_group(entry: Entry, view) -> None:
    active = not entry.group.finished

    @st.fragment(run_every=REFRESH_S if active else None)
    def live() -> None:
        view(entry)
        if entry.group.finished and not entry.announced:
            entry.announced = True
            st.rerun()  # once: unlock the buttons and the comparison choices

    live()


def repeat_view(entry: Entry) -> None:
    g = entry.group
    res = g.result()
    done, total = g.progress()
    failed = [r for r in res["runs"] if r["state"] == "failed"]
    st.caption(f"{entry.label}: {done}/{total} runs finished" + (f", {len(failed)} failed" if failed else ""))
    for r in failed[:1]:
        st.error(f"Seed {r['seed']} failed: {r['error']}")
    st.plotly_chart(charts_stats.repeat_curves(res["runs"]), width="stretch", key=f"exp_curves_{entry.number}")
    acc, loss = res["test_accuracy"], res["test_loss"]
    reported = res.get("reported") or {}
    c = st.columns(3)
    c[0].metric("Test accuracy (mean ± sd)", _pm(acc, 100, "%"),
                delta=f"course: {reported['test_accuracy']} %" if "test_accuracy" in reported else None,
                delta_color="off")
    c[1].metric("Test loss (mean ± sd)", _pm(loss, 1, "", 3),
                delta=f"course: {reported['test_loss']}" if "test_loss" in reported else None, delta_color="off")
    c[2].metric("Train accuracy (mean ± sd)", _pm(res["train_accuracy"], 100, "%"),
                delta=f"course: {reported['train_accuracy']} %" if "train_accuracy" in reported else None,
                delta_color="off")
    if acc["n"]:
        ci = f"95 % interval of the mean test accuracy: {_ci(acc, 100, ' %')}; of the test loss: {_ci(loss, 1, '', 3)}."
        st.caption(ci + (" The course's figures are one run on its own patches: on other data, compare the "
                         "trend, not the number." if reported and res["config"]["data"] == "phantom" else ""))
        a, b = st.columns(2)
        with a:
            st.plotly_chart(charts_stats.spread(acc, "Test accuracy", reported.get("test_accuracy")),
                            width="stretch", key=f"exp_spread_acc_{entry.number}")
        with b:
            st.plotly_chart(charts_stats.spread(loss, "Test loss", reported.get("test_loss"), percent=False),
                            width="stretch", key=f"exp_spread_loss_{entry.number}")
        if "test_accuracy" in reported and acc["n"] >= 2:
            v = stats.compare_to_value(acc["values"], reported["test_accuracy"] / 100)
            st.markdown(f"**The course's {reported['test_accuracy']} % against these seeds:** {v['verdict_text']}.")


def _pm(s: dict, k: float, unit: str, digits: int = 1) -> str:
    if s["mean"] is None:
        return "…"
    sd = "" if s["sd"] is None else f" ± {k * s['sd']:.{digits}f}"
    return f"{k * s['mean']:.{digits}f}{sd} {unit}".strip()


def _ci(s: dict, k: float, unit: str, digits: int = 1) -> str:
    if not s.get("ci95"):
        return "—"
    lo, hi = s["ci95"]
    return f"{k * lo:.{digits}f}–{k * hi:.{digits}f}{unit}"


# ---- Compare -------------------------------------------------------------------------------

def compare_tab() -> None:
    groups = {e.number: e for e in entries() if e.group.kind == "repeat" and e.group.finished
              and len(e.group.result()["test_accuracy"]["values"]) >= 2}
    if not groups:
        st.info("Run a **Repeat** first (at least 2 seeds). Then compare two repeats, or one repeat "
                "with the course's figure.")
        return
    label = lambda n: groups[n].label if n in groups else COURSE  # noqa: E731
    order = list(reversed(groups))
    c1, c2 = st.columns(2)
    a = c1.selectbox("Group A", order, key="exp_cmp_a", format_func=label)
    b = c2.selectbox("Group B (or the course's figure)", [*(n for n in order if n != a), COURSE], key="exp_cmp_b",
                     format_func=label)
    ra = groups[a].group.result()
    figure = None
    if b == COURSE:
        rep = (ra.get("reported") or {}).get("test_accuracy")
        figure = c2.number_input("Course figure: test accuracy (%)", 0.0, 100.0, float(rep or 66.8), step=0.1,
                                 key="exp_cmp_figure") / 100
        res = stats.compare_to_value(ra["test_accuracy"]["values"], figure)
        b_summary, b_label = None, f"course {100 * figure:.1f} %"
    else:
        rb = groups[b].group.result()
        res = stats.compare(ra["test_accuracy"]["values"], rb["test_accuracy"]["values"])
        b_summary, b_label = rb["test_accuracy"], groups[b].label
    lo, hi = res["ci95"]
    c = st.columns(4)
    c[0].metric("Difference B − A", f"{100 * res['difference']:+.2f} points")
    c[1].metric("95 % interval", f"{100 * lo:+.2f} to {100 * hi:+.2f}")
    c[2].metric("p-value", stats.fmt_p(res["p_value"]), help=res["test"])
    c[3].metric("Seeds needed", "—" if res["seeds_needed"] is None else str(res["seeds_needed"]),
                help="Seeds per group for an 80 % chance of detecting a true gap of this size at p < 0.05 "
                     "(two-sided t-test, noncentral t, with the spread seen here).")
    if res["verdict"] == "different":
        st.success(f"**Verdict:** {res['verdict_text']}")
    else:
        st.warning(f"**Verdict:** {res['verdict_text']}")
    st.caption(f"Test used: {res['test']}. Welch's t-test does not assume both setups vary equally from seed to "
               "seed; with 5 seeds or fewer per group the p-value comes from an exact permutation test instead, "
               "which assumes nothing about the shape of the spread.")
    st.plotly_chart(charts_stats.comparison(ra["test_accuracy"], b_summary, groups[a].label, b_label, figure),
                    width="stretch", key="exp_compare_chart")


# ---- Sweep ---------------------------------------------------------------------------------

DEFAULT_VALUES = {name: s.values for name, s in ex.SWEEPS.items()}   # from the knob table's sweep rows


def _default_values() -> None:
    st.session_state["exp_values"] = DEFAULT_VALUES[st.session_state["exp_knob"]]


def sweep_tab(cfg, dataset, can_run) -> None:
    st.markdown("Vary **one** knob of the sidebar's setup, every value with the same seeds: the metric against "
                "the knob, with error bars. Training-set size shows the overfitting gap closing.")
    c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
    knob = c1.selectbox("Knob", list(ex.SWEEP_KNOBS), key="exp_knob", format_func=ex.KNOB_LABELS.get,
                        on_change=_default_values)
    st.session_state.setdefault("exp_values", DEFAULT_VALUES[knob])
    text = c2.text_input("Values (comma-separated)", key="exp_values")
    seeds = c3.number_input("Seeds per value", 2, ex.MAX_SEEDS, 3, key="exp_sweep_seeds")
    go = c4.button("▶ Sweep", key="exp_sweep", type="primary", disabled=not can_run, width="stretch")
    if go and can_run:
        try:
            values = ex.parse_values(knob, text)
            for v in values:
                ex.with_knob(cfg, knob, v)
        except XrayLabError as e:
            st.error(str(e))
        else:
            launch(f"sweep of {ex.KNOB_LABELS[knob]} ({text}) × {seeds} seeds",
                   lambda: ex.start_sweep(cfg, knob, values, int(seeds), dataset=dataset, isolated=ISOLATE, **_stored()))
    sweeps = [e for e in entries() if e.group.kind == "sweep"]
    if sweeps:
        live_group(sweeps[-1], sweep_view)


def sweep_view(entry: Entry) -> None:
    res = entry.group.result()
    done, total = entry.group.progress()
    knob = res["knob"]
    st.caption(f"{entry.label}: {done}/{total} runs finished")
    pts = [p for p in res["points"] if p["test_accuracy"]["n"]]
    if pts:
        vals = [p["value"] for p in pts]
        log_x = ex.SWEEPS[knob].log and min(vals) > 0 and max(vals) / min(vals) >= 20
        st.plotly_chart(charts_stats.sweep_chart(pts, ex.KNOB_LABELS[knob], log_x), width="stretch",
                        key=f"exp_sweep_chart_{entry.number}")
        rows = [{ex.KNOB_LABELS[knob]: p["value"], "runs": p["test_accuracy"]["n"],
                 "test accuracy %": _pm(p["test_accuracy"], 100, ""),
                 "95 % CI": _ci(p["test_accuracy"], 100, ""),
                 "train accuracy %": _pm(p["train_accuracy"], 100, ""),
                 "train − test gap (points)": _pm(p["gap"], 100, "")} for p in pts]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key=f"exp_sweep_table_{entry.number}")


# ---- The course as a study -----------------------------------------------------------------

def study_tab(cfg, dataset, can_run) -> None:
    st.markdown("One button runs the course's seven experiments with N seeds each and fills its table: "
                "mean ± sd beside the course's single numbers, and whether each step really changed the test "
                "accuracy. It uses the sidebar's data.")
    c1, c2, c3, c4 = st.columns(4)
    seeds = c1.number_input("Seeds per preset", 2, 20, 3, key="exp_study_seeds")
    # the knob table's ranges (epochs up to this server's cap), with 0 = the presets' own
    epochs = c2.number_input("Epochs (0 = the course's)", 0, int(bounds("epochs")[1]), 0, key="exp_study_epochs",
                             help="Fewer epochs make a quick classroom version; the verdicts then answer "
                                  "a different question than the course's.")
    lt = KNOBS["limit_train"]
    limit = c3.number_input("Training patches (0 = all)", lt.off, int(bounds("limit_train")[1]), lt.off,
                            step=int(lt.step), key="exp_study_limit")
    go = c4.button("▶ Run the study", key="exp_study", type="primary", disabled=not can_run, width="stretch")
    if dataset is not None and dataset.has("train") and cfg is not None:
        configs = [p.config.replace(seed=s, data=cfg.data, epochs=int(epochs) or p.config.epochs,
                                    limit_train=int(limit) or None)
                   for p in (PRESETS[n] for n in COURSE_PRESETS) for s in range(seeds)]
        st.caption(f"{len(configs)} runs on {dataset.name} · {_estimate(configs, dataset)}. "
                   "The two CNN presets dominate: lower the patches or epochs for a lesson-sized study.")
    if go and can_run:
        launch(f"course study × {seeds} seeds",
               lambda: ex.start_study(int(seeds), data=cfg.data, epochs=int(epochs) or None,
                                      limit_train=int(limit) or None, dataset=dataset, isolated=ISOLATE,
                                      **_stored()))
    studies = [e for e in entries() if e.group.kind == "study"]
    if studies:
        live_group(studies[-1], study_view)


def study_view(entry: Entry) -> None:
    res = entry.group.result()
    done, total = entry.group.progress()
    st.caption(f"{entry.label}: {done}/{total} runs finished")
    steps = {s["to"]: s for s in res["steps"]}
    rows = []
    for p in res["points"]:
        rep = p["reported"]
        s = steps.get(p["preset"])
        rows.append({"preset": p["preset"], "experiment": p["title"].split(": ", 1)[-1],
                     "course test acc %": rep.get("test_accuracy"),
                     "test acc % (mean ± sd)": _pm(p["test_accuracy"], 100, ""),
                     "95 % CI": _ci(p["test_accuracy"], 100, ""),
                     "course train acc %": rep.get("train_accuracy"),
                     "train acc % (mean ± sd)": _pm(p["train_accuracy"], 100, ""),
                     "runs": p["test_accuracy"]["n"],
                     "vs previous (course)": "" if s is None or s["reported_difference"] is None
                     else f"{100 * s['reported_difference']:+.1f}",
                     "vs previous (here)": "" if s is None or s.get("difference") is None
                     else f"{100 * s['difference']:+.1f} (p {stats.fmt_p(s['p_value'])})",
                     "verdict": "" if s is None else (s["verdict"] or "…")})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key=f"exp_study_table_{entry.number}")
    if any(p["test_accuracy"]["n"] for p in res["points"]):
        st.plotly_chart(charts_stats.study_chart(res["points"]), width="stretch",
                        key=f"exp_study_chart_{entry.number}")
    for s in res["steps"]:
        if s.get("verdict"):
            st.markdown(f"- **{s['from']} → {s['to']}**: {s['verdict_text']}")


main()
