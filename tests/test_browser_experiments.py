"""Issue 23 in a real browser: runs started from the Experiments page have an owner.

A Repeat larger than the workspace may queue is refused in one line; the runs of one that
fits are the workspace's (in the store, under its key); closing the tab does not orphan
them: a new tab of the same workspace offers to cancel them, and does; a teacher on the
Class board can stop any student's queued runs."""
import pytest

from xray_core.runs.store import RunStore

from .browser import CHROMIUM, browser, streamlit_app, wait_until, workspace_of

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")]

PASSWORD = "a long teacher passphrase: seven words, hard to guess"
VIEW = {"width": 1400, "height": 1000}
SLOW = "epochs=300&batch_size=16&limit_train=480"   # runs that stay queued or training for minutes


def _experiments(b, url):
    page = b.new_page(viewport=VIEW)
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("button", name="▶ Repeat", exact=True).wait_for(timeout=240_000)
    # the button is enabled once the data is loaded
    page.wait_for_function("() => { const b = Array.from(document.querySelectorAll('button'))"
                           ".find(b => b.innerText.includes('Repeat')); return b && !b.disabled; }",
                           timeout=240_000)
    return page


def _repeat(page, seeds: int) -> None:
    box = page.get_by_label("Seeds", exact=True)
    box.fill(str(seeds))
    box.press("Enter")
    page.wait_for_timeout(500)      # the rerun that takes the new value
    page.get_by_role("button", name="▶ Repeat", exact=True).click()


def _states(store, ws) -> list[str]:
    return sorted(r.state for r in store.list_runs(ws))


def test_experiment_runs_are_owned_capped_cancellable_and_a_teacher_stops_any(tmp_path):
    home = tmp_path / "home"
    env = {"XRAY_LAB_HOME": str(home), "XRAY_LAB_PENDING_PER_WORKSPACE": "4", "XRAY_LAB_MAX_JOBS": "1",
           "XRAY_LAB_TEACHER_PASSWORD": PASSWORD}
    store = RunStore(home=home)
    with streamlit_app(env) as srv, browser() as b:
        a = _experiments(b, f"{srv.url}/Experiments?{SLOW}")
        ws_a = workspace_of(a)
        assert ws_a

        # more runs than the workspace may queue: refused in one line, nothing queued
        _repeat(a, 6)
        a.get_by_text("6 runs are more than your workspace may queue now").first.wait_for(timeout=60_000)
        assert store.list_runs(ws_a) == []

        # a Repeat that fits: its runs are recorded under the student's workspace
        _repeat(a, 3)
        assert wait_until(lambda: len(store.list_runs(ws_a)) == 3, timeout=120), _states(store, ws_a)
        assert wait_until(lambda: "training" in _states(store, ws_a), timeout=180), _states(store, ws_a)
        a.close()                   # closing the tab leaves them running ...

        # ... and a new tab of the same workspace can cancel them
        a = _experiments(b, f"{srv.url}/Experiments?ws={ws_a}")
        a.get_by_text("Your workspace has 3 runs queued or training").first.wait_for(timeout=60_000)
        a.get_by_role("button", name="■ Cancel them").click()
        assert wait_until(lambda: _states(store, ws_a) == ["stopped"] * 3, timeout=180), _states(store, ws_a)

        # another student's Repeat: one trains (one trainer), two wait in the queue
        s = _experiments(b, f"{srv.url}/Experiments?{SLOW}")
        ws_b = workspace_of(s)
        assert ws_b and ws_b != ws_a
        _repeat(s, 3)
        assert wait_until(lambda: _states(store, ws_b) == ["queued", "queued", "training"], timeout=240), \
            _states(store, ws_b)

        # the teacher stops the queued ones from the Class board
        t = b.new_page(viewport=VIEW)
        t.goto(srv.url + "/Class_board", wait_until="domcontentloaded")
        t.get_by_text("Teacher", exact=True).first.wait_for(timeout=180_000)
        t.get_by_text("Teacher", exact=True).first.click()
        box = t.get_by_label("Teacher password")
        box.fill(PASSWORD)
        box.press("Enter")
        t.get_by_text("Teacher view").first.wait_for(timeout=60_000)
        t.get_by_role("button", name="■ Stop all 2 queued run(s)").click()
        t.get_by_text("Asked 2 run(s) to stop").first.wait_for(timeout=60_000)
        assert wait_until(lambda: _states(store, ws_b) == ["stopped", "stopped", "training"], timeout=120), \
            _states(store, ws_b)
