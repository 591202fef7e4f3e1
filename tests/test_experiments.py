"""Repeat, sweep and the course study on tiny toy data (1 epoch), their store hook, and
the CLI's repeat / sweep / compare JSON contracts and refusals."""
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from xray_core.runs import experiments as ex
from xray_core.cli.main import main
from xray_core.config import RunConfig
from xray_core.errors import ConfigError

from .fixtures_data import tiny_course

REPO = Path(__file__).resolve().parents[1]
TINY = RunConfig(epochs=1, batch_size=32, lr=1e-3)
SUMMARY_KEYS = {"values", "n", "mean", "sd", "ci95"}


def test_repeat_runs_one_job_per_seed_and_the_seeds_differ(toy_dataset):
    res = ex.repeat(TINY, 3, seed=7, dataset=toy_dataset)
    assert res["kind"] == "repeat" and res["seeds"] == [7, 8, 9]
    runs = res["runs"]
    assert [r["seed"] for r in runs] == [7, 8, 9] and [r["config"]["seed"] for r in runs] == [7, 8, 9]
    for r in runs:
        assert r["state"] == "done" and r["epochs_done"] == 1
        assert 0 <= r["test_accuracy"] <= 1 and r["test_loss"] > 0 and 0 <= r["train_accuracy"] <= 1
        assert len(r["history"]["loss"]) == 1 and len(r["history"]["val_accuracy"]) == 1
    # different seeds: different initial weights and batch orders, so different losses
    assert len({r["history"]["loss"][0] for r in runs}) == 3
    acc = res["test_accuracy"]
    assert SUMMARY_KEYS <= set(acc) and acc["n"] == 3
    assert acc["values"] == [r["test_accuracy"] for r in runs]
    assert acc["ci95"][0] <= acc["mean"] <= acc["ci95"][1]
    assert res["test_loss"]["values"] == [r["test_loss"] for r in runs]
    assert res["gap"]["values"] == pytest.approx([r["train_accuracy"] - r["test_accuracy"] for r in runs])


def test_a_unet_repeat_without_data_trains_on_the_phantoms_films():
    """The default data of a segmentation repeat is the phantom's films, as for `train` (it
    was the phantom's patches: every seed failed with 'a patch dataset')."""
    cfg = RunConfig(arch="segment", input_size=32, depth=2, base_filters=4, epochs=1, batch_size=8, augment=False)
    res = ex.repeat(cfg, 2, seed=0)
    assert [r["state"] for r in res["runs"]] == ["done", "done"], [r.get("error") for r in res["runs"]]
    assert res["test_accuracy"]["n"] == 2


def test_the_same_seed_repeats_the_same_run(toy_dataset):
    a = ex.repeat(TINY, 1, seed=3, dataset=toy_dataset)["runs"][0]
    b = ex.repeat(TINY, 1, seed=3, dataset=toy_dataset)["runs"][0]
    assert a["history"]["loss"] == pytest.approx(b["history"]["loss"], rel=1e-5)


def test_sweep_sets_the_knob_per_value_with_every_seed(toy_dataset):
    res = ex.sweep(TINY, "limit_train", [64, 320], 2, seed=0, dataset=toy_dataset)
    assert res["knob"] == "limit_train" and res["values"] == [64, 320]
    assert [p["value"] for p in res["points"]] == [64, 320]
    for p in res["points"]:
        assert [r["seed"] for r in p["runs"]] == [0, 1]
        assert all(r["config"]["limit_train"] == p["value"] and r["state"] == "done" for r in p["runs"])
        assert p["test_accuracy"]["n"] == 2 and SUMMARY_KEYS <= set(p["train_accuracy"])


