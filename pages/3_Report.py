"""X-ray Lab — Homework report: the course's experiment table filled from this
workspace's runs (the latest finished run of each preset, or the runs the student
picks), with their curves; downloads as Markdown, one self-contained HTML file, CSV.
A thin view over xray_core.runs.report."""
from __future__ import annotations

import xray_ui

xray_ui.install()   # first: Streamlit's patches, version-checked, and the server's shutdown (xray_ui/__init__.py)

import pandas as pd
import streamlit as st

from xray_core.runs import report as rp
from xray_core.errors import XrayLabError
from xray_ui import lecture
from xray_ui.nav import page_links
from xray_ui.run_views import workspace_views
from xray_ui.session import store, workspace, workspace_notice

from xray_ui.icon import ICON  # noqa: E402  (the favicon ships with the app: no request leaves the server)
st.set_page_config(page_title="X-ray Lab · Report", page_icon=ICON, layout="wide")


def main() -> None:
    page_links()
    st.title("X-ray Lab · Homework report")
    st.caption("The course's experiment table, filled from the runs of this workspace. Train the presets on "
               "the Train page (the preset picker in the sidebar), then download the report.")
    ws = workspace()
    workspace_notice()
    s = store()
    views = [v for v in workspace_views(s, ws) if v.rec.state in ("finished", "stopped") and v.rec.test]
    by_label = {v.id: f"{v.label} · {'pixel' if 'dice' in v.rec.test else 'test'} acc "
                      f"{100 * v.rec.test['accuracy']:.1f} %" for v in views}
    mode = st.radio("Runs in the table", ["latest", "pick"], key="report_mode", horizontal=True,
                    format_func={"latest": "Latest finished run of each preset", "pick": "Runs I pick"}.get)
    run_ids = None
    if mode == "pick":
        run_ids = st.multiselect("Runs", list(by_label), key="report_runs", format_func=by_label.get,
                                 placeholder="Pick finished runs of this workspace")
        if not run_ids:
            st.info("Pick one or more finished runs." if views else
                    "No finished runs in this workspace yet: train one on the Train page.")
            return
    try:
        report = rp.build_report(s, ws, run_ids)
    except XrayLabError as e:
        st.error(str(e))
        return
    if not report.rows and not report.classes:
        st.info("No finished run of a course preset in this workspace yet: pick a preset on the Train page "
                "and train it (or choose “Runs I pick”).")
        return
    numbers = {v.id: v.number for v in workspace_views(s, ws)}
    table = pd.DataFrame([{**{k: v for k, v in row.as_dict().items() if k != "run_id"},
                           "run": numbers.get(row.run.id)} for row in report.rows])
    if report.rows:
        st.dataframe(table, hide_index=True, width="stretch", key="report_table")
    else:   # only class experiment turns so far (their setups need not be course presets)
        st.info("No finished run of a course preset in this workspace yet; the class experiments you took "
                "part in are below and in the downloads.")
    maps = rp.map_table(report)
    if maps:   # U-Net runs: their "test acc" above is pixel accuracy; here with Dice per class and the prior
        st.subheader("Whole-film maps")
        st.dataframe(pd.DataFrame(maps, columns=rp.MAP_HEAD), hide_index=True, width="stretch", key="report_maps")
    for i, c in enumerate(report.classes):   # the class experiments this workspace took a turn in
        st.subheader(f"Class experiment: {c['title']} ({c['state']})")
        lecture.status_panel(c, key=f"report_class_{i}")
    if report.missing:
        st.caption("Not run yet: " + ", ".join(report.missing) + ".")
    c1, c2, c3 = st.columns(3)
    c1.download_button("Report (Markdown)", lambda: rp.export(report, "md"), "xray_lab_report.md",
                       "text/markdown", key="dl_report_md")
    c2.download_button("Report (HTML, works offline)", lambda: rp.export(report, "html"), "xray_lab_report.html",
                       "text/html", key="dl_report_html")
    c3.download_button("Report (CSV)", lambda: rp.export(report, "csv"), "xray_lab_report.csv", "text/csv",
                       key="dl_report_csv")
    if report.rows:
        st.plotly_chart(rp.summary_figure(report), width="stretch", key="report_summary")
    for i, row in enumerate(report.rows):
        st.plotly_chart(rp.curves_figure(row), width="stretch", key=f"report_curves_{i}")
    st.caption("Course figures come from the reference assignment, measured on its own X-ray patches; runs on "
               "the built-in phantom show the same trends rather than the same numbers.")


main()
