"""The server stops its runs when it is stopped (issue 22, item 4): `streamlit run app.py`
gets SIGTERM mid-run; its run is then recorded as stopped (not left "training" for the
next server to call interrupted) and none of its training processes is left behind.

xray_ui.install() registers the hook (atexit: Streamlit turns SIGTERM into a normal exit)
that calls xray_core.runs.service.shutdown."""
import os
import signal
import subprocess

import pytest

from xray_core.runs.store import RunStore

from .browser import BATCH_POINTS_JS, CHROMIUM, browser, streamlit_app, wait_until, workspace_of

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")]

LONG = "/?epochs=300&batch_size=16&limit_train=480"   # far from done when the server is stopped
WORKER = "xray_core.train.backends.worker"


def _group(pgid: int) -> list[tuple[int, str, str]]:
    """(pid, state, command) of every live process in process group `pgid` (zombies left out:
    an exited child its parent had no time to reap is gone all the same)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True,
                         check=True).stdout
    rows = []
    for line in out.splitlines():
        pid, group, stat, args = (line.split(None, 3) + [""])[:4]
        if int(group) == pgid and not stat.startswith("Z"):
            rows.append((int(pid), stat, args))
    return rows


def test_sigterm_stops_the_live_run_and_leaves_no_training_process(tmp_path):
    home = tmp_path / "home"
    store = RunStore(home=home)
    with streamlit_app({"XRAY_LAB_HOME": str(home)}) as srv, browser() as b:
        pid = srv.proc.pid          # the server leads its own process group (start_new_session)
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(srv.url + LONG, wait_until="domcontentloaded")
        page.get_by_role("button", name="▶ Train", exact=True).click(timeout=240_000)
        assert wait_until(lambda: page.evaluate(BATCH_POINTS_JS), timeout=240), "the run never showed a batch"
        ws = workspace_of(page)
        runs = store.list_runs(ws)
        assert len(runs) == 1 and runs[0].state == "training"
        workers = [p for p, _, args in _group(pid) if WORKER in args]
        assert workers, f"no training process under the server: {_group(pid)}"   # the default backend

        srv.proc.send_signal(signal.SIGTERM)
        try:
            code = srv.proc.wait(180)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit on SIGTERM; its group: {_group(pid)}")
        assert code == 0, f"the server exited with {code}"

        run = store.get(runs[0].id)
        assert run.state == "stopped", (run.state, run.error)
        assert run.epochs_done < 300      # stopped, not run to its end
        left = [(p, stat, args) for p, stat, args in _group(pid) if p != pid]
        assert not left, f"processes of the stopped server left running: {left}"
        for p in workers:
            assert not _alive(p), f"training process {p} outlived its server"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
