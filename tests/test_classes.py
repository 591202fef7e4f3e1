"""The class as one experiment (issue 25, item 2): xray_core/runs/classes.py over a real
SQLite run store: setups, turns in round-robin with their own seeds, status with the
verdict of stats.compare, closing; and that a store written before these tables existed
opens unchanged. The CLI (`class …`, `train --class-experiment`) is in tests/test_cli_classes.py."""
import sqlite3
import threading

import pytest

from xray_core import stats
from xray_core.config import RunConfig
from xray_core.errors import ConfigError, StoreError
from xray_core.presets import PRESETS
from xray_core.runs import classes
from xray_core.runs.store import RunStore

from .fixtures_data import old_run_store

SHORT = {"epochs": 1, "limit_train": 64, "batch_size": 16}


@pytest.fixture
def store(tmp_path):
    s = RunStore(f"sqlite:///{tmp_path / 'home' / 'runs.sqlite3'}", home=tmp_path / "home")
    yield s
    s.close()


def finished_run(store, a: classes.Assignment, accuracy: float, workspace: str = "ws") -> str:
    """A run of this turn as service.start records it (group_id = the experiment), ended with a result."""
    rec = store.create_run(workspace, a.config, group_id=a.experiment_id)
    store.finish(rec.id, "finished", result={"test": {"accuracy": accuracy, "loss": 1.0}})
    return rec.id


def test_setups_from_presets_with_knobs_set_on_all(store):
    cid = classes.open(["p1-task1", "p1-task2"], "LeakyReLU?", overrides=SHORT, store=store)
    exp = classes.get(cid, store=store)
    assert (exp["title"], exp["state"]) == ("LeakyReLU?", "open")
    a, b = exp["setups"]
    assert (a["preset"], b["preset"]) == ("p1-task1", "p1-task2")
    for s, name in ((a, "p1-task1"), (b, "p1-task2")):
        want = PRESETS[name].config.replace(**SHORT).resolved().to_dict()
        assert s["config"] == want
    assert (a["config"]["activation"], b["config"]["activation"]) == ("relu", "leaky_relu")
    assert a["label"].startswith("p1-task1, 1 epoch")
    # a setup may also be a config or a dict of knobs on a preset; an unedited preset keeps its name as label
    cid2 = classes.open([PRESETS["p1-task3"].config, {"preset": "p1-task3", "lr": 1e-3}], store=store)
    s1, s2 = classes.get(cid2, store=store)["setups"]
    assert (s1["preset"], s1["label"]) == ("p1-task3", "p1-task3")
    assert s2["preset"] == "p1-task3" and s2["config"]["lr"] == 1e-3 and s2["label"] != "p1-task3"


@pytest.mark.parametrize("setups, overrides, words", [
    (["p1-task1"], None, "2 to 6 setups"),
    (["p1-task1", "p9-nope"], None, "unknown preset"),
    (["p1-task1", {"preset": "p1-task1", "seed": 7}], None, "are the same"),
    (["p1-task1", "p1-task2"], {"epochs": 0}, "epochs"),
    (["p1-task1", "p1-task2"], {"wings": 2}, "unknown knob"),
    ("p1-task1,p1-task2", None, "list"),
])
def test_bad_setups_are_refused_in_one_line(store, setups, overrides, words):
    with pytest.raises(ConfigError) as e:
        classes.open(setups, overrides=overrides, store=store)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert store.list_class_experiments() == []


def test_turns_go_round_robin_each_with_its_own_seed(store):
    cid = classes.open(["p1-task1", "p1-task2", "p1-task5"], overrides=SHORT, store=store)
    got = [classes.assign(cid, f"student-{i}", store=store) for i in range(7)]
    assert [a.setup for a in got] == [0, 1, 2, 0, 1, 2, 0]
    assert [a.number for a in got] == list(range(7))
    assert len({a.seed for a in got}) == 7 and all(a.config.seed == a.seed for a in got)
    assert [a.preset for a in got[:3]] == ["p1-task1", "p1-task2", "p1-task5"]
    assert got[2].config.batch_norm is True and got[0].config.batch_norm is False
    turns = store.list_class_assignments(cid)
    assert [(t["workspace"], t["setup"], t["seed"]) for t in turns] == \
        [(f"student-{i}", a.setup, a.seed) for i, a in enumerate(got)]
    # another experiment has its own turns
    other = classes.open(["p1-task1", "p1-task2"], store=store)
    assert classes.assign(other, "x", store=store).number == 0


