"""Hostile input against the server, as an untrusted student would try it: paths,
links, model bombs, concurrent same-zip uploads, a hung worker, the queue cap and
one job per owner. Every refusal is one line and leaves the server working."""
import os
import signal
import threading
import zipfile

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from xray_core.data import roots
from xray_core.config import RunConfig
from xray_core.errors import DataError
from xray_core.train.job import DONE, FAILED, STOPPED, Scheduler, TrainingJob
from xray_core.train.backends.worker import HUNG, WorkerPool
from xray_core.train.backends.worker import InWorker

from .conftest import wait_for
from .fixtures_data import course_layout, rids, zip_dir
from .test_app_train import APP
from .test_modelcheck import _rss_mb, craft, insert_dense

FAST = RunConfig(epochs=3, batch_size=32, lr=1e-3)
LONG = FAST.replace(epochs=500, batch_size=8)


# ---- paths and links -----------------------------------------------------------------------

@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "root"
    course_layout(root / "course", {"train": rids(2, "A"), "test": rids(1, "T")}, per_class=2)
    course_layout(tmp_path / "secret", {"train": rids(2, "S")}, per_class=2)
    os.symlink(tmp_path / "secret", root / "escape")
    monkeypatch.setenv(roots.ENV, str(root))
    roots.clear_cache()
    yield root
    roots.clear_cache()


@pytest.mark.parametrize("name", ["../secret", "/etc", "/etc/passwd", "escape", "course/../../secret",
                                  "course\0", "../../..", "~", "%2e%2e/secret", "course/../course"])
def test_paths_outside_the_roots_are_refused_alike(data_root, tmp_path, name):
    with pytest.raises(DataError) as e:
        roots.resolve(name)
    assert str(e.value) == roots.REFUSED and str(tmp_path) not in str(e.value)


def _open_link(query: dict) -> AppTest:
    st.cache_resource.clear()
    app = AppTest.from_file(APP, default_timeout=120)
    for k, v in query.items():
        app.query_params[k] = v
    return app.run()


def _shown(app) -> list[str]:
    return [m.value for m in (*app.error, *app.info, *app.warning)]


@pytest.mark.parametrize("data", ["/etc", "../..", "../secret", "escape", "/etc/passwd", "course/../../secret"])
def test_a_link_cannot_load_anything_outside_the_roots(data_root, tmp_path, data):
    app = _open_link({"data": data})
    assert not app.exception
    assert app.selectbox(key="data_path").value is None and app.button(key="train").disabled
    assert any("not available on this server" in m for m in _shown(app))
    assert not any(str(tmp_path) in m or "/etc" in m for m in _shown(app))


def test_a_link_naming_a_dataset_under_a_root_loads_it_and_keeps_its_name(data_root):
    app = _open_link({"data": "course"})
    assert not app.exception and app.selectbox(key="data_path").value == "course"
    assert not app.button(key="train").disabled
    assert app.query_params["data"] == ["course"] or app.query_params["data"] == "course"


# ---- model bombs -------------------------------------------------------------------------

def test_a_model_bomb_uploaded_on_the_classify_page_is_one_line_and_costs_no_memory(tmp_path):
    import keras
    base = tmp_path / "tiny.keras"
    keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(name="flatten"),
                      keras.layers.Dense(4, activation="softmax", name="output")]).save(base)
    with zipfile.ZipFile(base) as z:
        members = {n: z.read(n) for n in z.namelist()}
    bomb = craft(tmp_path, members, insert_dense(1_000_000), name="bomb.keras")
    st.cache_resource.clear()
    app = AppTest.from_file(APP, default_timeout=120).run()
    app.switch_page("pages/2_Classify.py").run()
    before = _rss_mb()
    with open(bomb, "rb") as fh:
        app.file_uploader(key="model_upload").set_value(("bomb.keras", fh.read(), "application/octet-stream")).run()
    assert _rss_mb() - before < 50
    errs = [e.value for e in app.error]
    assert not app.exception and len(errs) == 1
    assert errs[0].startswith("bomb.keras:") and "parameters" in errs[0] and "/tmp" not in errs[0]


# ---- uploads -------------------------------------------------------------------------------

