"""End to end in a real browser: start the server, Train, watch the chart grow, Stop."""
import time

import pytest

from xray_core.runs.store import RunStore

from .browser import (BATCH_POINTS_JS, CHROMIUM, PICKER_JS, TITLES_JS, browser, streamlit_app,
                      streamlit_server, wait_until, workspace_of)

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")]


STOP_GRACE = 5.0   # s for Stop to reach the worker and its current batch to end
STILL_FOR = 4.0    # s the chart must then stay still (a training run moves it every 0.5 s)


def test_train_live_chart_grows_then_stop(tmp_path):
    with streamlit_server() as url, browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        # Long run (200 epochs) so there is time to watch it and stop it.
        page.goto(url + "/?epochs=200&batch_size=16", wait_until="domcontentloaded")
        page.get_by_text("Parameters").first.wait_for(timeout=90_000)
        page.screenshot(path=str(tmp_path / "start.png"))
        page.get_by_role("button", name="▶ Train", exact=True).click()
        first = wait_until(lambda: page.evaluate(BATCH_POINTS_JS), timeout=120)
        assert first, "the live chart never showed a batch"
        later = wait_until(lambda: (n := page.evaluate(BATCH_POINTS_JS)) > first and n, timeout=30)
        assert later and later > first, "the live chart did not gain points while training"
        assert page.get_by_text("Training ·").first.is_visible()
        page.screenshot(path=str(tmp_path / "training.png"))
        page.get_by_role("button", name="■ Stop", exact=True).click()
        # Nothing trains after Stop. Checked before waiting for the results: while a job
        # still trains the page keeps polling it, so if Stop did nothing the chart would
        # move between these two readings (it gained points within seconds above).
        time.sleep(STOP_GRACE)
        stopped_at = page.evaluate(BATCH_POINTS_JS)
        time.sleep(STILL_FOR)
        assert page.evaluate(BATCH_POINTS_JS) == stopped_at, "training went on after Stop"
        page.get_by_text("(stopped early)").first.wait_for(timeout=180_000)
        assert page.get_by_text("Test accuracy").first.is_visible()
        assert page.evaluate(BATCH_POINTS_JS) == stopped_at
        page.screenshot(path=str(tmp_path / "stopped.png"), full_page=True)


# ---- runs that survive (issue 8): FC runs on the phantom, stopped or killed mid-run -----------

# 300 steps an epoch, 200 epochs (the server's cap): minutes of training, so a run is still going
# when a test stops it. (It read epochs=300 until 2026-12-04: over the cap the link is ignored, and
# the default 25-epoch run sometimes ended before the two-server test could press Stop.)
LONG = "/?epochs=200&batch_size=16&limit_train=4800"
VIEW = {"width": 1400, "height": 1000}


def _open(b, url):
    page = b.new_page(viewport=VIEW)
    page.goto(url, wait_until="domcontentloaded")
    # generous: on a shared 2-core machine a first page can take a minute
    page.get_by_role("button", name="▶ Train", exact=True).wait_for(timeout=240_000)
    page.wait_for_timeout(1000)   # the main column (where a refused link is said) follows the sidebar
    assert page.get_by_text("The link's settings were ignored").count() == 0, f"{url}: the link was refused"
    return page


def _train(page):
    page.get_by_role("button", name="▶ Train", exact=True).click()
    first = wait_until(lambda: page.evaluate(BATCH_POINTS_JS), timeout=240)
    assert first, "the live chart never showed a batch"
    return first


def _stop(page):
    page.get_by_role("button", name="■ Stop", exact=True).click()
    page.get_by_text("(stopped early)").first.wait_for(timeout=180_000)


def test_refresh_mid_run_reattaches_the_same_run_and_its_chart_keeps_moving(tmp_path):
    with streamlit_app({"XRAY_LAB_HOME": str(tmp_path / "home")}) as srv, browser() as b:
        page = _open(b, srv.url + LONG)
        ws = workspace_of(page)
        assert len(ws) >= 16
        _train(page)
        before = wait_until(lambda: (x := page.evaluate(BATCH_POINTS_JS)) > 1 and x, timeout=60)
        assert before, "training did not pass its first epoch"
        page.reload(wait_until="domcontentloaded")          # F5
        assert workspace_of(page) == ws
        after = wait_until(lambda: page.evaluate(BATCH_POINTS_JS), timeout=60)
        assert after and after >= before, "the chart restarted instead of continuing"
        later = wait_until(lambda: (x := page.evaluate(BATCH_POINTS_JS)) > after and x, timeout=30)
        assert later, "the reattached chart did not move"
        assert page.get_by_text("Training ·").first.is_visible()
        runs = RunStore(home=tmp_path / "home").list_runs(ws)
        assert len(runs) == 1 and runs[0].state == "training"    # the same run, not a new one
        page.screenshot(path=str(tmp_path / "reattached.png"))
        _stop(page)


