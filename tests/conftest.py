"""Shared fixtures: a tiny learnable dataset made in code, and the real data's location.

XRAY_LAB_REQUIRE_ALL=1 (set by .ci/run): a skipped test fails the run, with its skip
reason, and so does a missing ../shared/data -- CI must not pass by not testing."""
import os
from pathlib import Path

import time

import numpy as np
import pytest

import xray_ui
from xray_core.data.dataset import Dataset, Split

from .pg import pg_server, pg_url  # noqa: F401  (fixtures: one real PostgreSQL for the whole session)

xray_ui.install()   # Streamlit's patches in place before any AppTest runs, as in the server

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REQUIRE_ALL = os.environ.get("XRAY_LAB_REQUIRE_ALL") == "1"


def pytest_sessionstart(session):
    if REQUIRE_ALL and not (SHARED_DATA / "jsrt_patches").is_dir():
        raise pytest.UsageError(f"XRAY_LAB_REQUIRE_ALL=1 but the real data is missing at {SHARED_DATA}")


def pytest_sessionfinish(session, exitstatus):
    """Let the engine's background threads end before Python finalizes: TensorFlow aborts
    the whole process ("terminate called after throwing an instance of ''") when the
    interpreter tears down a daemon thread that is inside TF, which would turn a green
    run into exit code 134."""
    import threading

    from xray_core.train.job import live_jobs
    for job in live_jobs():
        job.stop()
    deadline = time.monotonic() + 120
    for t in threading.enumerate():
        if t.daemon and t.name.startswith("xray-") and t.name != "xray-lab-ray-reaper":
            t.join(max(0.0, deadline - time.monotonic()))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under XRAY_LAB_REQUIRE_ALL=1 a skip (in setup or in the test) is reported as a failure."""
    outcome = yield
    rep = outcome.get_result()
    if REQUIRE_ALL and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped, but XRAY_LAB_REQUIRE_ALL=1 forbids skips: {reason}"


def make_split(n: int, seed: int) -> Split:
    """Patches whose class shows as a brightness level plus a class-specific stripe."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.random((n, 32, 32, 1)).astype("float32") * 0.3
    x += (y * 0.15)[:, None, None, None]
    for k in range(4):
        x[y == k, 8 * k:8 * k + 8, :, 0] += 0.25
    return Split(np.clip(x, 0, 1).astype("float32"), y.astype("int64"),
                 np.array([f"R{i // 16:04d}" for i in range(n)]))


@pytest.fixture(scope="session", autouse=True)
def _session_lab_home(tmp_path_factory):
    """No test (nor a module-scoped fixture, set up before function ones) writes runs
    into the real XRAY_LAB_HOME."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XRAY_LAB_HOME", str(tmp_path_factory.mktemp("lab-home-session")))
        mp.delenv("XRAY_LAB_DB", raising=False)
        yield


@pytest.fixture(autouse=True)
def _lab_home(tmp_path_factory, monkeypatch):
    """Each test gets its own empty run store."""
    monkeypatch.setenv("XRAY_LAB_HOME", str(tmp_path_factory.mktemp("lab-home")))
    monkeypatch.delenv("XRAY_LAB_DB", raising=False)


@pytest.fixture(scope="session")
def toy_dataset() -> Dataset:
    return Dataset("toy", {"train": make_split(640, 1), "validation": make_split(128, 2),
                           "test": make_split(128, 3)})


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "jsrt_patches").is_dir():
        pytest.skip("../shared/data is not present on this machine")
    return SHARED_DATA


def wait_for(pred, timeout: float = 120.0, every: float = 0.02):
    """Poll pred() until it returns something true, and return that (None when the time
    is up). The one polling helper of the tests: every wait in them is bounded."""
    end = time.time() + timeout
    while time.time() < end:
        value = pred()
        if value:
            return value
        time.sleep(every)
    return None
