"""The homework report: the course's experiment table filled from a workspace's runs.

Each row is one run beside the course's figures (presets.PRESETS[...].reported): by
default the latest finished run of each preset, or the runs a student picks. Exports:
Markdown, CSV, and one self-contained HTML file whose plotly charts work offline
(plotly.js is inlined once, every chart after it is a plain div). The class experiments
the workspace took a turn in (runs/classes.py) follow, with the class's result per setup
and the verdict, in Markdown and HTML (the CSV stays the one table of runs).
Used by `python -m xray_core runs export` and by the app's report page.
"""
from __future__ import annotations

import csv
import html
import io
import re
import time
from dataclasses import dataclass, field

from xray_core.presets import COURSE_PRESETS, PRESETS
from xray_core.runs.store import RunRecord, RunStore, StoreError, check_workspace

CSV_COLUMNS = ("preset", "title", "run_id", "label", "state", "epochs_done", "train_accuracy", "test_accuracy",
               "test_loss", "course_train_accuracy", "course_test_accuracy", "course_test_loss")


@dataclass
class ReportRow:
    preset: str | None
    title: str
    run: RunRecord
    reported: dict              # the course's figures (accuracies in %, loss)

    @property
    def train_accuracy(self) -> float | None:   # percent
        v = (self.run.result or {}).get("train_accuracy")
        return None if v is None else 100 * v

    @property
    def test_accuracy(self) -> float | None:    # percent
        t = self.run.test or {}
        return None if t.get("accuracy") is None else 100 * t["accuracy"]

    @property
    def test_loss(self) -> float | None:
        return (self.run.test or {}).get("loss")

    def as_dict(self) -> dict:
        r = self.reported
        return {"preset": self.preset or "", "title": self.title, "run_id": self.run.id, "label": self.run.label,
                "state": self.run.state, "epochs_done": self.run.epochs_done,
                "train_accuracy": _round(self.train_accuracy, 1), "test_accuracy": _round(self.test_accuracy, 1),
                "test_loss": _round(self.test_loss, 3),
                "course_train_accuracy": r.get("train_accuracy"), "course_test_accuracy": r.get("test_accuracy"),
                "course_test_loss": r.get("test_loss")}


@dataclass
class Report:
    workspace: str
    rows: list[ReportRow]
    missing: list[str] = field(default_factory=list)    # presets with no finished run yet
    classes: list[dict] = field(default_factory=list)   # classes.status of each class experiment
    created_at: float = field(default_factory=time.time)


def _round(v, nd):
    return None if v is None else round(float(v), nd)


def build_report(store: RunStore, workspace: str, run_ids: list[str] | None = None) -> Report:
    """The latest finished run of each preset (course order), or exactly `run_ids` (in that
    order; each must be a run of this workspace); and the class experiments it took part in."""
    check_workspace(workspace)
    rows: list[ReportRow] = []
    missing: list[str] = []
    if run_ids:
        for rid in run_ids:
            run = store.get(rid)
            if run is None or run.workspace != workspace:
                raise StoreError(f"no run {rid!r} in workspace {workspace!r}")
            p = PRESETS.get(run.preset or "")
            rows.append(ReportRow(run.preset, p.title if p else run.label, run, p.reported if p else {}))
        return Report(workspace, rows, missing, class_experiments(store, workspace))
    for name in COURSE_PRESETS:
        p = PRESETS[name]
        found = store.list_runs(workspace, preset=name, states=["finished"], limit=1)
        if found:
            rows.append(ReportRow(name, p.title, found[0], p.reported))
        else:
            missing.append(name)
    return Report(workspace, rows, missing, class_experiments(store, workspace))


def class_experiments(store: RunStore, workspace: str) -> list[dict]:
    """classes.status of each class experiment this workspace ran a turn of, oldest first,
    with `mine`: this workspace's run ids in it."""
    from xray_core.runs import classes
    mine: dict[str, list[str]] = {}
    for r in store.list_runs(workspace):
        if r.group_id:
            mine.setdefault(r.group_id, []).append(r.id)
    out = []
    for gid, ids in mine.items():
        if store.get_class_experiment(gid) is None:
            continue            # a repeat or sweep group, not a class experiment
        out.append({**classes.status(gid, store=store), "mine": ids})
    return sorted(out, key=lambda c: c["created_at"])


def _class_rows(c: dict) -> tuple[list[str], list[list[str]]]:
    head = ["setup", "runs finished", "mean test acc", "95 % interval", "your runs"]
    body = []
    mine = set(c.get("mine") or [])
    for s in c["setups"]:
        ci = s["ci95"]
        ours = sum(1 for r in s["runs"] if r["id"] in mine)
        body.append([s["label"] or s["preset"] or f"setup {s['setup'] + 1}", str(s["n"]),
                     _fmt(None if s["mean"] is None else 100 * s["mean"], 1, " %"),
                     "–" if not ci else f"{100 * ci[0]:.1f} – {100 * ci[1]:.1f} %", str(ours)])
    return head, body