def test_filter_scale_scales_the_cnn_filters_and_bad_knobs_are_refused():
    cnn = RunConfig(arch="cnn")
    assert ex.with_knob(cnn, "filter_scale", 0.5).filters == (32, 64, 64, 128, 128)
    assert ex.parse_values("batch_size", "16, 32,64") == [16, 32, 64]
    assert ex.parse_values("lr", "1e-3,0.01") == [1e-3, 0.01]
    for knob, text, msg in (("batch_size", "16,x", "whole numbers"), ("seed", "1,2", "unknown sweep knob"),
                            ("lr", "", "at least one value"), ("alpha", "0.1,0.1", "repeat")):
        with pytest.raises(ConfigError, match=msg):
            ex.parse_values(knob, text)
    with pytest.raises(ConfigError, match="dropout"):
        ex.with_knob(TINY, "dropout", 1.5)
    for n in (0, ex.MAX_SEEDS + 1, True):
        with pytest.raises(ConfigError, match="seeds"):
            ex.check_seeds(n)


def test_course_study_runs_each_preset_and_judges_each_step(toy_dataset):
    res = ex.course_study(2, presets=["p1-task1", "p1-task2"], epochs=1, limit_train=128, dataset=toy_dataset)
    assert [p["preset"] for p in res["points"]] == ["p1-task1", "p1-task2"]
    assert res["points"][0]["reported"]["test_accuracy"] == 66.8
    for p in res["points"]:
        assert p["test_accuracy"]["n"] == 2
        assert all(r["config"]["epochs"] == 1 and r["config"]["limit_train"] == 128 for r in p["runs"])
    (step,) = res["steps"]
    assert (step["from"], step["to"]) == ("p1-task1", "p1-task2")
    assert step["verdict"] in ("different", "no evidence") and 0 <= step["p_value"] <= 1
    assert step["reported_difference"] == pytest.approx(0.023)
    b, a = res["points"][1]["test_accuracy"]["mean"], res["points"][0]["test_accuracy"]["mean"]
    assert step["difference"] == pytest.approx(b - a)


def test_a_group_starts_its_runs_through_the_one_run_service(toy_dataset, monkeypatch):
    """store.create_group(workspace, kind, spec) once, then service.start(config, workspace=,
    store=, preset=, label=, group_id=, client=) per run: every run of a group is owned by
    its workspace (the class queue's fairness) and recorded like any run."""
    from xray_core.runs import service
    calls = {"groups": [], "runs": []}
    real_start = service.start

    class FakeStore:
        def create_group(self, workspace, kind, spec):
            calls["groups"].append((workspace, kind, spec))
            return "g1"

    def start(config, *, workspace, store=None, preset=None, label=None, group_id=None, client=None, **kw):
        calls["runs"].append((store, config.seed, workspace, preset, label, group_id, client))
        run = real_start(config, workspace=workspace, store=None, **kw)
        run.run_id = f"run{config.seed}"
        return run

    monkeypatch.setattr(service, "start", start)
    store = FakeStore()
    cfg = RunConfig(activation="leaky_relu", alpha=0.01, epochs=1)  # p1-task2 but 1 epoch: no preset
    res = ex.repeat(cfg, 2, seed=5, dataset=toy_dataset, store=store, workspace="w1", client="10.0.0.9")
    assert [(w, k) for w, k, _ in calls["groups"]] == [("w1", "repeat")]
    assert calls["groups"][0][2]["seeds"] == [5, 6]
    assert [(s, w, g, c) for _, s, w, _, _, g, c in calls["runs"]] == [(5, "w1", "g1", "10.0.0.9"),
                                                                      (6, "w1", "g1", "10.0.0.9")]
    assert all(c[0] is store and c[4].endswith(f"seed {c[1]}") for c in calls["runs"])
    assert res["group_id"] == "g1" and [r["run_id"] for r in res["runs"]] == ["run5", "run6"]


def test_a_group_larger_than_the_workspace_may_queue_is_refused_before_any_run(toy_dataset, monkeypatch):
    from xray_core.runs import service
    from xray_core.train.scheduler import Busy
    monkeypatch.setattr(service.SCHEDULER, "max_pending", 3)
    with pytest.raises(Busy) as e:
        ex.start_repeat(TINY, 4, dataset=toy_dataset, workspace="w-big")
    assert "4 runs are more than your workspace may queue" in str(e.value)
    assert service.live_runs("w-big") == []


