"""Workspaces and the run store seen through the pages (AppTest): the ?ws= key, runs
that survive a refresh, reattaching a live job, interrupted runs, the homework report
and the class board. Each test has its own empty store (conftest: XRAY_LAB_HOME)."""
import json
import secrets
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import wait_for
import sqlalchemy as sa
import streamlit as st
from streamlit.testing.v1 import AppTest

from xray_core.presets import get_preset
from xray_core.runs.store import get_store, runs as runs_table
from xray_core.train.job import TrainingJob
from xray_ui.session import job_for, valid_workspace

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
REPORT = "pages/3_Report.py"
BOARD = "pages/6_Class_board.py"
WS_A, WS_B, WS_C = (secrets.token_urlsafe(16) for _ in range(3))  # never found by chance in chart data


@pytest.fixture(scope="module")
def trained(toy_dataset):
    """One real small training (p1-task1 as the course sets it, on 256 toy patches): its
    snapshot is recorded into each test's own store."""
    job = TrainingJob(get_preset("p1-task1").config.replace(limit_train=256, data="phantom"), toy_dataset).run()
    snap = job.snapshot()
    assert snap.state == "done"
    return job, snap


def record(trained, ws, *, label=None, shared=False, nickname=None, state="finished"):
    job, snap = trained
    s = get_store()
    rec = s.create_run(ws, job.config, label=label, state="training")
    s.finish(rec.id, state, result=snap.result, epochs_done=snap.epoch, history=snap.history,
             batch_loss=snap.batch_loss, batch_epoch=snap.batch_epoch, unit_stats=snap.unit_stats)
    if shared or nickname:
        s.set_shared(rec.id, shared, nickname)
    return s.get(rec.id)


@pytest.fixture
def visit():
    """Open the app as a browser would: a new session, optionally with ?ws=…"""
    st.cache_resource.clear()  # AppTest instances share one session id and cache_resource
    apps = []

    def open_app(ws=None, page=None, **params):
        app = AppTest.from_file(APP, default_timeout=120)
        if ws is not None:
            app.query_params["ws"] = ws
        for k, v in params.items():
            app.query_params[k] = v
        app.run()
        if page:
            app.switch_page(page).run()
        apps.append(app)
        return app

    yield open_app
    for app in apps:
        try:
            session = app.session_state["xray_runs"]
        except KeyError:
            continue
        for run in session.runs:
            run.job.stop()
            run.job.join(60)


def ws_of(app) -> str:
    v = app.query_params["ws"]
    return v[0] if isinstance(v, list) else v


def labels(app) -> list[str]:
    return list(app.dataframe(key="runs_table").value["label"])


def page_text(app) -> str:
    """Everything the page sends to the browser (element protos, incl. chart JSON)."""
    out = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)
    walk(app._tree)
    return "\n".join(out)


def last_batch_x(app) -> float:
    for chart in app.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        for trace in spec.get("data", []):
            if trace.get("name") == "batch loss" and trace.get("x"):
                return float(trace["x"][-1])
    return 0.0


def poll(app, pred, timeout=120):
    """Re-run the page until pred(app) holds (the fragment's run_every does not fire in AppTest)."""
    return bool(wait_for(lambda: (app.run(), pred(app))[1], timeout, every=0.3))


def test_a_new_visit_gets_its_own_workspace_key(visit):
    a, b = visit(), visit()
    assert not a.exception and not b.exception
    assert valid_workspace(ws_of(a)) and valid_workspace(ws_of(b)) and ws_of(a) != ws_of(b)
    a.number_input(key="epochs").set_value(3).run()  # the config mirror keeps the key in the link
    assert ws_of(a) == a.session_state["xray_ws"] and a.query_params["epochs"] in ("3", ["3"])
    assert not a.get("dataframe") or "runs_table" not in {d.key for d in a.dataframe}  # empty workspace


def test_a_malformed_key_gets_a_new_workspace_and_a_notice(visit, trained):
    record(trained, WS_A)
    for bad in ("short", WS_A[:-1] + "!", "x" * 65):
        app = visit(bad)
        assert not app.exception
        assert ws_of(app) != bad and valid_workspace(ws_of(app))
        assert any("not valid" in w.value for w in app.warning)
        assert "runs_table" not in {d.key for d in app.dataframe}


def test_two_workspaces_never_see_each_others_runs(visit, trained):
    record(trained, WS_A, label="alpha run")
    record(trained, WS_B, label="beta run")
    a, b = visit(WS_A), visit(WS_B)
    assert labels(a) == ["alpha run"] and labels(b) == ["beta run"]
    assert WS_B not in page_text(a) and WS_A not in page_text(b)
    assert "beta" not in page_text(visit(WS_A, REPORT))
    assert "runs_table" not in {d.key for d in visit(WS_C).dataframe}


