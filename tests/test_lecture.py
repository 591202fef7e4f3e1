"""The live lecture's engine (issue 25): "Send to class" kept in the store (runs/classes.py
send/pinned, seen by every replica), the projector's race (classes.curves), the newest
open experiment, and the class experiment in the homework report (runs/report.py)."""
import pytest

from xray_core.config import RunConfig
from xray_core.errors import ConfigError
from xray_core.runs import classes, report
from xray_core.runs.store import RunStore

SHORT = {"epochs": 2, "limit_train": 64, "batch_size": 16}


@pytest.fixture
def store(tmp_path):
    s = RunStore(home=tmp_path / "home")
    yield s
    s.close()


def test_send_to_class_is_seen_by_another_replica_and_replaced_by_the_next(store, tmp_path):
    other = RunStore(store.url, home=tmp_path / "home")     # a second server on the same database
    try:
        assert classes.pinned(store=other) is None
        got = classes.send("p1-task1", {"activation": "leaky_relu", "alpha": 0.01}, "  Watch   the loss ",
                           store=store)
        seen = classes.pinned(store=other)
        assert seen == got and seen["message"] == "Watch the loss"           # one line, spaces tidied
        assert seen["setup"]["preset"] == "p1-task1" and seen["setup"]["knobs"] == "LeakyReLU α 0.01"
        assert classes.try_this(seen["setup"]) == "p1-task1 — LeakyReLU α 0.01"
        cfg = RunConfig.from_dict(seen["setup"]["config"])
        assert (cfg.activation, cfg.alpha, cfg.arch) == ("leaky_relu", 0.01, "fc")
        nxt = classes.send(message="Only a message now", store=other)
        assert nxt["id"] > seen["id"] and nxt["setup"] is None
        assert classes.pinned(store=store)["message"] == "Only a message now"
        assert classes.send(store=store) is None and classes.pinned(store=other) is None   # cleared
    finally:
        other.close()


def test_a_preset_sent_unchanged_has_no_knob_text(store):
    got = classes.send("p1-task2", {}, "", store=store)
    assert got["setup"]["knobs"] == "" and classes.try_this(got["setup"]) == "p1-task2"
    assert got["message"] is None


@pytest.mark.parametrize("preset, knobs, message, words", [
    ("p9-nope", {}, "", "unknown preset"),
    ("p1-task1", {"epochs": 0}, "", "epochs"),
    ("p1-task1", {"warp": 3}, "", "unknown knob"),
    (None, None, "x" * 201, "one line of 200"),
])
def test_bad_sends_are_refused_in_one_line(store, preset, knobs, message, words):
    with pytest.raises((ConfigError, KeyError, ValueError)) as e:
        classes.send(preset, knobs, message, store=store)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert classes.pinned(store=store) is None


def _turn(store, cid, ws, accuracy, vals, state="finished"):
    a = classes.assign(cid, ws, store=store)
    rec = store.create_run(ws, a.config, group_id=cid)
    hist = {"loss": [1.0] * len(vals), "accuracy": vals, "val_loss": [1.0] * len(vals), "val_accuracy": vals}
    if state == "finished":
        store.finish(rec.id, "finished", result={"test": {"accuracy": accuracy, "loss": 1.0}},
                     epochs_done=len(vals), history=hist)
    else:
        store.update_progress(rec.id, state="training", epochs_done=len(vals), history=hist)
    return a, rec.id


def test_the_race_has_each_runs_curve_and_each_setups_mean_per_epoch(store):
    assert classes.current(store=store) is None
    cid = classes.open(["p1-task1", "p1-task2"], overrides=SHORT, store=store)
    assert classes.current(store=store)["id"] == cid
    _turn(store, cid, "a", 0.5, [0.4, 0.5])            # setup 0
    _turn(store, cid, "b", 0.7, [0.6, 0.7])            # setup 1
    _turn(store, cid, "c", 0.6, [0.2], state="training")   # setup 0, one epoch so far
    stranger = store.create_run("x", RunConfig(seed=999), group_id=cid)     # no turn had this seed
    store.update_progress(stranger.id, state="training", epochs_done=1,
                          history={"loss": [1], "accuracy": [1], "val_loss": [1], "val_accuracy": [0.99]})
    race = classes.curves(cid, store=store)
    s0, s1 = race["setups"]
    assert [r["val_accuracy"] for r in s0["runs"]] == [[0.4, 0.5], [0.2]]
    assert s0["mean"] == pytest.approx([0.3, 0.5])   # epoch 2: only the run that reached it
    assert s1["mean"] == pytest.approx([0.6, 0.7]) and len(s1["runs"]) == 1
    classes.close(cid, store=store)
    assert classes.current(store=store) is None


def test_the_report_carries_the_class_experiments_the_workspace_took_part_in(store):
    cid = classes.open(["p1-task1", "p1-task2"], "Does LeakyReLU <b>help</b>?", store=store)
    other = classes.open(["p1-task1", "p2-task1"], store=store)
    _, mine = _turn(store, cid, "me", 0.61, [0.6])
    for i, acc in enumerate([0.72, 0.60, 0.75, 0.59, 0.74]):
        _turn(store, cid, f"s{i}", acc, [acc])
    _turn(store, other, "someone", 0.5, [0.5])          # not this workspace's: not in its report
    rep = report.build_report(store, "me")
    assert [c["id"] for c in rep.classes] == [cid] and rep.classes[0]["mine"] == [mine]
    md = report.to_markdown(rep)
    assert "## Class experiment: Does LeakyReLU &lt;b&gt;help&lt;/b&gt;? (open)" in md
    assert "| p1-task1 | 3 |" in md and "| p1-task2 | 3 |" in md
    assert "p1-task2 vs p1-task1:" in md and "p =" in md
    html = report.to_html(rep)
    assert "<h2>Class experiment: Does LeakyReLU &lt;b&gt;help&lt;/b&gt;? (open)</h2>" in html
    assert "<b>help</b>" not in html
    assert "Class experiment" not in report.to_csv(rep)           # the CSV stays one table of runs
    assert report.build_report(store, "nobody").classes == []
    assert report.build_report(store, "me", run_ids=[mine]).classes[0]["id"] == cid
