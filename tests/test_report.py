"""The homework report from store records (no training): which runs fill the table,
the figures beside the course's, and exports that are safe and work offline."""
import csv
import io
import re

import pytest

from xray_core.presets import PRESETS
from xray_core.runs.report import build_report, export, to_csv, to_html, to_markdown
from xray_core.runs.store import RunStore, StoreError


@pytest.fixture
def store(tmp_path):
    s = RunStore(home=tmp_path)
    yield s
    s.close()


def _run(store, preset, acc, state="finished", ws="ws", label=None):
    r = store.create_run(ws, PRESETS[preset].config, label=label)
    store.update_progress(r.id, state="training", epochs_done=2,
                          history={"loss": [1.0, 0.7], "accuracy": [0.5, 0.75], "val_loss": [1.1, 0.9],
                                   "val_accuracy": [0.45, 0.6]})
    res = {"test": {"accuracy": acc, "loss": 0.88}, "train_accuracy": 0.75} if state == "finished" else None
    return store.finish(r.id, state, result=res)


def test_latest_finished_run_of_each_preset_in_course_order(store):
    _run(store, "p1-task5", 0.60)
    newest5 = _run(store, "p1-task5", 0.70)
    _run(store, "p1-task5", 0.0, state="failed")           # newer, but not finished
    t1 = _run(store, "p1-task1", 0.65)
    _run(store, "p1-task2", 0.99, ws="someone-else")       # another workspace never counts
    rep = build_report(store, "ws")
    assert [(r.preset, r.run.id) for r in rep.rows] == [("p1-task1", t1.id), ("p1-task5", newest5.id)]
    assert rep.missing == ["p1-task2", "p1-task3", "p1-task4", "p2-task1", "p2-task2"]
    row = rep.rows[1]
    assert (row.train_accuracy, row.test_accuracy, row.test_loss) == (75.0, 70.0, 0.88)
    assert row.reported == PRESETS["p1-task5"].reported


def test_chosen_runs_keep_their_order_and_must_be_in_the_workspace(store):
    a, b = _run(store, "p1-task1", 0.5), _run(store, "p1-task3", 0.6)
    assert [r.run.id for r in build_report(store, "ws", [b.id, a.id]).rows] == [b.id, a.id]
    foreign = _run(store, "p1-task1", 0.5, ws="other")
    with pytest.raises(StoreError, match="no run"):
        build_report(store, "ws", [a.id, foreign.id])
    with pytest.raises(StoreError):
        build_report(store, "../ws")


def test_csv_and_markdown_hold_the_figures(store):
    _run(store, "p1-task2", 0.7123)
    rep = build_report(store, "ws")
    rows = list(csv.DictReader(io.StringIO(to_csv(rep))))
    assert rows[0]["preset"] == "p1-task2" and rows[0]["test_accuracy"] == "71.2"
    assert (rows[0]["course_train_accuracy"], rows[0]["course_test_accuracy"], rows[0]["course_test_loss"]) == \
        ("83.5", "69.1", "0.8")
    md = to_markdown(rep)
    assert "| 75.0 % | 71.2 % | 0.880 | 83.5 % | 69.1 % | 0.80 |" in md
    assert "| 2 | 0.7000 | 0.7500 | 0.9000 | 0.6000 |" in md          # the curve as a table
    assert "Not run yet: p1-task1, p1-task3" in md


def test_html_is_self_contained_and_escapes_what_students_typed(store):
    evil = '<script>alert("x")</script>'
    r = store.create_run("ws", PRESETS["p1-task1"].config.replace(epochs=3), label=evil)
    store.finish(r.id, "finished", result={"test": {"accuracy": 0.5, "loss": 1.0}})
    page = to_html(build_report(store, "ws", [r.id]))
    assert evil not in page and "&lt;script&gt;alert" in page
    assert page.count("plotly.js v") == 1                                  # the library, inlined once
    assert not re.search(r"<script[^>]+src=", page)                        # nothing fetched from the network
    assert page.count('class="plotly-graph-div"') == 2
    with pytest.raises(StoreError):
        export(build_report(store, "ws"), "pdf")


def test_exports_never_carry_the_workspace_key(store):
    """The key is the password to a student's runs; a handed-in report must not leak it."""
    key = "Sx3kQ9vLr2mZt8Wb4Ny7Jc"
    _run(store, "p1-task1", 0.66, ws=key)
    rep = build_report(store, key)
    for fmt in ("md", "csv", "html"):
        out = export(rep, fmt)
        assert key not in (out.decode() if isinstance(out, bytes) else out), fmt


def test_the_table_is_the_course_seven_only(store):
    rep = build_report(store, "ws")
    assert rep.missing == ["p1-task1", "p1-task2", "p1-task3", "p1-task4", "p1-task5", "p2-task1", "p2-task2"]


def test_a_unet_run_is_reported_as_a_map_with_dice_per_class_beside_the_prior(store):
    """A U-Net's test accuracy is pixel accuracy: the report says so, with Dice per class and
    the prior's figures (the map that ignores the image), in Markdown and HTML."""
    r = store.create_run("ws", PRESETS["p3-unet"].config)
    store.update_progress(r.id, state="training", epochs_done=1, history={"loss": [0.3], "accuracy": [0.96]})
    test = {"accuracy": 0.9749, "pixel_accuracy": 0.9749, "loss": 0.07, "films": 37, "map_ms_per_film": 12.2,
            "dice": {"background": 0.983, "clavicle": 0.879, "lung": 0.970, "heart": 0.951},
            "prior": {"pixel_accuracy": 0.8713, "dice": {"background": 0.914, "clavicle": 0.304, "lung": 0.825,
                                                        "heart": 0.816}, "training_films": 150}}
    store.finish(r.id, "finished", result={"test": test, "train_accuracy": 0.97})
    patch = _run(store, "p1-task1", 0.66)
    rep = build_report(store, "ws", [r.id, patch.id])
    md = to_markdown(rep)
    assert "Whole-film maps" in md
    assert f"| p3-unet | {r.id} | 37 | 97.49 % | 0.983 | 0.879 | 0.970 | 0.951 | 87.13 % | 0.304 | 12 ms |" in md
    assert patch.id not in md.split("Whole-film maps")[1].split("\n\n")[1]     # a patch run has no map row
    page = to_html(rep)
    assert "<table class='maps'>" in page and "<td>0.879</td>" in page and "<td>87.13 %</td>" in page
    # no U-Net picked: no maps section
    assert "Whole-film maps" not in to_markdown(build_report(store, "ws", [patch.id]))