def test_students_joining_at_once_get_distinct_turns(tmp_path):
    """Eight threads, each with its own store object on one SQLite file (as server processes)."""
    url, home = f"sqlite:///{tmp_path / 'runs.sqlite3'}", tmp_path
    first = RunStore(url, home)
    cid = classes.open(["p1-task1", "p1-task2"], store=first)
    stores = [RunStore(url, home) for _ in range(4)]
    got, errors = [], []

    def join(i):
        try:
            for _ in range(5):
                got.append(classes.assign(cid, f"ws{i}", store=stores[i % 4]))
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=join, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(a.number for a in got) == list(range(40))
    assert sorted(a.seed for a in got) == list(range(40))
    assert [sum(a.setup == k for a in got) for k in (0, 1)] == [20, 20]
    for s in [first, *stores]:
        s.close()


def test_status_counts_finished_runs_per_setup_and_compares_them(store):
    cid = classes.open(["p1-task1", "p1-task2"], overrides=SHORT, store=store)
    st = classes.status(cid, store=store)
    assert [s["n"] for s in st["setups"]] == [0, 0] and st["compare"]["verdict"] == "no evidence"
    assert st["compare"]["p_value"] is None and st["compare"]["more_runs_needed"] == [2, 2]
    acc = {0: [0.60, 0.62, 0.61, 0.59, 0.60, 0.63], 1: [0.75, 0.77, 0.74, 0.76, 0.78, 0.75]}
    made = {0: [], 1: []}
    for i in range(12):
        a = classes.assign(cid, f"s{i}", store=store)
        made[a.setup].append(finished_run(store, a, acc[a.setup][len(made[a.setup])], f"s{i}"))
    # runs that are not finished turns of this experiment are not counted
    live = classes.assign(cid, "late", store=store)                    # setup 0, still training
    rec = store.create_run("late", live.config, group_id=cid)
    store.update_progress(rec.id, state="training", epochs_done=0)
    stranger = store.create_run("x", RunConfig(seed=999), group_id=cid)   # a seed no turn was given
    store.finish(stranger.id, "finished", result={"test": {"accuracy": 0.99, "loss": 0.1}})
    failed = classes.assign(cid, "f", store=store)                      # setup 1, failed
    r = store.create_run("f", failed.config, group_id=cid)
    store.finish(r.id, "failed", error="boom")

    st = classes.status(cid, store=store)
    s0, s1 = st["setups"]
    assert (s0["preset"], s0["n"], s0["assigned"]) == ("p1-task1", 6, 7)
    assert (s1["preset"], s1["n"], s1["assigned"]) == ("p1-task2", 6, 7)
    assert sorted(s0["values"]) == sorted(acc[0]) and sorted(s1["values"]) == sorted(acc[1])
    assert s0["states"] == {"finished": 6, "training": 1} and s1["states"] == {"finished": 6, "failed": 1}
    assert s0["mean"] == pytest.approx(sum(acc[0]) / 6)
    want = stats.summarize(acc[0])
    assert s0["ci95"] == pytest.approx(want["ci95"]) and s0["ci95"][0] < s0["mean"] < s0["ci95"][1]
    ref = stats.compare(s0["values"], s1["values"])
    c = st["compare"]
    assert c["difference"] == pytest.approx(sum(acc[1]) / 6 - sum(acc[0]) / 6)
    assert c["p_value"] == pytest.approx(ref["p_value"]) and c["p_value"] < 0.05
    assert c["verdict"] == "different" and c["test"] == "Welch's t-test"


