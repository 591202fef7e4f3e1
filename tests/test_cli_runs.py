"""`train --workspace` records into the run store; `runs list/show/delete/export`; their refusals.
In-process through xray_core.cli.main.main (fast); one subprocess checks the real entry point."""
import csv
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from xray_core.cli.main import main
from xray_core.runs.store import get_store

from .fixtures_data import course_layout, rids

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One store with two 1-epoch CLI runs in workspace `hw` and one in the default
    workspace, plus a finished p1-task1 run written through the store API (25 real epochs
    would take half a minute here)."""
    from xray_core.presets import PRESETS
    root = tmp_path_factory.mktemp("cli-runs")
    data = course_layout(root / "data", {"train": rids(4), "validation": rids(2, "V"), "test": rids(2, "T")},
                         per_class=4)
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XRAY_LAB_HOME", str(home))
        store = get_store()
        pre = store.create_run("hw", PRESETS["p1-task1"].config)
        hist = {"loss": [1.2, 0.9], "accuracy": [0.5, 0.8], "val_loss": [1.3, 1.0], "val_accuracy": [0.45, 0.7]}
        store.update_progress(pre.id, state="training", epochs_done=2, history=hist)
        test = {"accuracy": 0.6875, "loss": 0.97, "confusion": [[1, 0, 0, 0]] * 4}
        store.finish(pre.id, "finished", result={"test": test, "train_accuracy": 0.8})
        out = {"preset": {"run_id": pre.id, "test": test, "history": hist}}
        common = ["--data", str(data), "--batch-size", "16", "--epochs", "1"]
        for name, extra in (("quick", ["--lr", "0.01", "--workspace", "hw"]), ("default", [])):
            j = root / f"{name}.json"
            assert main(["train", *common, *extra, "--json", str(j)]) == 0
            out[name] = json.loads(j.read_text())
    return {"home": home, "root": root, **out}


@pytest.fixture
def home(lab, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_HOME", str(lab["home"]))
    return lab["home"]


def run_cli(capsys, *argv):
    capsys.readouterr()
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_train_records_the_run_in_its_workspace(home, lab, capsys):
    rc, out, _ = run_cli(capsys, "runs", "list", "--workspace", "hw", "--json")
    assert rc == 0
    runs = json.loads(out)
    assert [r["id"] for r in runs] == [lab["quick"]["run_id"], lab["preset"]["run_id"]]   # newest first
    quick, preset = runs
    assert {"id", "workspace", "state", "epochs_done", "config", "history", "test", "model"} <= set(quick)
    assert (quick["workspace"], quick["state"], quick["epochs_done"]) == ("hw", "finished", 1)
    assert quick["config"] == lab["quick"]["config"] and quick["history"] == lab["quick"]["history"]
    assert quick["test"] == lab["quick"]["test"]
    assert Path(quick["model"]).is_file() and Path(quick["model"]).is_relative_to(home)
    assert (preset["preset"], preset["epochs_done"], preset["history"]) == ("p1-task1", 2, lab["preset"]["history"])
    rc, out, _ = run_cli(capsys, "runs", "list", "--workspace", "cli", "--json")
    assert [r["id"] for r in json.loads(out)] == [lab["default"]["run_id"]]       # the default workspace


def test_list_all_to_a_file_and_as_text(home, lab, capsys, tmp_path):
    rc, _, _ = run_cli(capsys, "runs", "list", "--json", str(tmp_path / "all.json"))
    assert rc == 0
    assert {r["id"] for r in json.loads((tmp_path / "all.json").read_text())} == \
        {lab[k]["run_id"] for k in ("preset", "quick", "default")}
    rc, out, _ = run_cli(capsys, "runs", "list", "--workspace", "hw")
    assert rc == 0 and len(out.splitlines()) == 2 and lab["quick"]["run_id"] in out and "finished" in out
    rc, out, _ = run_cli(capsys, "runs", "list", "--workspace", "nobody-here", "--json")
    assert rc == 0 and json.loads(out) == []


def test_show(home, lab, capsys):
    rid = lab["quick"]["run_id"]
    rc, out, _ = run_cli(capsys, "runs", "show", rid, "--json")
    assert rc == 0
    shown = json.loads(out)
    assert shown == get_store().get(rid).to_json() and shown["id"] == rid
    rc, out, _ = run_cli(capsys, "runs", "show", rid)
    assert rc == 0 and "epoch 1:" in out and "test accuracy" in out and "model.keras" in out


def test_export_md_csv_html(home, lab, capsys, tmp_path):
    acc = lab["preset"]["test"]["accuracy"]
    for fmt in ("md", "csv", "html"):
        rc, _, err = run_cli(capsys, "runs", "export", "--workspace", "hw", "--format", fmt,
                             "--out", str(tmp_path / f"r.{fmt}"))
        assert rc == 0 and "1 experiment" in err and "p2-task2" in err   # the missing presets are named
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert len(rows) == 1 and rows[0]["preset"] == "p1-task1" and rows[0]["run_id"] == lab["preset"]["run_id"]
    assert float(rows[0]["test_accuracy"]) == round(100 * acc, 1) and rows[0]["course_test_accuracy"] == "66.8"
    md = (tmp_path / "r.md").read_text()
    assert f"| p1-task1 | Part 1 · Task 1: FC with ReLU | {lab['preset']['run_id']} | 2/25 |" in md
    assert "| 80.0 % | 68.8 % | 0.970 | 83.9 % | 66.8 % | 0.81 |" in md
    page = (tmp_path / "r.html").read_text()
    assert page.count('class="plotly-graph-div"') == 2      # the summary + the run's curves
    assert "<script src=" not in page and page.count("plotly.js v") == 1 and len(page) > 3_000_000  # inlined


def test_export_chosen_runs(home, lab, capsys, tmp_path):
    ids = f"{lab['quick']['run_id']},{lab['preset']['run_id']}"
    rc, _, _ = run_cli(capsys, "runs", "export", "--workspace", "hw", "--format", "csv", "--runs", ids,
                       "--out", str(tmp_path / "c.csv"))
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "c.csv").read_text())))
    assert [r["run_id"] for r in rows] == ids.split(",") and rows[0]["preset"] == ""


@pytest.mark.parametrize("argv, message", [
    (["runs", "show", "0123456789abcdef"], "no run '0123456789abcdef'"),
    (["runs", "show", "../../etc/passwd", "--json"], "no run"),
    (["runs", "delete", "0123456789abcdef"], "no run"),
    (["runs", "list", "--workspace", "bad ws!"], "bad workspace name"),
    (["runs", "list", "--state", "sleeping"], "unknown state"),
    (["runs", "export", "--workspace", "empty", "--format", "md", "--out", "x.md"], "has no finished run"),
    (["runs", "export", "--workspace", "hw", "--format", "md", "--runs", "feedfacefeedface", "--out", "x.md"],
     "no run 'feedfacefeedface' in workspace 'hw'"),
    (["runs", "export", "--workspace", "hw", "--format", "pdf", "--out", "x"], "invalid choice"),
    (["runs"], "required"),
    (["train", "--epochs", "1", "--workspace", "../etc"], "bad workspace name"),
])
def test_refusals_are_one_line(home, capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    before = len(get_store().list_runs())
    rc, _, err = run_cli(capsys, *argv)
    assert rc != 0 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert len(get_store().list_runs()) == before and not list(tmp_path.iterdir())


def test_a_run_from_another_workspace_is_refused_by_export(home, lab, capsys, tmp_path):
    rc, _, err = run_cli(capsys, "runs", "export", "--workspace", "hw", "--format", "md",
                         "--runs", lab["default"]["run_id"], "--out", str(tmp_path / "x.md"))
    assert rc == 1 and "in workspace 'hw'" in err and not (tmp_path / "x.md").exists()


def test_delete_removes_record_and_model(home, lab, capsys):
    rid = lab["default"]["run_id"]
    model_dir = home / "models" / rid
    assert (model_dir / "model.keras").is_file()
    rc, out, _ = run_cli(capsys, "runs", "delete", rid)
    assert rc == 0 and f"deleted run {rid}" in out
    assert not model_dir.exists() and get_store().get(rid) is None
    rc, _, err = run_cli(capsys, "runs", "delete", rid)
    assert rc == 1 and "no run" in err


def test_real_entry_point_prints_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "XRAY_LAB_HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "xray_core", "runs", "show", "nope", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 1 and res.stderr == "error: no run 'nope' (see `python -m xray_core runs list`)\n"
    res = subprocess.run([sys.executable, "-m", "xray_core", "runs", "list", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and json.loads(res.stdout) == [] and (tmp_path / "runs.sqlite3").is_file()


def test_list_and_show_report_a_dead_process_run_as_interrupted(capsys, tmp_path):
    import sqlalchemy as sa
    from xray_core.config import RunConfig
    from xray_core.runs.store import runs as runs_table
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store = get_store()
    r = store.create_run("ws", RunConfig(epochs=5))
    store.update_progress(r.id, state="training", epochs_done=3)
    with store.engine.begin() as conn:   # as if another server process on this host wrote it, then died
        conn.execute(sa.update(runs_table).where(runs_table.c.id == r.id)
                     .values(owner=f"{socket.gethostname()}:{gone.stdout.strip()}"))
    rc, out, _ = run_cli(capsys, "runs", "list", "--workspace", "ws", "--json")
    assert rc == 0
    [row] = json.loads(out)
    assert (row["state"], row["epochs_done"], row["error"]) == ("interrupted", 3,
                                                                "interrupted at epoch 3: the server stopped")