def test_the_same_dataset_zip_uploaded_by_many_students_at_once(tmp_path, monkeypatch):
    from xray_ui.session import uploaded_zip_path
    monkeypatch.setenv("XRAY_LAB_HOME", str(tmp_path / "home"))
    course_layout(tmp_path / "ds", {"train": rids(3, "Z")}, per_class=4)
    data = zip_dir(tmp_path / "ds", tmp_path / "ds.zip").read_bytes()
    for _ in range(20):
        out, errs = [], []
        gate = threading.Barrier(6)

        def student():
            try:
                gate.wait()
                out.append(uploaded_zip_path(data))
            except Exception as e:  # noqa: BLE001 -- any failure is the bug
                errs.append(e)
        ts = [threading.Thread(target=student) for _ in range(6)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert not errs and len(set(out)) == 1
        with zipfile.ZipFile(out[0]) as z:
            assert z.testzip() is None
        os.unlink(out[0])               # next round races on a fresh file
    assert str(tmp_path / "home") in out[0]


# ---- workers -------------------------------------------------------------------------------

@pytest.fixture
def pool(monkeypatch):
    p = WorkerPool(max_runs=5)
    monkeypatch.setattr("xray_core.train.backends.worker.POOL", p)
    yield p
    for w in list(p.busy):
        w.kill()
    p.shutdown()


def _busy_worker(pool, job):
    # generous: this starts a TensorFlow process (slow on a loaded machine)
    assert wait_for(lambda: len(job.snapshot().batch_loss) > 0 and pool.busy, timeout=300), \
        (job.snapshot().state, job.snapshot().error)
    return next(iter(pool.busy))


def test_a_worker_that_stops_reporting_is_killed_and_its_job_fails_with_the_reason(
        toy_dataset, pool, monkeypatch):
    job = TrainingJob(LONG, toy_dataset, scheduler=Scheduler(1), trainer=InWorker()).start()
    w = _busy_worker(pool, job)                # default rule while TensorFlow warms up
    monkeypatch.setenv("XRAY_LAB_WORKER_SILENT_SECONDS", "3")
    os.kill(w.pid, signal.SIGSTOP)            # hung: alive, silent
    job.join(60)
    s = job.snapshot()
    assert s.state == FAILED and s.error == HUNG
    assert w.process.poll() is not None       # killed, not left behind
    assert not pool.busy


def test_a_worker_deaf_to_stop_is_killed_within_seconds(toy_dataset, pool, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_WORKER_SILENT_SECONDS", "600")   # only the Stop rule applies
    job = TrainingJob(LONG, toy_dataset, scheduler=Scheduler(1), trainer=InWorker()).start()
    w = _busy_worker(pool, job)
    monkeypatch.setenv("XRAY_LAB_STOP_SECONDS", "2")
    os.kill(w.pid, signal.SIGSTOP)
    job.stop()
    job.join(60)
    assert job.snapshot().state == FAILED and job.snapshot().error == HUNG
    assert w.process.poll() is not None


def test_a_hung_idle_worker_is_replaced_when_a_job_needs_it(toy_dataset, pool):
    w = pool.acquire()
    pool.release(w)
    os.kill(w.pid, signal.SIGSTOP)
    s = TrainingJob(FAST, toy_dataset, scheduler=Scheduler(1), trainer=InWorker()).start().join(180).snapshot()
    assert s.state == DONE and w.process.poll() is not None


def test_a_job_over_the_time_limit_is_stopped_and_kept_with_the_reason(toy_dataset, pool, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_MAX_JOB_SECONDS", "3")
    job = TrainingJob(LONG, toy_dataset, scheduler=Scheduler(1), trainer=InWorker()).start()
    job.join(120)
    s = job.snapshot()
    assert s.state == STOPPED and "time limit" in s.error and job.model is not None
    assert 0 < s.epoch < LONG.epochs


def test_workers_are_niced_first_for_the_oom_killer_memory_capped_and_thread_limited(pool, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_WORKER_MEM_MB", "5000")
    from xray_core.train.job import SCHEDULER
    w = pool.acquire()
    try:
        assert os.getpriority(os.PRIO_PROCESS, w.pid) >= os.getpriority(os.PRIO_PROCESS, 0) + 10 \
            or os.getpriority(os.PRIO_PROCESS, w.pid) == 19
        assert open(f"/proc/{w.pid}/oom_score_adj").read().strip() == "1000"
        limits = open(f"/proc/{w.pid}/limits").read()
        data_line = next(l for l in limits.splitlines() if l.startswith("Max data size"))
        assert str(5000 << 20) in data_line.split()
        env = dict(kv.split("=", 1) for kv in open(f"/proc/{w.pid}/environ").read().split("\0") if "=" in kv)
        assert env["TF_NUM_INTRAOP_THREADS"] == str(max(1, (os.cpu_count() or 1) // SCHEDULER.cap))
        assert open(f"/proc/{os.getpid()}/oom_score_adj").read().strip() != "1000"   # never the server
    finally:
        pool.release(w)


# ---- scheduler ---------------------------------------------------------------------------

def test_a_full_queue_refuses_with_a_clear_busy_message(toy_dataset):
    sched = Scheduler(cap=1, max_queue=2)
    a = TrainingJob(LONG, toy_dataset, scheduler=sched).start()
    assert wait_for(lambda: a.snapshot().state == "training")
    waiting = [TrainingJob(FAST, toy_dataset, scheduler=sched).start() for _ in range(2)]
    assert wait_for(lambda: sched.status()["waiting"] == 2)
    late = TrainingJob(FAST, toy_dataset, scheduler=sched).start().join(10).snapshot()
    assert late.state == FAILED
    assert late.error == "The server is busy: 2 runs are waiting. Try again in a few minutes."
    for j in (a, *waiting):
        j.stop()
        j.join(60)
    assert sched.status() == {"cap": 1, "running": 0, "waiting": 0, "held": 0}


def test_one_queued_or_running_train_page_job_per_owner(toy_dataset):
    sched = Scheduler(cap=2)
    a = TrainingJob(LONG, toy_dataset, scheduler=sched, owner="ws-1", alone=True).start()
    assert wait_for(lambda: a.snapshot().state == "training")
    again = TrainingJob(FAST, toy_dataset, scheduler=sched, owner="ws-1", alone=True).start().join(10).snapshot()
    assert again.state == FAILED and "already have a run" in again.error and "\n" not in again.error
    other = TrainingJob(FAST, toy_dataset, scheduler=sched, owner="ws-2", alone=True).start().join(120).snapshot()
    assert other.state == DONE
    a.stop()
    a.join(60)
    after = TrainingJob(FAST, toy_dataset, scheduler=sched, owner="ws-1", alone=True).start().join(120).snapshot()
    assert after.state == DONE                  # the owner may train again once its job ended
