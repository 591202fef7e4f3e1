"""Several replicas on one PostgreSQL (a real server, started by tests/pg.py): what only
the shared-database setup promises. The store's own tests run on PostgreSQL too
(tests/test_store.py is parametrized over both backends)."""
import json
import threading

import pytest
import sqlalchemy as sa

from xray_core.cli.main import main
from xray_core.config import RunConfig
from xray_core.runs import classes
from xray_core.runs.store import RunStore, StoreError, get_store

from .fixtures_data import course_layout, rids


def test_the_server_is_a_real_postgresql_holding_the_runs(pg_url, tmp_path):
    s = RunStore(pg_url, home=tmp_path)
    try:
        r = s.create_run("ws", RunConfig(epochs=2))
        s.update_progress(r.id, state="training", epochs_done=1, history={"loss": [0.9]})
        with s.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version()")).scalar().startswith("PostgreSQL ")
            row = conn.execute(sa.text("SELECT state, epochs_done, history->'loss' FROM runs WHERE id = :i"),
                               {"i": r.id}).one()
        assert tuple(row) == ("training", 1, [0.9])
    finally:
        s.close()


def test_two_replicas_with_their_own_homes_share_runs(pg_url, tmp_path):
    """Two app servers on two hosts: one database, each its own XRAY_LAB_HOME."""
    a = RunStore(pg_url, home=tmp_path / "host-a")
    b = RunStore(pg_url, home=tmp_path / "host-b")
    try:
        model = tmp_path / "m.keras"
        model.write_bytes(b"weights")
        ra = a.create_run("class-ws", RunConfig())
        a.finish(ra.id, "finished", result={"test": {"accuracy": 0.8, "loss": 0.5}}, model_src=model)
        rb = b.create_run("class-ws", RunConfig(epochs=3))
        b.update_progress(rb.id, state="training", epochs_done=2)
        assert {r.id for r in a.list_runs("class-ws")} == {r.id for r in b.list_runs("class-ws")} == {ra.id, rb.id}
        assert b.get(ra.id).test["accuracy"] == 0.8 and a.get(rb.id).epochs_done == 2
        # the model file lives on host a: b reports it as not available rather than a dead path
        assert a.get(ra.id).model_path is not None and b.get(ra.id).model_path is None
        # b's writer is alive (fresh heartbeat, another "host" as far as a can tell): not interrupted
        assert a.recover(stale_seconds=30) == []
    finally:
        a.close()
        b.close()


def test_the_cli_records_into_postgresql(pg_url, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    course_layout(data, {"train": rids(4), "validation": rids(2, "V"), "test": rids(2, "T")}, per_class=4)
    monkeypatch.setenv("XRAY_LAB_DB", pg_url)
    assert main(["train", "--data", str(data), "--epochs", "1", "--batch-size", "8", "--workspace", "pg-ws",
                 "--json", str(tmp_path / "t.json")]) == 0
    run_id = json.loads((tmp_path / "t.json").read_text())["run_id"]
    capsys.readouterr()
    assert main(["runs", "list", "--workspace", "pg-ws", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed] == [run_id] and listed[0]["state"] == "finished"
    assert get_store().dialect == "postgresql"
    other = RunStore(pg_url, home=tmp_path / "other-host")      # another replica sees it
    try:
        assert other.get(run_id).history["loss"] == listed[0]["history"]["loss"]
    finally:
        other.close()


def test_replicas_share_a_class_experiment_and_its_turns(pg_url, tmp_path):
    """The teacher opens it on one replica; students join on two at once: one sequence of turns,
    round-robin, distinct seeds; either replica's status counts every finished run."""
    a = RunStore(pg_url, home=tmp_path / "host-a")
    b = RunStore(pg_url, home=tmp_path / "host-b")
    try:
        with a.engine.connect() as conn:     # the new tables are real PostgreSQL tables
            names = set(sa.inspect(conn).get_table_names())
        assert {"class_experiments", "class_assignments", "run_stops"} <= names
        cid = classes.open(["p1-task1", "p1-task2"], "LeakyReLU?", store=a)
        got, errors = [], []

        def join(store, i):
            try:
                for _ in range(6):
                    got.append(classes.assign(cid, f"ws{i}", store=store))
            except Exception as e:  # noqa: BLE001  (reported below)
                errors.append(e)

        threads = [threading.Thread(target=join, args=(s, i)) for i, s in enumerate([a, b, a, b])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert sorted(x.number for x in got) == list(range(24)) == sorted(x.seed for x in got)
        counts = [sum(x.setup == k for x in got) for k in (0, 1)]
        assert abs(counts[0] - counts[1]) <= 4 and sum(counts) == 24   # concurrent turns may read counts a step late
        for x in got[:8]:
            store = a if x.number % 2 else b
            r = store.create_run("ws", x.config, group_id=cid)
            store.finish(r.id, "finished", result={"test": {"accuracy": 0.5 + 0.1 * x.setup, "loss": 1.0}})
        sa_, sb_ = classes.status(cid, store=a), classes.status(cid, store=b)
        assert sa_["setups"] == sb_["setups"] and sum(s["n"] for s in sa_["setups"]) == 8
        assert classes.close(cid, store=b)["state"] == "closed"
        assert classes.status(cid, store=a)["state"] == "closed"
    finally:
        a.close()
        b.close()


def test_a_stop_asked_on_one_replica_is_seen_by_the_other(pg_url, tmp_path):
    a = RunStore(pg_url, home=tmp_path / "host-a")
    b = RunStore(pg_url, home=tmp_path / "host-b")
    try:
        r = a.create_run("ws", RunConfig(epochs=3))
        a.update_progress(r.id, state="training", epochs_done=1)
        assert not a.stop_requested(r.id)
        b.request_stop(r.id)
        b.request_stop(r.id)                     # twice is once
        assert a.stop_requested(r.id)
        a.finish(r.id, "stopped")
        with pytest.raises(StoreError, match="not queued or training"):
            b.request_stop(r.id)
    finally:
        a.close()
        b.close()
