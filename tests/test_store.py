"""The run store on both backends: SQLite (the default, WAL) and a real PostgreSQL
server (tests/pg.py). CRUD, states, workspaces, concurrency from threads and processes,
retention, restart recovery, file removal and the JSON contract."""
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from xray_core.config import RunConfig
from xray_core.runs.store import (MAX_BATCH_POINTS, RunStore, StoreError, get_store, runs as runs_table)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

# A second "server" process writing runs into the same store.
WRITER = """
import sys
from xray_core.runs.store import RunStore
url, home, ws, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = RunStore(url, home)
for i in range(n):
    r = s.create_run(ws, {"epochs": 3, "arch": "fc", "activation": "relu"})
    for e in range(1, 4):
        s.update_progress(r.id, state="training", epochs_done=e, history={"loss": [1.0 / k for k in range(1, e + 1)]})
    s.finish(r.id, "finished", result={"test": {"accuracy": 0.5, "loss": 1.0}})
print("ok")
"""

# A server process that is training (2 epochs recorded) when it is killed.
HOLDER = """
import sys, time
from xray_core.runs.store import RunStore
s = RunStore(sys.argv[1], sys.argv[2])
r = s.create_run("ws", {"epochs": 5})
s.update_progress(r.id, state="training", epochs_done=2, history={"loss": [1.0, 0.8], "accuracy": [0.4, 0.5]})
print(r.id, flush=True)
time.sleep(300)
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'runs.sqlite3'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(backend_url, tmp_path):
    s = RunStore(backend_url, home=tmp_path / "home")
    yield s
    s.close()


def _finished(store, ws="ws", model_bytes: int | None = None, tmp: Path | None = None, **kw):
    r = store.create_run(ws, RunConfig(epochs=2))
    store.update_progress(r.id, state="training", epochs_done=2,
                          history={"loss": [1.0, 0.5], "accuracy": [0.5, 0.7], "val_loss": [1.1, 0.6],
                                   "val_accuracy": [0.4, 0.6]})
    src = None
    if model_bytes is not None:
        src = tmp / f"{r.id}.keras"
        src.write_bytes(b"k" * model_bytes)
    return store.finish(r.id, "finished", result={"test": {"accuracy": 0.75, "loss": 0.6}, "train_accuracy": 0.7,
                                                  "params": 353254}, model_src=src, **kw)


# ---- CRUD and states -------------------------------------------------------------

def test_create_get_and_list_newest_first(store):
    a = store.create_run("ws", RunConfig(epochs=3), label="first")
    b = store.create_run("ws", RunConfig(activation="leaky_relu", epochs=40, batch_size=32, batch_norm=True))
    assert (a.state, a.epochs, a.epochs_done, a.label, a.preset) == ("queued", 3, 0, "first", None)
    assert b.preset == "p1-task5" and b.label == "p1-task5"      # matched to the course preset
    assert b.config == RunConfig(activation="leaky_relu", epochs=40, batch_size=32,
                                 batch_norm=True).resolved().to_dict()
    assert [r.id for r in store.list_runs("ws")] == [b.id, a.id]
    assert store.get(a.id).label == "first" and store.get("0123456789abcdef") is None
    assert store.get("../../etc") is None
    assert [r.id for r in store.list_runs("ws", preset="p1-task5")] == [b.id]


def test_progress_is_written_as_the_run_goes(store, backend_url, tmp_path):
    r = store.create_run("ws", RunConfig(epochs=5))
    n = 5000
    store.update_progress(r.id, state="training", epochs_done=2, started_at=123.0,
                          history={"loss": [float("nan"), 0.9], "accuracy": [0.3, 0.5]},
                          batch_loss=[float(i) for i in range(n)], batch_epoch=[i / 1000 for i in range(n)])
    # another store object (another server) reads what this one wrote, mid-run
    other = RunStore(backend_url, home=tmp_path / "home")
    got = other.get(r.id)
    other.close()
    assert (got.state, got.epochs_done, got.started_at) == ("training", 2, 123.0)
    assert got.history["loss"] == [None, 0.9] and got.history["val_loss"] == []   # NaN kept as null
    assert len(got.batch_loss) == MAX_BATCH_POINTS == len(got.batch_epoch)
    assert got.batch_loss[0] == 0.0 and got.batch_loss[-1] == n - 1 and got.batch_epoch[-1] == (n - 1) / 1000
    assert got.batch_loss == sorted(got.batch_loss)


def test_states_and_no_revival(store):
    for state in ("finished", "stopped", "failed", "interrupted"):
        r = store.create_run("ws", RunConfig(epochs=1))
        store.update_progress(r.id, state="training")
        done = store.finish(r.id, state, error="boom\nsecond line" if state == "failed" else None)
        assert done.state == state and done.finished_at is not None
        store.update_progress(r.id, state="training", epochs_done=1)     # a late writer
        assert store.get(r.id).state == state and store.get(r.id).epochs_done == 0
    assert store.list_runs("ws", states=["failed"])[0].error == "boom"
    with pytest.raises(StoreError):
        store.finish(r.id, "training")
    with pytest.raises(StoreError):
        store.update_progress(r.id, state="finished")
    with pytest.raises(StoreError):
        store.finish("0123456789abcdef", "finished")


def test_workspaces_never_see_each_other(store):
    a = store.create_run("alice-ws", RunConfig())
    b = store.create_run("bob_ws", RunConfig())
    assert [r.id for r in store.list_runs("alice-ws")] == [a.id]
    assert [r.id for r in store.list_runs("bob_ws")] == [b.id]
    assert {r.id for r in store.list_runs()} == {a.id, b.id}
    for bad in ("", "a" * 65, "../x", "a b", "ws;drop", None):
        with pytest.raises(StoreError):
            store.create_run(bad, RunConfig())
        with pytest.raises(StoreError):
            store.list_runs(bad or "")


def test_sharing_and_groups(store):
    r = store.create_run("ws", RunConfig())
    store.set_shared(r.id, True, nickname="  Ada   L. ")
    assert [x.nickname for x in store.list_runs(shared_only=True)] == ["Ada L."]
    store.set_shared(r.id, False)
    assert store.list_runs(shared_only=True) == [] and store.get(r.id).nickname == "Ada L."
    with pytest.raises(StoreError):
        store.set_shared("0123456789abcdef", True)
    g = store.create_group("ws", "repeat", {"n": 3})
    r2 = store.create_run("ws", RunConfig(), group_id=g)
    assert store.get_group(g)["spec"] == {"n": 3} and store.get_group(g)["kind"] == "repeat"
    assert [x["id"] for x in store.list_groups("ws")] == [g] and store.list_groups("other") == []
    assert [x.id for x in store.list_runs("ws", group_id=g)] == [r2.id]
    with pytest.raises(StoreError):
        store.create_group("ws", "party", {})


def test_delete_removes_the_model_files(store, tmp_path):
    rec = _finished(store, model_bytes=1000, tmp=tmp_path)
    path = Path(rec.model_path)
    assert path == store.home / "models" / rec.id / "model.keras" and path.stat().st_size == 1000
    assert store.delete(rec.id) is True
    assert not path.parent.exists() and store.get(rec.id) is None
    assert store.delete(rec.id) is False and store.delete("../home") is False


def test_to_json_contract(store, tmp_path):
    rec = _finished(store, model_bytes=10, tmp=tmp_path)
    j = rec.to_json()
    assert set(j) == {"id", "workspace", "state", "epochs_done", "epochs", "config", "preset", "label", "group_id",
                      "history", "test", "train_accuracy", "val_accuracy", "params", "timing", "model", "error",
                      "created_at", "finished_at", "nickname", "shared"}
    assert set(j["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert (j["state"], j["epochs_done"], j["test"]["accuracy"], j["params"]) == ("finished", 2, 0.75, 353254)
    assert j["model"] == rec.model_path and Path(j["model"]).is_file()
    live = store.create_run("ws", RunConfig()).to_json()
    assert live["test"] is None and live["model"] is None


# ---- concurrency -----------------------------------------------------------------

def test_concurrent_writers_from_threads(store):
    errors = []

    def work(k):
        try:
            for _ in range(6):
                r = store.create_run(f"t{k}", RunConfig(epochs=3))
                for e in range(1, 4):
                    store.update_progress(r.id, state="training", epochs_done=e, history={"loss": [0.5] * e})
                    store.heartbeat(r.id)
                store.finish(r.id, "finished", result={"test": {"accuracy": 0.5}})
        except Exception as e:  # pragma: no cover - the assertion below reports it
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    for k in range(6):
        runs = store.list_runs(f"t{k}")
        assert len(runs) == 6 and all(r.state == "finished" and r.epochs_done == 3 for r in runs)


def test_concurrent_writers_from_two_processes(store):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, store.url, str(store.home), f"p{k}", "15"],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    for _ in range(10):  # and this process writes at the same time
        r = store.create_run("p-main", RunConfig(epochs=1))
        store.finish(r.id, "finished")
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err[-500:]
    for ws, n in (("p0", 15), ("p1", 15), ("p-main", 10)):
        runs = store.list_runs(ws)
        assert len(runs) == n and all(r.state == "finished" for r in runs)
    assert all(r.epochs_done == 3 and r.history["loss"] == [1.0, 0.5, 1 / 3] for r in store.list_runs("p0"))


def test_two_stores_on_one_database_see_each_others_runs(store, backend_url):
    other = RunStore(backend_url, home=store.home)   # a second server process on the same store
    try:
        a = store.create_run("ws", RunConfig())
        b = other.create_run("ws", RunConfig(epochs=2))
        other.update_progress(b.id, state="training", epochs_done=1)
        assert {r.id for r in other.list_runs("ws")} == {a.id, b.id} == {r.id for r in store.list_runs("ws")}
        assert store.get(b.id).epochs_done == 1
        store.delete(b.id)
        assert other.get(b.id) is None
    finally:
        other.close()


# ---- retention -------------------------------------------------------------------

def test_retention_drops_oldest_models_and_keeps_records(store, tmp_path, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_MAX_MODELS", "2")
    recs = [_finished(store, model_bytes=100, tmp=tmp_path) for _ in range(4)]
    got = {r.id: r for r in store.list_runs("ws")}
    assert [got[r.id].model_path is not None for r in recs] == [False, False, True, True]
    assert not (store.home / "models" / recs[0].id).exists()
    assert all(got[r.id].history["loss"] == [1.0, 0.5] and got[r.id].test for r in recs)  # records stay
    other = _finished(store, ws="other", model_bytes=100, tmp=tmp_path)   # caps are per workspace
    assert store.get(other.id).model_path is not None and store.get(recs[3].id).model_path is not None


def test_retention_counts_a_models_age_from_when_it_was_made(store, tmp_path, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_MAX_MODELS", "1")
    long_run = store.create_run("ws", RunConfig())          # started first, finishes last
    quick = _finished(store, model_bytes=10, tmp=tmp_path)
    src = tmp_path / "long.keras"
    src.write_bytes(b"x")
    store.finish(long_run.id, "finished", model_src=src)
    assert store.get(long_run.id).model_path is not None and store.get(quick.id).model_path is None


def test_retention_caps_runs_per_workspace_but_never_a_live_run(store, tmp_path, monkeypatch):
    live = store.create_run("ws", RunConfig())
    store.update_progress(live.id, state="training")
    old = _finished(store, model_bytes=10, tmp=tmp_path)
    monkeypatch.setenv("XRAY_LAB_MAX_RUNS", "2")
    newer = [_finished(store) for _ in range(2)]
    ids = {r.id for r in store.list_runs("ws")}
    assert ids == {live.id} | {r.id for r in newer}
    assert not (store.home / "models" / old.id).exists()


def test_retention_total_disk_cap_drops_oldest_models_everywhere(store, tmp_path, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_MAX_DISK_MB", "1")
    a = _finished(store, ws="w1", model_bytes=400_000, tmp=tmp_path)
    b = _finished(store, ws="w2", model_bytes=400_000, tmp=tmp_path)
    c = _finished(store, ws="w3", model_bytes=400_000, tmp=tmp_path)   # 1.2 MB > 1 MiB: a goes
    kept = [store.get(r.id).model_path is not None for r in (a, b, c)]
    assert kept == [False, True, True]
    assert store.get(a.id).test["accuracy"] == 0.75


# ---- restart recovery --------------------------------------------------------------

def test_recover_marks_runs_of_dead_processes_interrupted(store):
    def holder():
        p = subprocess.Popen([sys.executable, "-c", HOLDER, store.url, str(store.home)], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return p, p.stdout.readline().strip()

    (dead, dead_id), (alive, alive_id) = holder(), holder()
    try:
        assert dead_id and alive_id, dead.stderr.read() if not dead_id else alive.stderr.read()
        dead.kill()            # kill -9 mid-run
        dead.wait(30)
        # a run on another host whose heartbeat stopped, and one still beating
        far = store.create_run("ws", RunConfig())
        near = store.create_run("ws", RunConfig())
        with store.engine.begin() as conn:
            conn.execute(sa.update(runs_table).where(runs_table.c.id == far.id)
                         .values(owner="elsewhere:4242", heartbeat_at=time.time() - 120, state="training"))
            conn.execute(sa.update(runs_table).where(runs_table.c.id == near.id)
                         .values(owner="elsewhere:4242", heartbeat_at=time.time(), state="training"))
        assert sorted(store.recover(stale_seconds=30)) == sorted([dead_id, far.id])
        r = store.get(dead_id)
        assert (r.state, r.epochs_done, r.history["loss"]) == ("interrupted", 2, [1.0, 0.8])
        assert r.error == "interrupted at epoch 2: the server stopped"
        assert store.get(alive_id).state == "training" and store.get(near.id).state == "training"
        assert store.recover() == []
        # a live pid on this host outweighs a late heartbeat (a busy machine)...
        with store.engine.begin() as conn:
            conn.execute(sa.update(runs_table).where(runs_table.c.id == alive_id)
                         .values(heartbeat_at=time.time() - 60))
        assert store.recover(stale_seconds=30) == []
        # ...unless it is far too late: the pid must belong to another program by now
        with store.engine.begin() as conn:
            conn.execute(sa.update(runs_table).where(runs_table.c.id == alive_id)
                         .values(heartbeat_at=time.time() - 400))
        assert store.recover(stale_seconds=30) == [alive_id]
    finally:
        alive.kill()
        alive.wait(30)


def test_recover_treats_our_own_pid_from_before_we_started_as_dead(store):
    # a container restart gives the new server the old one's pid
    r = store.create_run("ws", RunConfig())
    with store.engine.begin() as conn:
        conn.execute(sa.update(runs_table).where(runs_table.c.id == r.id)
                     .values(heartbeat_at=time.time() - 3600, state="training"))
    fresh = store.create_run("ws", RunConfig())   # written by this process: its recorder may start any moment
    assert store.recover(stale_seconds=1e9) == [r.id]
    assert store.get(fresh.id).state == "queued"


def test_recover_sees_a_reused_pid_as_a_new_process(store):
    """Pids wrap (32768 here): a server killed with -9 whose pid a later process got is
    dead all the same, because the owner carries the process's start time."""
    import socket
    from xray_core.runs.store import owner_id, proc_start
    me = os.getpid()
    assert owner_id() == f"{socket.gethostname()}:{me}@{proc_start(me)}"
    reused = store.create_run("ws", RunConfig())
    ours = store.create_run("ws", RunConfig())
    old = store.create_run("ws", RunConfig())
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])   # a live pid, not us
    try:
        host, start = socket.gethostname(), proc_start(helper.pid)
        with store.engine.begin() as conn:
            for run, owner in ((reused, f"{host}:{helper.pid}@{start - 1}"),   # that pid, an earlier process
                               (ours, f"{host}:{helper.pid}@{start}"),          # that very process
                               (old, f"{host}:{helper.pid}")):                 # written before the start time
                conn.execute(sa.update(runs_table).where(runs_table.c.id == run.id)
                             .values(owner=owner, heartbeat_at=time.time() - 60, state="training"))
        assert store.recover(stale_seconds=30) == [reused.id]
        assert store.get(ours.id).state == store.get(old.id).state == "training"
    finally:
        helper.kill()
        helper.wait(30)