def test_a_small_gap_is_no_evidence_with_the_runs_still_needed(store):
    cid = classes.open(["p1-task1", "p1-task2"], store=store)
    acc = {0: [0.70, 0.72, 0.69], 1: [0.71, 0.70, 0.72]}
    seen = {0: 0, 1: 0}
    for i in range(6):
        a = classes.assign(cid, "ws", store=store)
        finished_run(store, a, acc[a.setup][seen[a.setup]])
        seen[a.setup] += 1
    c = classes.status(cid, store=store)["compare"]
    ref = stats.compare(acc[0], acc[1])
    assert c["verdict"] == "no evidence" and c["p_value"] >= 0.05
    assert c["p_value"] == pytest.approx(ref["p_value"])
    assert c["seeds_needed"] == ref["seeds_needed"] > 3
    assert c["more_runs_needed"] == [ref["seeds_needed"] - 3] * 2


def test_one_finished_run_per_setup_gives_a_gap_but_no_test(store):
    cid = classes.open(["p1-task1", "p1-task2"], store=store)
    finished_run(store, classes.assign(cid, "a", store=store), 0.5)
    finished_run(store, classes.assign(cid, "b", store=store), 0.7)
    st = classes.status(cid, store=store)
    assert [s["ci95"] for s in st["setups"]] == [None, None]      # one value has no spread
    c = st["compare"]
    assert c["difference"] == pytest.approx(0.2) and c["p_value"] is None
    assert (c["verdict"], c["more_runs_needed"]) == ("no evidence", [1, 1])


def test_three_setups_are_each_compared_with_the_first(store):
    cid = classes.open(["p1-task1", "p1-task2", "p1-task3"], store=store)
    for i in range(6):
        a = classes.assign(cid, "ws", store=store)
        finished_run(store, a, 0.5 + 0.1 * a.setup + 0.01 * i)
    st = classes.status(cid, store=store)
    assert [(c["a"], c["b"]) for c in st["comparisons"]] == [(0, 1), (0, 2)]
    assert st["compare"] == st["comparisons"][0]


def test_close_ends_the_turns_and_keeps_the_status(store):
    cid = classes.open(["p1-task1", "p1-task2"], store=store)
    finished_run(store, classes.assign(cid, "a", store=store), 0.5)
    closed = classes.close(cid, store=store)
    assert closed["state"] == "closed" and closed["closed_at"] >= closed["created_at"]
    with pytest.raises(StoreError, match="is closed"):
        classes.assign(cid, "b", store=store)
    with pytest.raises(StoreError, match="already closed"):
        classes.close(cid, store=store)
    st = classes.status(cid, store=store)
    assert st["state"] == "closed" and st["setups"][0]["values"] == [0.5]
    assert [e["id"] for e in classes.list_experiments(store=store)] == [cid]
    assert classes.list_experiments(open_only=True, store=store) == []


@pytest.mark.parametrize("bad", ["nope", "0123456789abcdef", "../../etc", 12])
def test_unknown_experiments_are_refused_in_one_line(store, bad):
    for call in (classes.status, classes.close, lambda i, store: classes.assign(i, "ws", store=store)):
        with pytest.raises(StoreError) as e:
            call(bad, store=store)
        assert "no class experiment" in str(e.value) and "\n" not in str(e.value)


def test_a_store_made_before_class_experiments_opens_unchanged(tmp_path):
    """An older store has only `runs` and `groups`: opening it adds the new tables and keeps every row."""
    db = old_run_store(tmp_path / "home")
    before = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert before == {"runs", "groups"}

    s = RunStore(f"sqlite:///{db}", home=tmp_path / "home")
    try:
        after = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert after == before | {"class_experiments", "class_assignments", "run_stops", "class_pins",
                                  "account_workspaces"}
        old_run = s.get("00000000000000aa")
        assert (old_run.label, old_run.history["loss"], old_run.test["accuracy"]) == ("old", [0.5], 0.4)
        cid = classes.open(["p1-task1", "p1-task2"], store=s)
        assert classes.assign(cid, "ws", store=s).number == 0
        assert classes.pinned(store=s) is None                 # nothing sent yet
        assert classes.send(message="hello", store=s)["message"] == "hello"
    finally:
        s.close()
