"""Helpers for tests that drive a real `streamlit run app.py` with headless Chromium.

Chromium comes from Debian (`apt-get install chromium`); Playwright only drives it,
so nothing is downloaded at test time."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(env: dict | None = None, timeout: float = 90, with_process: bool = False):
    """Start the real app on a free loopback port; yield its URL (and pid if with_process); stop it."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true",
           "--browser.gatherUsageStats", "false"]
    log = open(REPO / ".pytest_cache" / f"streamlit-{port}.log", "w") if (REPO / ".pytest_cache").exists() \
        else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
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
        yield (url, proc.pid) if with_process else url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


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