# ---- SQLite specifics, the process-wide store, bad URLs ---------------------------

def test_sqlite_is_in_wal_mode_and_readers_do_not_block_writers(tmp_path):
    s = RunStore(home=tmp_path)
    assert s.db_path == tmp_path / "runs.sqlite3"
    reader = sqlite3.connect(s.db_path, timeout=1, isolation_level=None)
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.create_run("ws", RunConfig())
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM runs").fetchone()[0] == 1   # an open read transaction
    done = threading.Event()
    threading.Thread(target=lambda: (s.create_run("ws", RunConfig()), done.set()), daemon=True).start()
    # without WAL the writer would wait for the reader (30 s busy timeout)
    assert done.wait(10)
    assert reader.execute("SELECT count(*) FROM runs").fetchone()[0] == 1     # the reader's snapshot
    reader.execute("COMMIT")
    assert reader.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
    reader.close()
    s.close()


def test_get_store_is_process_wide_and_follows_the_env(tmp_path, monkeypatch):
    a = get_store()
    assert get_store() is a and a.home == Path(os.environ["XRAY_LAB_HOME"])
    results = []
    threads = [threading.Thread(target=lambda: results.append(get_store())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is a for r in results)
    monkeypatch.setenv("XRAY_LAB_HOME", str(tmp_path / "elsewhere"))
    b = get_store()
    assert b is not a and b.db_path == tmp_path / "elsewhere" / "runs.sqlite3"


@pytest.mark.parametrize("url", ["mysql://u@h/db", "sqlite://", "not a url at all"])
def test_unsupported_urls_are_one_line_errors(url, tmp_path):
    with pytest.raises(StoreError) as e:
        RunStore(url, home=tmp_path)
    assert "\n" not in str(e.value)