def test_a_repeat_lands_in_the_real_run_store_as_one_group(toy_dataset, tmp_path):
    from xray_core.runs.store import RunStore
    store = RunStore(home=tmp_path)
    res = ex.repeat(TINY, 2, seed=11, dataset=toy_dataset, store=store, workspace="w2")
    group = store.get_group(res["group_id"])
    assert group["kind"] == "repeat" and group["workspace"] == "w2" and group["spec"]["seeds"] == [11, 12]
    ids = {r["run_id"] for r in res["runs"]}

    def stored():
        runs = store.list_runs("w2", group_id=res["group_id"])
        return {r.id for r in runs} == ids and all(r.state == "finished" for r in runs)
    from .conftest import wait_for
    assert wait_for(stored, 60)  # the recorder writes the final state from its own thread
    recs = {r.id: r for r in store.list_runs("w2", group_id=res["group_id"])}
    for r in res["runs"]:
        assert recs[r["run_id"]].config["seed"] == r["seed"]
        assert recs[r["run_id"]].result["test"]["accuracy"] == pytest.approx(r["test_accuracy"])


# ---- CLI -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return tiny_course(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def repeats(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep")
    for name, extra in (("a", []), ("b", ["--activation", "leaky_relu"])):
        assert main(["repeat", "--seeds", "3", "--seed", "2", "--epochs", "1", "--batch-size", "8", "--lr", "0.01",
                     "--data", str(tiny_data), *extra, "--json", str(out / f"{name}.json")]) == 0
    return out


def test_cli_repeat_writes_runs_and_summaries(repeats):
    d = json.loads((repeats / "a.json").read_text())
    assert [r["seed"] for r in d["runs"]] == [2, 3, 4]
    for r in d["runs"]:
        assert {"seed", "test_accuracy", "test_loss", "train_accuracy", "history"} <= set(r)
        assert len(r["history"]["loss"]) == 1
    for m in ("test_accuracy", "test_loss", "train_accuracy"):
        assert SUMMARY_KEYS <= set(d[m]) and len(d[m]["values"]) == 3
        lo, hi = d[m]["ci95"]
        assert lo <= d[m]["mean"] <= hi
    assert d["test_accuracy"]["values"] == [r["test_accuracy"] for r in d["runs"]]


def test_cli_compare_two_repeats_and_a_course_figure(repeats, tmp_path, capsys):
    out = tmp_path / "c.json"
    assert main(["compare", str(repeats / "a.json"), str(repeats / "b.json"), "--json", str(out)]) == 0
    c = json.loads(out.read_text())
    a = json.loads((repeats / "a.json").read_text())["test_accuracy"]
    b = json.loads((repeats / "b.json").read_text())["test_accuracy"]
    assert c["difference"] == pytest.approx(b["mean"] - a["mean"])
    assert len(c["ci95"]) == 2 and 0 <= c["p_value"] <= 1
    assert c["test"].startswith("exact permutation")  # 3 seeds per group
    assert c["verdict"] in ("different", "no evidence")
    assert "seeds_needed" in c
    out2 = tmp_path / "f.json"
    assert main(["compare", str(repeats / "a.json"), "69.1", "--json", str(out2)]) == 0
    f = json.loads(out2.read_text())
    assert f["difference"] == pytest.approx(0.691 - a["mean"]) and f["test"].startswith("one-sample t")
    assert f["b"]["value"] == pytest.approx(0.691)
    assert main(["compare", str(repeats / "a.json"), "0.691", "--json", str(out2)]) == 0
    assert json.loads(out2.read_text())["difference"] == pytest.approx(f["difference"])