def _class_verdict(c: dict) -> str:
    cmp = c["compare"]
    words = f"{cmp['b_label']} vs {cmp['a_label']}: {cmp['verdict']}"
    if cmp.get("p_value") is not None:
        words += f" (p = {cmp['p_value']:.3g})"
    if cmp.get("verdict_text"):
        words += f" — {cmp['verdict_text']}"
    return words


# ---- exports ---------------------------------------------------------------------

def _fmt(v, nd=1, suffix="") -> str:
    return "–" if v is None else f"{v:.{nd}f}{suffix}"


def _table(report: Report) -> tuple[list[str], list[list[str]]]:
    head = ["preset", "experiment", "run", "epochs", "train acc", "test acc", "test loss",
            "course train acc", "course test acc", "course test loss"]
    body = []
    for row in report.rows:
        r = row.reported
        body.append([row.preset or "(own)", row.title, row.run.id, f"{row.run.epochs_done}/{row.run.epochs}",
                     _fmt(row.train_accuracy, 1, " %"), _fmt(row.test_accuracy, 1, " %"), _fmt(row.test_loss, 3),
                     _fmt(r.get("train_accuracy"), 1, " %"), _fmt(r.get("test_accuracy"), 1, " %"),
                     _fmt(r.get("test_loss"), 2)])
    return head, body


MAP_HEAD = ["preset", "run", "films", "pixel acc", "Dice b", "Dice c", "Dice l", "Dice h",
            "prior pixel acc", "prior Dice c", "map per film"]


def map_table(report: Report) -> list[list[str]]:
    """Whole-film runs (a U-Net: test.dice) scored as maps: a label per pixel, so pixel
    accuracy and Dice per class, beside the prior's (the map that ignores the image). Their
    "test acc" in the table above is that pixel accuracy."""
    body = []
    for row in report.rows:
        t = row.run.test or {}
        dice = t.get("dice")
        if not isinstance(dice, dict):
            continue
        prior = t.get("prior") or {}
        pd_ = prior.get("dice") or {}

        def d(v):
            return "–" if v is None else f"{v:.3f}"
        pa = t.get("pixel_accuracy", t.get("accuracy"))
        body.append([row.preset or "(own)", row.run.id, str(t.get("films", "–")),
                     _fmt(None if pa is None else 100 * pa, 2, " %"),
                     *(d(dice.get(c)) for c in ("background", "clavicle", "lung", "heart")),
                     _fmt(None if prior.get("pixel_accuracy") is None else 100 * prior["pixel_accuracy"], 2, " %"),
                     d(pd_.get("clavicle")), _fmt(t.get("map_ms_per_film"), 0, " ms")])
    return body


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...),
# +cmd|..., @SUM...; tab and CR start DDE payloads too): such text cells get a leading
# apostrophe, which spreadsheets show as text and do not evaluate (OWASP "CSV injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A text value made safe for a spreadsheet; numbers and None are left as they are."""
    if isinstance(value, str) and value.lstrip(" ").startswith(FORMULA_START):
        return "'" + value
    return value


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in report.rows:
        w.writerow({k: csv_cell(v) for k, v in row.as_dict().items()})
    return buf.getvalue()


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|!])")


def _md_cell(text: str) -> str:
    """Student text in the Markdown report: HTML escaped (a <script> or <img onerror> label
    is shown as text by any renderer), Markdown's link, emphasis and table marks
    backslash-escaped, one line."""
    out = _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))
    return html.escape(out, quote=False)


def _when(report: Report) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report.created_at))


