"""Several replicas on one PostgreSQL (a real server, started by tests/pg.py): what only
the shared-database setup promises. The store's own tests run on PostgreSQL too
(tests/test_store.py is parametrized over both backends)."""
import json

import sqlalchemy as sa

from xray_core.cli.main import main
from xray_core.config import RunConfig
from xray_core.runs.store import RunStore, get_store

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
