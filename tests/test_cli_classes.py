"""The CLI contract of the class experiment (issue 25): `class open/status/close/list` and
`train --class-experiment ID [--workspace W] --json J`, the teacher's password, and every
refusal in one line. In-process through xray_core.cli.main.main (fast); the real entry
point is run as a subprocess for the contract's `--json -` outputs and a refusal."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xray_core import stats
from xray_core.cli.main import main
from xray_core.runs.store import get_store

from .fixtures_data import tiny_course

REPO = Path(__file__).resolve().parents[1]
SHORT = ["--epochs", "1", "--batch-size", "16", "--limit-train", "64"]


def run_cli(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def entry(home, *argv, env_extra=None, stdin=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "XRAY_LAB_HOME": str(home), **(env_extra or {})}
    env.pop("XRAY_LAB_DB", None)
    if not (env_extra or {}).get("XRAY_LAB_TEACHER_PASSWORD"):
        env.pop("XRAY_LAB_TEACHER_PASSWORD", None)
    return subprocess.run([sys.executable, "-m", "xray_core", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120, input=stdin)


def one_line_error(rc, err):
    assert rc != 0 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def lecture(tmp_path_factory):
    """A class experiment p1-task1 vs p1-task2 (1 epoch on tiny data), four students who each
    trained the setup they were assigned."""
    root = tmp_path_factory.mktemp("lecture")
    data = tiny_course(root / "data")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XRAY_LAB_HOME", str(home))
        mp.delenv("XRAY_LAB_TEACHER_PASSWORD", raising=False)
        out = io.StringIO()
        mp.setattr(sys, "stdout", out)
        assert main(["class", "open", "--setups", "p1-task1,p1-task2", "--title", "Does LeakyReLU help?",
                     *SHORT, "--data", str(data), "--json", "-"]) == 0
        opened = json.loads(out.getvalue())
        mp.undo()
        mp.setenv("XRAY_LAB_HOME", str(home))
        students = []
        for i in range(4):
            j = root / f"s{i}.json"
            assert main(["train", "--class-experiment", opened["id"], "--workspace", f"student-{i}",
                         "--json", str(j)]) == 0
            students.append(json.loads(j.read_text()))
    return {"home": home, "data": data, "opened": opened, "students": students, "root": root}


@pytest.fixture
def home(lecture, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_HOME", str(lecture["home"]))
    monkeypatch.delenv("XRAY_LAB_TEACHER_PASSWORD", raising=False)
    return lecture["home"]


def test_open_prints_the_id_and_the_setups(lecture):
    o = lecture["opened"]
    assert len(o["id"]) == 16 and o["title"] == "Does LeakyReLU help?" and o["state"] == "open"
    assert [s["preset"] for s in o["setups"]] == ["p1-task1", "p1-task2"]
    for s in o["setups"]:
        c = s["config"]
        assert (c["epochs"], c["batch_size"], c["limit_train"], c["data"]) == (1, 16, 64, str(lecture["data"]))
    assert [s["config"]["activation"] for s in o["setups"]] == ["relu", "leaky_relu"]


def test_each_student_trains_the_next_setup_with_its_own_seed(home, lecture):
    st = lecture["students"]
    assert [s["preset"] for s in st] == ["p1-task1", "p1-task2", "p1-task1", "p1-task2"]
    assert [s["config"]["activation"] for s in st] == ["relu", "leaky_relu", "relu", "leaky_relu"]
    assert [s["config"]["seed"] for s in st] == [0, 1, 2, 3]
    assert [s["class_experiment"]["setup"] for s in st] == [0, 1, 0, 1]
    assert all(s["class_experiment"]["experiment_id"] == lecture["opened"]["id"] for s in st)
    for i, s in enumerate(st):
        assert s["state"] == "done" and 0 <= s["test"]["accuracy"] <= 1 and len(s["history"]["loss"]) == 1
        rec = get_store().get(s["run_id"])
        assert (rec.workspace, rec.group_id, rec.state) == (f"student-{i}", lecture["opened"]["id"], "finished")
        assert rec.config == s["config"] and rec.test["accuracy"] == s["test"]["accuracy"]


def test_status_json_has_the_setups_and_the_comparison(home, lecture, capsys):
    rc, out, _ = run_cli(capsys, "class", "status", lecture["opened"]["id"], "--json", "-")
    assert rc == 0
    st = json.loads(out)
    accs = [s["test"]["accuracy"] for s in lecture["students"]]
    a, b = st["setups"]
    assert (a["preset"], b["preset"]) == ("p1-task1", "p1-task2")
    assert sorted(a["values"]) == sorted(accs[0::2]) and sorted(b["values"]) == sorted(accs[1::2])
    assert (a["n"], b["n"]) == (2, 2)
    assert a["mean"] == pytest.approx(sum(accs[0::2]) / 2)
    want = stats.summarize(accs[0::2])["ci95"]
    assert a["ci95"] == pytest.approx(want)
    ref = stats.compare(a["values"], b["values"])
    c = st["compare"]
    assert c["difference"] == pytest.approx(ref["difference"]) and c["p_value"] == pytest.approx(ref["p_value"])
    assert c["verdict"] == ref["verdict"] == ("different" if ref["p_value"] < 0.05 else "no evidence")
    # and as text
    rc, out, _ = run_cli(capsys, "class", "status", lecture["opened"]["id"])
    assert rc == 0 and "p1-task1" in out and "n 2" in out and "2 vs 1:" in out


def test_the_real_entry_point_keeps_the_contract(home, lecture, tmp_path):
    """`class open … --json -` prints the id (and nothing else on stdout); `class status ID --json -`."""
    fresh = tmp_path / "fresh-home"
    res = entry(fresh, "class", "open", "--setups", "p1-task1,p1-task2", "--json", "-")
    assert res.returncode == 0, res.stderr
    cid = json.loads(res.stdout)["id"]
    res = entry(fresh, "class", "status", cid, "--json", "-")
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert [s["preset"] for s in st["setups"]] == ["p1-task1", "p1-task2"]
    assert {"preset", "n", "mean", "ci95", "values"} <= set(st["setups"][0])
    assert {"difference", "p_value", "verdict"} <= set(st["compare"]) and st["compare"]["verdict"] == "no evidence"
    res = entry(fresh, "class", "list", "--json", "-")
    assert [e["id"] for e in json.loads(res.stdout)] == [cid]
    res = entry(fresh, "train", "--class-experiment", "0123456789abcdef", "--json", str(tmp_path / "t.json"))
    one_line_error(res.returncode, res.stderr)
    assert "no class experiment" in res.stderr and not (tmp_path / "t.json").exists()


def test_the_teacher_password_guards_open_and_close(tmp_path):
    home = tmp_path / "home"
    pw = {"XRAY_LAB_TEACHER_PASSWORD": "correct horse battery staple"}
    wrong = entry(home, "class", "open", "--setups", "p1-task1,p1-task2", "--password", "guess", "--json", "-",
                  env_extra=pw)
    one_line_error(wrong.returncode, wrong.stderr)
    assert "wrong teacher password" in wrong.stderr and wrong.stdout == ""
    assert "correct horse" not in wrong.stderr
    right = entry(home, "class", "open", "--setups", "p1-task1,p1-task2", "--password", pw["XRAY_LAB_TEACHER_PASSWORD"],
                  "--json", "-", env_extra=pw)
    assert right.returncode == 0, right.stderr
    cid = json.loads(right.stdout)["id"]
    piped = entry(home, "class", "open", "--setups", "p1-task2,p1-task5", "--password", "-", "--json", "-",
                  env_extra=pw, stdin="correct horse battery staple\n")
    assert piped.returncode == 0, piped.stderr
    by_variable = entry(home, "class", "open", "--setups", "p1-task1,p1-task3", "--json", "-", env_extra=pw)
    assert by_variable.returncode == 0, by_variable.stderr      # the teacher's own environment
    bad_close = entry(home, "class", "close", cid, "--password", "nope", env_extra=pw)
    one_line_error(bad_close.returncode, bad_close.stderr)
    listed = json.loads(entry(home, "class", "list", "--json", "-").stdout)
    assert len(listed) == 3 and all(e["state"] == "open" for e in listed)
    ok = entry(home, "class", "close", cid, "--password", "correct horse battery staple", env_extra=pw)
    assert ok.returncode == 0 and "closed" in ok.stdout
    # without the variable anyone at this machine's shell is the teacher (nothing to ask)
    assert entry(home, "class", "open", "--setups", "p1-task1,p1-task2", "--password", "anything").returncode == 0


def test_status_and_train_refuse_in_one_line(home, lecture, capsys, monkeypatch):
    cid = lecture["opened"]["id"]
    for argv, words in [
        (("class", "status", "nope"), "no class experiment"),
        (("class", "close", "../../x"), "no class experiment"),
        (("class", "open", "--setups", "p1-task1"), "2 to 6 setups"),
        (("class", "open", "--setups", "p1-task1,p0-zzz"), "unknown preset"),
        (("class", "open", "--setups", ","), "--setups"),
        (("class", "open", "--setups", "p1-task1,p1-task2", "--preset", "p1-task3"), "--setups"),
        (("class", "open", "--setups", "p1-task1,p1-task2", "--data", str(lecture["root"] / "nowhere")), "no such"),
        (("class", "open", "--setups", "p1-task1,p1-task2", "--epochs", "0"), "epochs"),
        (("train", "--class-experiment", cid, "--epochs", "3"), "drop --epochs"),
        (("train", "--class-experiment", cid, "--preset", "p1-task5"), "drop --preset"),
        (("train", "--class-experiment", cid, "--data", str(lecture["root"])), "--data"),
        (("train", "--class-experiment", cid, "--workspace", "bad name!"), "bad workspace"),
        (("class", "frobnicate"), "invalid choice"),
    ]:
        rc, out, err = run_cli(capsys, *argv)
        one_line_error(rc, err)
        assert words in err, (argv, err)


def test_a_closed_experiment_assigns_no_more_turns(home, lecture, capsys, tmp_path):
    rc, out, _ = run_cli(capsys, "class", "open", "--setups", "p1-task1,p1-task2", "--json", "-")
    cid = json.loads(out)["id"]
    rc, out, _ = run_cli(capsys, "class", "close", cid)
    assert rc == 0 and cid in out
    rc, _, err = run_cli(capsys, "train", "--class-experiment", cid, "--json", str(tmp_path / "t.json"))
    one_line_error(rc, err)
    assert "is closed" in err and not (tmp_path / "t.json").exists()
    rc, _, err = run_cli(capsys, "class", "close", cid)
    one_line_error(rc, err)
    assert "already closed" in err
    rc, out, _ = run_cli(capsys, "class", "list", "--open", "--json", "-")
    assert cid not in [e["id"] for e in json.loads(out)] and lecture["opened"]["id"] in out


def test_parsing_the_class_commands_imports_no_scipy_store_or_tensorflow():
    code = ("import sys; from xray_core.cli.main import build_parser; p = build_parser()\n"
            "for argv in (['class', 'open', '--setups', 'p1-task1,p1-task2', '--epochs', '2'], ['class', 'status', 'x'],"
            " ['train', '--class-experiment', 'x']):\n"
            "    p.parse_args(argv)\n"
            "print(sorted(m for m in ('scipy', 'sqlalchemy', 'tensorflow') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