def test_cli_sweep_writes_each_value(tiny_data, tmp_path):
    out = tmp_path / "s.json"
    assert main(["sweep", "--knob", "batch_size", "--values", "8,16", "--seeds", "2", "--epochs", "1",
                 "--lr", "0.01", "--data", str(tiny_data), "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["knob"] == "batch_size" and [p["value"] for p in d["points"]] == [8, 16]
    for p in d["points"]:
        assert [r["config"]["batch_size"] for r in p["runs"]] == [p["value"]] * 2
        for m in ("test_accuracy", "test_loss", "train_accuracy"):
            assert SUMMARY_KEYS <= set(p[m]) and p[m]["n"] == 2


@pytest.mark.parametrize("argv, msg", [
    (["repeat", "--seeds", "0"], "seeds must be"),
    (["repeat", "--seeds", "2", "--data", "/no/such/folder"], "no such file"),
    (["repeat", "--seeds", "2", "--preset", "p9"], "unknown preset"),
    (["repeat", "--seeds", "2", "--lr", "-1"], "learning rate"),
    (["sweep", "--knob", "lr", "--values", "0.1,abc", "--seeds", "2"], "lr values must be numbers"),
    (["sweep", "--knob", "dropout", "--values", "0.1,2", "--seeds", "2"], "dropout"),
    (["sweep", "--knob", "seed", "--values", "1,2", "--seeds", "2"], "invalid choice"),
    (["compare", "/no/such.json", "69.1"], "no such file"),
])
def test_cli_refusals_are_one_line(argv, msg, capsys):
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_compare_refuses_bad_files_and_figures(repeats, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"kind": "repeat", "test_accuracy": {"values": [0.7]}}))
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"kind": "sweep", "points": []}))
    a = str(repeats / "a.json")
    for argv, msg in (([str(bad), a], "not a JSON file"), ([a, str(one)], "at least 2 seeds"),
                      ([a, str(sweep)], "not a repeat result"), ([a, "150"], "between 0 and 100"),
                      ([a, "abc"], "no such file"), ([a, "nan"], "finite")):
        assert main(["compare", *argv]) != 0, argv
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_cli_entry_point_lists_the_new_commands_without_a_traceback():
    r = subprocess.run([sys.executable, "-m", "xray_core", "compare", "nope.json", "1"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr
    h = subprocess.run([sys.executable, "-m", "xray_core", "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert all(c in h.stdout for c in ("repeat", "sweep", "compare"))


# ---- sweeps come from the knob table (issue 22, item 3) --------------------------------

def _sweep_choices() -> list:
    from xray_core.cli.main import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return next(a for a in sub.choices["sweep"]._actions if a.dest == "knob").choices


def test_the_sweepable_knobs_their_types_and_labels_are_the_tables():
    from xray_core.config import KNOBS
    flagged = {(k.sweep.name or n): n for n, k in KNOBS.items() if k.sweep}
    assert list(ex.SWEEP_KNOBS) == list(flagged) == list(_sweep_choices())
    assert set(flagged) == {"alpha", "batch_size", "lr", "epochs", "dropout", "filter_scale", "limit_train",
                             "depth", "input_size", "base_filters"}
    for name, knob in flagged.items():
        k = KNOBS[knob]
        assert ex.SWEEP_KNOBS[name] is (k.sweep.kind or k.kind), name
        assert ex.KNOB_LABELS[name] == (k.sweep.label or k.noun), name
        ex.parse_values(name, k.sweep.values)   # the suggested values read and are valid
        for v in ex.parse_values(name, k.sweep.values):
            ex.with_knob(RunConfig(arch="segment" if KNOBS[knob].when == ("arch", ("segment",)) else "cnn"), name, v)
    assert ex.KNOB_LABELS["lr"] == "learning rate" and ex.KNOB_LABELS["limit_train"] == "training-set size"
    with pytest.raises(ConfigError, match="filter scale"):
        ex.with_knob(RunConfig(arch="cnn"), "filter_scale", 17)


def test_a_knob_flagged_sweepable_is_in_the_sweeps_and_the_clis_choices(monkeypatch):
    import dataclasses
    from xray_core import config
    assert "momentum" not in _sweep_choices()
    monkeypatch.setitem(config.KNOBS, "momentum", dataclasses.replace(config.KNOBS["momentum"],
                                                                      sweep=config.Sweep("0,0.5,0.9")))
    assert "momentum" in config.sweeps() and "momentum" in _sweep_choices()
    assert config.sweeps()["momentum"][1].kind is float and config.sweeps()["momentum"][1].label == "momentum"
