"""The projector view in a real browser (issue 25, item 3): `?view=present` on the Class
board at 1280x720 hides the sidebar, draws the class's race in large type within the
screen, and redraws itself (its fragment) when a run of the class reaches a new epoch; a
student's idle Train page shows the teacher's "Send to class" without a click."""
import pytest

from xray_core.runs import classes
from xray_core.runs.store import RunStore

from .browser import CHROMIUM, browser, streamlit_app, wait_until

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")]

VIEW = {"width": 1280, "height": 720}

RACE_JS = """() => { for (const p of document.querySelectorAll('.js-plotly-plot')) {
  const d = p.data || [];
  if (d.some(t => (t.name || '').includes('(mean of'))) {
    const r = p.getBoundingClientRect();
    return {bold: d.filter(t => t.showlegend !== false).map(t => [t.name, t.y.length]),
            faint: d.filter(t => t.showlegend === false).length,
            font: p._fullLayout.font.size, top: r.top, bottom: r.bottom, width: r.width}; } }
  return null; }"""

SIDEBAR_JS = """() => { const s = document.querySelector('[data-testid="stSidebar"]');
  return s === null ? 0 : s.getBoundingClientRect().width * (getComputedStyle(s).display === 'none' ? 0 : 1); }"""


def _epoch(store, rid, vals):
    store.update_progress(rid, state="training", epochs_done=len(vals),
                          history={"loss": vals, "accuracy": vals, "val_loss": vals, "val_accuracy": vals})


def test_the_projector_view_fits_720p_and_redraws_itself(tmp_path):
    home = tmp_path / "home"
    store = RunStore(home=home)
    cid = classes.open(["p1-task1", "p1-task2"], "Task 1 vs Task 2", store=store)
    rids = []
    for i, vals in enumerate([[0.40, 0.50], [0.60, 0.70], [0.35]]):
        a = classes.assign(cid, f"student{i}", store=store)
        rids.append(store.create_run(f"student{i}", a.config, group_id=cid).id)
        _epoch(store, rids[-1], vals)
    with streamlit_app({"XRAY_LAB_HOME": str(home), "XRAY_LAB_ISOLATE": "0"}) as server, browser() as b:
        page = b.new_page()
        page.set_viewport_size(VIEW)
        page.goto(server.url + "/Class_board?view=present", wait_until="domcontentloaded")
        race = wait_until(lambda: page.evaluate(RACE_JS))
        assert race, "no race chart on the projector view"
        assert race["bold"] == [["p1-task1 (mean of 2)", 2], ["p1-task2 (mean of 1)", 2]] and race["faint"] == 3
        assert race["font"] >= 20 and race["bottom"] <= VIEW["height"] and race["width"] >= 800
        assert page.evaluate(SIDEBAR_JS) == 0                       # no sidebar on the projector
        page.screenshot(path=str(tmp_path / "present-720p.png"))
        # a run reaches epoch 2 and a new student's run its first: the page redraws itself
        _epoch(store, rids[2], [0.35, 0.55])
        a = classes.assign(cid, "late", store=store)
        late = store.create_run("late", a.config, group_id=cid).id
        _epoch(store, late, [0.62])
        assert wait_until(lambda: (page.evaluate(RACE_JS) or {}).get("bold")
                          == [["p1-task1 (mean of 2)", 2], ["p1-task2 (mean of 2)", 2]])
        assert page.evaluate(RACE_JS)["faint"] == 4
        # a student's Train page left alone shows the teacher's send by itself (the watcher fragment)
        student = b.new_page()
        student.set_viewport_size(VIEW)
        student.goto(server.url, wait_until="domcontentloaded")
        student.get_by_text("Join the class experiment").first.wait_for(timeout=180_000)
        classes.send("p1-task1", {"activation": "leaky_relu"}, "Eyes on the projector", store=store)
        student.get_by_text("Try this:").first.wait_for(timeout=30_000)
        student.get_by_text("Eyes on the projector").first.wait_for(timeout=30_000)
    store.close()
