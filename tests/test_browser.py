"""End to end in a real browser: start the server, Train, watch the chart grow, Stop."""
import time

import pytest

from .browser import BATCH_POINTS_JS, CHROMIUM, browser, streamlit_server

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")]


STOP_GRACE = 5.0   # s for Stop to reach the worker and its current batch to end
STILL_FOR = 4.0    # s the chart must then stay still (a training run moves it every 0.5 s)


def wait_until(fn, timeout=90.0, every=0.25):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(every)
    return None


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
        page.get_by_text("(stopped early)").first.wait_for(timeout=60_000)
        assert page.get_by_text("Test accuracy").first.is_visible()
        assert page.evaluate(BATCH_POINTS_JS) == stopped_at
        page.screenshot(path=str(tmp_path / "stopped.png"), full_page=True)
