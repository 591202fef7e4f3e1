"""Issue 23 in a real browser: the teacher login slows down after wrong passwords (per
session and per client), and no request leaves the server (the favicon ships with the app).

Every check is on what the page says, never on how long something took: the test waits
as long as the page asks it to."""
from urllib.parse import urlparse

import pytest

from .browser import CHROMIUM, browser, streamlit_app, wait_until

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")]

PASSWORD = "a long teacher passphrase: seven words, hard to guess"
VIEW = {"width": 1400, "height": 1000}


def _board(context, url):
    page = context.new_page()
    page.set_viewport_size(VIEW)
    page.goto(url + "/Class_board", wait_until="domcontentloaded")
    page.get_by_text("Teacher", exact=True).first.wait_for(timeout=180_000)
    page.get_by_text("Teacher", exact=True).first.click()          # the sidebar's expander
    page.get_by_label("Teacher password").wait_for(timeout=30_000)
    return page


def _attempt(page, password: str, expect: str, timeout_ms: int = 4_000) -> bool:
    """Type a password, press Enter; True when `expect` shows on the page afterwards."""
    box = page.get_by_label("Teacher password")
    box.fill(password)
    box.press("Enter")
    try:
        page.get_by_text(expect).first.wait_for(timeout=timeout_ms)
        return True
    except Exception:       # playwright's TimeoutError: the page said something else
        return False


def test_the_teacher_login_slows_down_per_session_and_per_client(tmp_path):
    outside: list[str] = []
    env = {"XRAY_LAB_TEACHER_PASSWORD": PASSWORD, "XRAY_LAB_HOME": str(tmp_path / "home")}
    with streamlit_app(env) as srv, browser() as b:
        own = urlparse(srv.url).netloc
        ctx = b.new_context()
        ctx.on("request", lambda r: urlparse(r.url).netloc not in (own, "") and outside.append(r.url))
        page = _board(ctx, srv.url)
        other_ctx = b.new_context()                 # a second browser of the same client (127.0.0.1)
        other_ctx.on("request", lambda r: urlparse(r.url).netloc not in (own, "") and outside.append(r.url))
        other = _board(other_ctx, srv.url)

        # Wrong passwords, each tried until the page checks it: the wait after each one doubles.
        for n, wait in enumerate((1, 2, 4, 8, 16), start=1):
            said = f"Wrong password. The next attempt is checked in {wait} s"
            assert wait_until(lambda: _attempt(page, f"guess-{n}", said), timeout=120), \
                f"wrong password {n} was never answered with a {wait} s wait"
        # Now even the right password is refused unchecked: in this tab ...
        assert _attempt(page, PASSWORD, "Too many wrong passwords", timeout_ms=10_000)
        assert page.get_by_text("Teacher view").count() == 0
        # ... and in the other browser of the same client, which never typed a wrong one
        assert _attempt(other, PASSWORD, "Too many wrong passwords", timeout_ms=10_000)
        assert other.get_by_text("Teacher view").count() == 0

        # Once the wait is over, the right password opens the teacher view.
        assert wait_until(lambda: _attempt(page, PASSWORD, "Teacher view", timeout_ms=3_000), timeout=120)
        assert page.get_by_text("Too many wrong passwords").count() == 0

        # The favicon is the app's own, and nothing was fetched from anywhere else.
        icon = page.evaluate("() => Array.from(document.querySelectorAll('link[rel*=icon]')).map(l => l.href)")
        assert icon and all(urlparse(h).netloc == own for h in icon), icon
        assert outside == [], outside
        ctx.close()
        other_ctx.close()