def test_a_finished_run_shows_fully_after_a_refresh(visit, trained):
    rec = record(trained, WS_A, label="old run")
    app = visit(WS_A)
    assert not app.exception and labels(app) == ["old run"]
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Test accuracy"] == f"{100 * rec.test['accuracy']:.1f} %"
    assert len(app.get("plotly_chart")) >= 4   # curves, dead units, confusion, precision/recall
    assert any("available for runs trained since the server started" in c.value for c in app.caption)


def test_refresh_reattaches_the_live_run_and_its_chart_keeps_moving(visit):
    first = visit(None, None, epochs="300", limit_train="320", batch_size="16")
    ws = ws_of(first)
    first.button(key="train").click().run()
    run = first.session_state["xray_runs"].current
    assert poll(first, lambda a: run.job.snapshot().state == "training" and len(run.job.snapshot().batch_loss) > 5)
    # "F5": a new session with the same link
    again = visit(ws)
    assert not again.exception
    assert labels(again) == [get_store().get(run.run_id).label]   # the one run, listed again
    assert job_for(run.run_id) is run.job                     # the same job, found again by its run id
    assert again.get("progress") and not again.button(key="stop").disabled
    x0 = last_batch_x(again)
    assert x0 > 0
    assert poll(again, lambda a: last_batch_x(a) > x0, timeout=60)   # the chart continues where it was
    again.button(key="stop").click().run()                    # and the new tab can stop it
    assert poll(again, lambda a: run.job.snapshot().finished)
    assert run.job.snapshot().state == "stopped"
    assert poll(again, lambda a: get_store().get(run.run_id).state == "stopped")


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_run_whose_server_died_shows_as_interrupted_with_its_epochs(visit, trained):
    job, snap = trained
    done = record(trained, WS_A, label="finished before")
    s = get_store()
    rec = s.create_run(WS_A, job.config, label="cut short", state="training")
    cut = [i for i, x in enumerate(snap.batch_epoch) if x <= 2]
    s.update_progress(rec.id, epochs_done=2, history={k: v[:2] for k, v in snap.history.items()},
                      batch_loss=[snap.batch_loss[i] for i in cut], batch_epoch=[snap.batch_epoch[i] for i in cut])
    with s.engine.begin() as conn:  # as if written by a server process that has died since
        conn.execute(sa.update(runs_table).where(runs_table.c.id == rec.id)
                     .values(owner=f"{socket.gethostname()}:{_dead_pid()}"))
    app = visit(WS_A)
    assert not app.exception
    df = app.dataframe(key="runs_table").value
    assert list(df["label"]) == ["finished before", "cut short"]
    assert list(df["state"]) == ["finished", "interrupted at epoch 2"]
    assert any("interrupted at epoch 2" in w.value for w in app.warning)
    assert s.get(rec.id).state == "interrupted" and s.get(done.id).state == "finished"
    assert last_batch_x(app) == pytest.approx(snap.batch_epoch[cut[-1]])   # its curves are still there


def test_delete_asks_then_removes_the_run_and_its_model(visit, trained, tmp_path):
    job, snap = trained
    s = get_store()
    rec = s.create_run(WS_A, job.config, state="training")
    model_src = tmp_path / "m.keras"
    job.model.save(model_src)
    rec = s.finish(rec.id, "finished", result=snap.result, model_src=model_src, epochs_done=2,
                   history=snap.history)
    assert Path(rec.model_path).is_file()
    app = visit(WS_A)
    app.button(key="delete_run").click().run()
    assert get_store().get(rec.id) is not None                  # nothing gone before the confirmation
    app.button(key="delete_confirm").click().run()
    assert not app.exception
    assert get_store().get(rec.id) is None and not Path(rec.model_path).exists()
    assert "runs_table" not in {d.key for d in app.dataframe}


def test_report_page_fills_the_course_table_from_this_workspace(visit, trained):
    rec = record(trained, WS_A)
    record(trained, WS_B)
    app = visit(WS_A, REPORT)
    assert not app.exception and not app.error
    table = app.dataframe[0].value
    assert list(table["preset"]) == ["p1-task1"]
    assert table["test_accuracy"][0] == pytest.approx(round(100 * rec.test["accuracy"], 1))
    assert table["course_test_accuracy"][0] == 66.8
    downloads = {d.proto.label for d in app.get("download_button")}
    assert {"Report (Markdown)", "Report (HTML, works offline)", "Report (CSV)"} <= downloads
    assert len(app.get("plotly_chart")) == 2        # summary + the run's curves
    assert any("p2-task2" in c.value for c in app.caption)   # presets not run yet are named
    app.radio(key="report_mode").set_value("pick").run()
    app.multiselect(key="report_runs").set_value([rec.id]).run()
    assert list(app.dataframe[0].value["preset"]) == ["p1-task1"]
    empty = visit(WS_C, REPORT)
    assert not empty.exception and not empty.dataframe  # an empty workspace has no table