def to_markdown(report: Report) -> str:
    head, body = _table(report)
    lines = ["# X-ray Lab report — the course's experiments", "",
             f"Generated {_when(report)}. Accuracies in %, course figures from the reference assignment.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md_cell(c) for c in cells) + " |" for cells in body]
    if report.missing:
        lines += ["", "Not run yet: " + ", ".join(report.missing) + "."]
    maps = map_table(report)
    if maps:
        lines += ["", "## Whole-film maps (test films: pixel accuracy and Dice per class, beside the prior's)", "",
                  "| " + " | ".join(MAP_HEAD) + " |", "|" + "---|" * len(MAP_HEAD)]
        lines += ["| " + " | ".join(_md_cell(c) for c in cells) + " |" for cells in maps]
    for row in report.rows:
        h = row.run.history
        lines += ["", f"## {_md_cell(row.preset or row.run.label)}: {_md_cell(row.title)}", "",
                  "| epoch | loss | accuracy | val loss | val accuracy |", "|---|---|---|---|---|"]
        for i in range(len(h.get("loss", []))):
            vals = [(h.get(k) or [])[i] if i < len(h.get(k) or []) else None
                    for k in ("loss", "accuracy", "val_loss", "val_accuracy")]
            lines.append(f"| {i + 1} | " + " | ".join(_fmt(v, 4) for v in vals) + " |")
    for c in report.classes:
        head, body = _class_rows(c)
        lines += ["", f"## Class experiment: {_md_cell(c['title'])} ({c['state']})", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(_md_cell(x) for x in cells) + " |" for cells in body]
        lines += ["", _md_cell(_class_verdict(c))]
    return "\n".join(lines) + "\n"


def curves_figure(row: ReportRow):
    """Loss and accuracy per epoch (train, validation) with the course's test accuracy
    as a dashed line, so the student sees where their run stands."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    h = row.run.history
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy (%)"))
    for key, col, colour, scale in (("loss", 1, "#1f77b4", 1), ("val_loss", 1, "#ff7f0e", 1),
                                    ("accuracy", 2, "#1f77b4", 100), ("val_accuracy", 2, "#ff7f0e", 100)):
        vals = h.get(key) or []
        if vals:
            fig.add_trace(go.Scatter(x=list(range(1, len(vals) + 1)),
                                     y=[None if v is None else v * scale for v in vals],
                                     name=key.replace("_", " "), mode="lines+markers",
                                     line=dict(color=colour)), 1, col)
    course = row.reported.get("test_accuracy")
    if course is not None:
        fig.add_hline(y=course, line_dash="dash", line_color="#888", row=1, col=2,
                      annotation_text=f"course test {course} %")
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=f"{row.preset or row.run.label}: {row.title}", height=340,
                      margin=dict(l=10, r=10, t=60, b=10), legend=dict(orientation="h", y=-0.25))
    return fig


def summary_figure(report: Report):
    """Test accuracy per experiment: this workspace's runs beside the course's."""
    import plotly.graph_objects as go
    names = [r.preset or r.run.label for r in report.rows]
    fig = go.Figure([go.Bar(name="this run", x=names, y=[r.test_accuracy for r in report.rows]),
                     go.Bar(name="course", x=names, y=[r.reported.get("test_accuracy") for r in report.rows])])
    fig.update_layout(barmode="group", title="Test accuracy (%)", height=320, margin=dict(l=10, r=10, t=50, b=10),
                      yaxis=dict(range=[0, 100]))
    return fig


def to_html(report: Report) -> str:
    """One self-contained page: plotly.js inlined once, then each chart as a div."""
    head, body = _table(report)
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             "<title>X-ray Lab report</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}</style></head><body>",
             "<h1>X-ray Lab report — the course's experiments</h1>",
             f"<p>Generated {e(_when(report))}. Accuracies in %; course figures from the reference assignment.</p>",
             "<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>" for cells in body]
    parts.append("</tbody></table>")
    if report.missing:
        parts.append(f"<p>Not run yet: {e(', '.join(report.missing))}.</p>")
    maps = map_table(report)
    if maps:
        parts.append("<h2>Whole-film maps (test films: pixel accuracy and Dice per class, beside the prior's)</h2>")
        parts.append("<table class='maps'><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in MAP_HEAD)
                     + "</tr></thead><tbody>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>" for cells in maps]
        parts.append("</tbody></table>")
    for c in report.classes:
        head, body = _class_rows(c)
        parts.append(f"<h2>Class experiment: {e(c['title'])} ({e(c['state'])})</h2>")
        parts.append("<table class='class'><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head)
                     + "</tr></thead><tbody>")
        parts += ["<tr>" + "".join(f"<td>{e(x)}</td>" for x in cells) + "</tr>" for cells in body]
        parts.append(f"</tbody></table><p>{e(_class_verdict(c))}</p>")
    figs = ([summary_figure(report)] if report.rows else []) + [curves_figure(r) for r in report.rows]
    for i, fig in enumerate(figs):
        # plotly.js (~4.5 MB) goes in once, with the first chart; the page needs no network.
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"chart{i}"))
    parts.append("</body></html>")
    return "\n".join(parts)


FORMATS = {"md": to_markdown, "csv": to_csv, "html": to_html}


def export(report: Report, fmt: str) -> str:
    try:
        return FORMATS[fmt](report)
    except KeyError:
        raise StoreError(f"unknown report format {fmt!r}: choose md, html or csv") from None