def test_kill9_mid_run_then_restart_shows_interrupted_and_keeps_finished_runs(tmp_path):
    home = tmp_path / "home"
    store = RunStore(home=home)
    with browser() as b:
        with streamlit_app({"XRAY_LAB_HOME": str(home)}) as srv:
            page = _open(b, srv.url + "/?epochs=2&batch_size=16&limit_train=480")
            ws = workspace_of(page)
            page.get_by_role("button", name="▶ Train", exact=True).click()
            page.get_by_text("Test accuracy").first.wait_for(timeout=240_000)
            assert wait_until(lambda: store.list_runs(ws)[0].state == "finished", timeout=60)
            page.close()
            page = _open(b, f"{srv.url}{LONG}&ws={ws}")
            _train(page)   # returns at once: the finished run's chart is on the page already
            # so wait for the NEW run (the newest of two) to be training and past epoch 2
            assert wait_until(lambda: len(runs := store.list_runs(ws)) == 2 and runs[0].state == "training"
                              and runs[0].epochs_done >= 2, timeout=240)
            srv.kill9()
        k = store.list_runs(ws)[0].epochs_done
        with streamlit_app({"XRAY_LAB_HOME": str(home)}) as srv:
            page = _open(b, f"{srv.url}/?ws={ws}")
            try:
                page.get_by_text(f"interrupted at epoch {k}").first.wait_for(timeout=180_000)
            except Exception:   # say what the page and the store showed instead
                page.screenshot(path=str(tmp_path / "not-interrupted.png"), full_page=True)
                text = page.locator("section.main, [data-testid='stMain']").first.inner_text()[:1500]
                raise AssertionError(f"no 'interrupted at epoch {k}' after 180 s; store: "
                                     f"{[(r.state, r.epochs_done, r.owner) for r in store.list_runs(ws)]}; "
                                     f"page: {text!r}") from None
            runs = store.list_runs(ws)
            assert [r.state for r in runs] == ["interrupted", "finished"]
            assert runs[0].epochs_done == k and len(runs[0].history["loss"]) == k
            # its curves are drawn from the store (the chart may land just after the status text)
            assert wait_until(lambda: page.evaluate(BATCH_POINTS_JS) >= k - 1, timeout=30)
            page.screenshot(path=str(tmp_path / "interrupted.png"), full_page=True)
            # the finished run is still listed (the table is a canvas: its rows are checked in the store above)
            assert page.get_by_text("Runs in this workspace").first.is_visible()


def test_two_servers_on_one_store_show_each_others_runs(tmp_path):
    env = {"XRAY_LAB_HOME": str(tmp_path / "home")}
    with streamlit_app(env) as a, streamlit_app(env) as b_srv, browser() as b:
        on_a = _open(b, a.url + LONG)
        ws = workspace_of(on_a)
        _train(on_a)
        on_b = _open(b, f"{b_srv.url}/?ws={ws}")
        on_b.get_by_text("on another server").first.wait_for(timeout=180_000)
        _stop(on_a)
        on_b.get_by_text("(stopped early)").first.wait_for(timeout=180_000)  # B follows the row to its end
        on_b.close()
        on_b = _open(b, f"{b_srv.url}/?ws={ws}&epochs=2&batch_size=16&limit_train=480")
        on_b.get_by_role("button", name="▶ Train", exact=True).click()
        on_b.get_by_text("Test accuracy").first.wait_for(timeout=240_000)
        # a new tab on A shows the workspace's newest run: B's, drawn by A from the store
        # (an F5 may resume Streamlit's session within its TTL, which keeps the run it showed)
        on_a = _open(b, f"{a.url}/?ws={ws}")
        on_a.get_by_text("Results · #2").first.wait_for(timeout=180_000)


# ---- inside the network (issue 11): a click on the Classify page's anatomy map ---------------

def test_click_on_the_anatomy_map_explains_that_point(tmp_path):
    import re
    with streamlit_server(env={"XRAY_LAB_HOME": str(tmp_path)}) as url, browser() as b:
        page = b.new_page(viewport=VIEW)
        page.goto(url + "/Classify", wait_until="domcontentloaded")
        page.get_by_role("button", name="Train a quick model").click(timeout=240_000)
        page.get_by_role("button", name="Map a test radiograph").click(timeout=240_000)
        page.get_by_text("Why this colour?").first.click(timeout=120_000)
        page.get_by_text("Patch centred on (128, 128)").first.wait_for(timeout=120_000)
        xy = wait_until(lambda: page.evaluate(PICKER_JS, [44, 196]), timeout=60)
        assert xy, "the clickable map is not on the page"
        time.sleep(1.0)   # let the scroll settle before measuring again and clicking
        xy = page.evaluate(PICKER_JS, [44, 196])
        page.mouse.move(xy[0] - 5, xy[1] - 5)
        page.mouse.click(*xy)
        title = wait_until(lambda: next((m for t in page.evaluate(TITLES_JS)
                                         if (m := re.search(r"Patch centred on \((\d+), (\d+)\)", t or ""))
                                         and m.groups() != ("128", "128")), None), timeout=60)
        assert title, "clicking the map did not move the explained point"
        x, y = map(int, title.groups())
        assert abs(x - 44) <= 4 and abs(y - 196) <= 4, (x, y)   # the nearest clickable point (every 8 px)
        page.screenshot(path=str(tmp_path / "clicked.png"))