def test_class_board_shows_only_shared_runs_and_never_a_key(visit, trained):
    shared = record(trained, WS_A, shared=True, nickname="Ada")
    private = record(trained, WS_A, label="private one")
    other = record(trained, WS_B, label="not shared either")
    app = visit(WS_C, BOARD)
    assert not app.exception
    text = page_text(app)
    assert "Ada" in text
    for secret in (WS_A, WS_B, shared.id, private.id, other.id, "private one", "not shared either"):
        assert secret not in text
    assert len(app.dataframe) == 1     # one preset, one leaderboard (tables without selection have no key here)
    board = app.dataframe[0].value
    assert list(board["who"]) == ["Ada"] and "workspace" not in board.columns
    assert len(app.get("plotly_chart")) == 1


def test_sharing_from_the_train_page(visit, trained):
    rec = record(trained, WS_A)
    app = visit(WS_A)
    app.text_input(key="nickname").input("Grace").run()
    app.toggle(key="share").set_value(True).run()
    got = get_store().get(rec.id)
    assert got.shared and got.nickname == "Grace"
    assert "Grace" in page_text(visit(WS_C, BOARD))


def test_teacher_password_shows_every_run_and_can_remove(visit, trained, monkeypatch):
    record(trained, WS_A, shared=True, nickname="Ada")
    private = record(trained, WS_B, label="private one")
    student = visit(WS_C, BOARD)
    assert "teacher_password" not in {t.key for t in student.text_input}  # no password set: no login
    monkeypatch.setenv("XRAY_LAB_TEACHER_PASSWORD", "s3cret")
    from xray_ui import throttle
    monkeypatch.setattr(throttle, "BASE_S", 0.0)   # no wait after the wrong one (tests/test_hostile_login.py checks it)
    app = visit(WS_C, BOARD)
    app.text_input(key="teacher_password").input("wrong").run()
    assert any("Wrong password" in e.value for e in app.error)
    assert len(app.dataframe) == 1   # the class's board only, no teacher table
    assert "private one" not in page_text(app)
    app.text_input(key="teacher_password").input("s3cret").run()
    assert not app.exception
    table = app.dataframe[-1].value   # after "what the class sees"
    assert len(table) == 2 and "private one" in list(table["label"])
    assert WS_A not in page_text(app) and WS_B not in page_text(app)
    app.multiselect(key="teacher_pick").set_value([private.id]).run()
    app.button(key="teacher_remove").click().run()
    assert get_store().get(private.id) is not None
    app.button(key="teacher_remove_confirm").click().run()
    assert not app.exception and get_store().get(private.id) is None
    assert len(app.dataframe[-1].value) == 1


def test_the_runs_table_shows_the_knobs_flagged_column(visit, trained):
    from xray_core.config import KNOBS
    record(trained, WS_A, label="fc run")
    app = visit(WS_A)
    assert not app.exception
    df = app.dataframe(key="runs_table").value
    titles = [k.column.title for k in KNOBS.values() if k.column]
    assert list(df.columns)[:3 + len(titles)] == ["run", "label", "state", *titles]
    row = df.iloc[0]
    assert (row["arch"], row["batch"], row["filters"], row["mode"]) == ("fc", 64, "", "")   # CNN knobs blank
    assert row["epochs"] == f"{trained[1].epoch}/{trained[1].epochs}"                         # progress


def test_report_page_shows_a_picked_unet_run_as_a_map_with_dice(visit):
    s = get_store()
    rec = s.create_run(WS_A, get_preset("p3-unet").config, state="training")
    test = {"accuracy": 0.9749, "pixel_accuracy": 0.9749, "loss": 0.07, "films": 37, "map_ms_per_film": 12.2,
            "dice": {"background": 0.983, "clavicle": 0.879, "lung": 0.970, "heart": 0.951},
            "prior": {"pixel_accuracy": 0.8713, "dice": {"clavicle": 0.304}, "training_films": 150},
            "confusion": [[9, 0, 1, 0], [0, 8, 2, 0], [1, 0, 9, 0], [0, 0, 1, 9]],
            "precision": dict.fromkeys(("background", "clavicle", "lung", "heart"), 0.9),
            "recall": dict.fromkeys(("background", "clavicle", "lung", "heart"), 0.9)}
    s.finish(rec.id, "finished", result={"test": test, "train_accuracy": 0.97}, epochs_done=22,
             history={"loss": [0.3], "accuracy": [0.97]})
    app = visit(WS_A, REPORT)
    app.radio(key="report_mode").set_value("pick").run()
    assert any("pixel acc 97.5 %" in o for o in app.multiselect(key="report_runs").options)
    app.multiselect(key="report_runs").set_value([rec.id]).run()
    assert not app.exception and not app.error
    maps = [d.value for d in app.dataframe if "Dice c" in d.value.columns]    # (a dataframe's key is not kept here)
    assert len(maps) == 1
    maps = maps[0]
    assert list(maps["Dice c"]) == ["0.879"] and list(maps["prior pixel acc"]) == ["87.13 %"]
