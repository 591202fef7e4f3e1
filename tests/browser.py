"""Helpers for tests that drive a real `streamlit run app.py` with headless Chromium.

Chromium comes from Debian (`apt-get install chromium`); Playwright only drives it,
so nothing is downloaded at test time."""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import wait_for  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `streamlit run app.py`: its URL and process (its own process group, so a
    kill -9 also ends the training workers it started)."""

    def __init__(self, url: str, proc: subprocess.Popen):
        self.url, self.proc = url, proc

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):  # leftover workers of this server only
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


@contextlib.contextmanager
def streamlit_app(env: dict | None = None, timeout: float = 90, port: int | None = None, args=()):
    """Start the real app on a free loopback port (or `port`); yield a Server; stop it.
    `args`: more `streamlit run` options, e.g. ("--secrets.files", path)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true",
           "--browser.gatherUsageStats", "false", *args]
    log = open(REPO / ".pytest_cache" / f"streamlit-{port}.log", "w") if (REPO / ".pytest_cache").exists() \
        else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=log, stderr=log,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    server = Server(url, proc)
    try:
        end = time.time() + timeout
        while time.time() < end:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}")
        else:
            raise RuntimeError("streamlit did not become healthy")
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def streamlit_server(env: dict | None = None, timeout: float = 90, with_process: bool = False):
    """Start the real app on a free loopback port; yield its URL (and pid if with_process); stop it."""
    with streamlit_app(env, timeout) as server:
        yield (server.url, server.proc.pid) if with_process else server.url


@contextlib.contextmanager
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


# JS run in the page: how far (in epochs) the live chart's per-batch loss trace reaches.
# (Its point count is capped by downsampling, so progress is read from the last x.)
BATCH_POINTS_JS = """() => {
  const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
  for (const p of plots) {
    for (const t of (p.data || [])) { if (t.name === 'batch loss' && t.x.length) return t.x[t.x.length - 1]; }
  }
  return 0;
}"""


# JS run in the page: where (viewport px) the Classify page's clickable anatomy map shows
# film pixel (fx, fy), after scrolling it into view; null if the map is not on the page.
PICKER_JS = """([fx, fy]) => { for (const p of document.querySelectorAll('.js-plotly-plot')) {
  const t = p._fullLayout && p._fullLayout.title && p._fullLayout.title.text;
  if (t && t.includes('Click a point of the map')) {
    p.scrollIntoView({block: 'center'});
    const r = p.getBoundingClientRect(), L = p._fullLayout;
    return [r.left + L.xaxis._offset + L.xaxis.l2p(fx), r.top + L.yaxis._offset + L.yaxis.l2p(fy)]; } }
  return null; }"""

TITLES_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
  .map(p => (p._fullLayout && p._fullLayout.title && p._fullLayout.title.text) || '')"""


def workspace_of(page) -> str:
    """The ?ws= key the app put in the page's address."""
    from urllib.parse import parse_qs, urlparse
    return parse_qs(urlparse(page.url).query).get("ws", [""])[0]


# the tests' one polling helper, at a pace a browser page can take
wait_until = functools.partial(wait_for, timeout=90.0, every=0.25)
