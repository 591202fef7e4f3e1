"""The live lecture through the pages (issue 25, AppTest): a student's ■ Stop and the
teacher's stop reach a run on another server (its stop flag); the class experiment on the
Class board and the Train page's one-click join; "Send to class" and the pinned message;
the projector view (?view=present). Each test has its own empty store (conftest)."""
import json
import secrets
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from xray_core.config import RunConfig
from xray_core.presets import get_preset
from xray_core.runs import classes
from xray_core.runs.store import get_store

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
BOARD = "pages/6_Class_board.py"
PASSWORD = "s3cret"


@pytest.fixture
def visit():
    st.cache_resource.clear()   # AppTest instances share one session id and cache_resource
    from xray_ui import lecture
    lecture.forget()            # the pin and status caches are per process (1 s)

    def open_page(page=None, ws=None, **params):
        app = AppTest.from_file(APP, default_timeout=120)
        if ws is not None:
            app.query_params["ws"] = ws
        for k, v in params.items():
            app.query_params[k] = v
        app.run()
        if page:
            app.switch_page(page).run()
        return app
    return open_page


@pytest.fixture
def teacher(visit, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_TEACHER_PASSWORD", PASSWORD)

    def open_board(**params):
        app = visit(BOARD, **params)
        app.text_input(key="teacher_password").input(PASSWORD).run()
        assert not app.exception
        return app
    return open_board


def ws_of(app) -> str:
    v = app.query_params["ws"]
    return v[0] if isinstance(v, list) else v


def texts(app) -> str:
    out = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)
    walk(app._tree)
    return "\n".join(out)


def other_server_run(ws, config=None, **kw):
    """A run "training on another server": a store row with no job in this process."""
    s = get_store()
    rec = s.create_run(ws, config or RunConfig(epochs=3), state="training", **kw)
    s.update_progress(rec.id, state="training", epochs_done=1,
                      history={"loss": [0.9], "accuracy": [0.5], "val_loss": [1.0], "val_accuracy": [0.4]})
    return rec


# ---- (a) stop anywhere --------------------------------------------------------------------

def test_a_students_stop_reaches_a_run_on_another_server(visit):
    app = visit()
    ws = ws_of(app)
    rec = other_server_run(ws)
    app = visit(ws=ws)
    assert not app.exception
    assert not app.button(key="stop").disabled                # it trains elsewhere, and can still be stopped
    assert "reaches it there" in texts(app)
    app.button(key="stop").click().run()
    assert not app.exception and get_store().stop_requested(rec.id)


def test_the_teachers_stop_sets_the_flag_of_a_run_on_another_server(teacher):
    rec = other_server_run("someone-else-ws")
    app = teacher()
    app.multiselect(key="teacher_pick").set_value([rec.id]).run()
    app.button(key="teacher_stop").click().run()
    assert not app.exception and get_store().stop_requested(rec.id)
    assert any("Asked 1 run(s) to stop" in s.value for s in app.success)


# ---- (b) the class experiment -------------------------------------------------------------

def _stop_session_jobs(app):
    try:
        session = app.session_state["xray_runs"]
    except KeyError:
        return
    for run in session.runs:
        run.job.stop()
        run.job.join(60)


def test_the_teacher_opens_watches_and_closes_a_class_experiment(teacher):
    app = teacher()
    assert app.button(key="class_open")
    app.multiselect(key="class_setups").set_value(["p1-task1"]).run()
    app.button(key="class_open").click().run()
    assert not app.exception
    assert any("2 to 6 setups" in e.value for e in app.error) and classes.current() is None   # one line
    app.multiselect(key="class_setups").set_value(["p1-task1", "p1-task2"]).run()
    app.text_input(key="class_title").input("Does LeakyReLU help?").run()
    app.number_input(key="class_epochs").set_value(2).run()
    app.button(key="class_open").click().run()
    assert not app.exception
    exp = classes.current()
    assert exp and exp["title"] == "Does LeakyReLU help?"
    assert [RunConfig.from_dict(s["config"]).epochs for s in exp["setups"]] == [2, 2]
    # students take turns and their runs arrive: the board shows them per setup with the verdict
    s = get_store()
    for i, acc in enumerate([0.60, 0.75, 0.62, 0.77, 0.61, 0.76]):
        a = classes.assign(exp["id"], f"student{i}")
        r = s.create_run(f"student{i}", a.config, group_id=exp["id"])
        s.finish(r.id, "finished", result={"test": {"accuracy": acc, "loss": 1.0}})
    live = classes.assign(exp["id"], "late")
    other_server_run("late", a.config.replace(seed=live.seed), group_id=exp["id"])
    app.run()
    table = app.dataframe[0].value      # the lecture's status, above the teacher's table of runs
    assert list(table["finished"]) == [3, 3] and list(table["joined"]) == [4, 3]
    assert table["runs arrived"][0] == "3 finished · 1 training"
    assert table["mean test acc ± 95 % CI"][0].startswith("61.0 % ± ")
    text = texts(app)
    assert "**no evidence** (p = 0.1)" in text        # 3 vs 3: an exact permutation test cannot go lower
    app.button(key="class_close").click().run()
    assert not app.exception and classes.get(exp["id"])["state"] == "closed"
    assert classes.current() is None


def test_students_see_the_open_experiment_on_the_board_read_only(visit):
    cid = classes.open(["p1-task1", "p1-task2"], "ReLU or LeakyReLU?")
    app = visit(BOARD)
    assert not app.exception
    assert "ReLU or LeakyReLU?" in texts(app)
    assert app.dataframe[0].value["setup"].tolist() == ["p1-task1", "p1-task2"]
    assert not [b for b in app.button if b.key in ("class_close", "class_open")]


def test_join_fills_the_sidebar_with_the_turn_and_train_records_it(visit):
    cid = classes.open(["p1-task1", "p1-task2"], "Task 1 vs Task 2",
                       overrides={"epochs": 1, "limit_train": 64})
    classes.assign(cid, "someone-before")            # turn 0 is taken: this student gets turn 1
    app = visit()
    assert not app.exception
    app.number_input(key="epochs").set_value(7).run()   # the student's own edit: joining replaces it on the click
    app.button(key="class_join").click().run()
    assert not app.exception
    turn = app.session_state["_class_turn"]
    assert (turn["experiment_id"], turn["number"], turn["seed"], turn["setup"]) == (cid, 1, 1, 1)
    assert app.session_state["seed"] == 1 and app.session_state["epochs"] == 1
    assert app.session_state["activation"] == "leaky_relu"          # p1-task2's
    assert "this run counts for the class" in texts(app)
    try:
        app.button(key="train").click().run()
        assert not app.exception
        runs = get_store().list_runs(ws_of(app))
        assert len(runs) == 1 and runs[0].group_id == cid and runs[0].config["seed"] == 1
        assert "_class_turn" not in app.session_state                # used: joining again takes another
        st_ = classes.status(cid)
        assert st_["setups"][1]["assigned"] == 1 and st_["setups"][1]["runs"][0]["id"] == runs[0].id
    finally:
        _stop_session_jobs(app)


def test_a_changed_sidebar_is_not_recorded_as_the_turn(visit):
    cid = classes.open(["p1-task1", "p1-task2"], overrides={"epochs": 1, "limit_train": 64})
    app = visit()
    app.button(key="class_join").click().run()
    app.number_input(key="epochs").set_value(3).run()
    assert "no longer matches" in texts(app)
    app.button(key="class_refill").click().run()
    assert app.session_state["epochs"] == 1 and "this run counts for the class" in texts(app)


def test_joining_a_closed_experiment_is_one_error_line(visit):
    cid = classes.open(["p1-task1", "p1-task2"])
    app = visit()
    classes.close(cid)
    app.button(key="class_join").click().run()     # the button was drawn while it was open
    assert not app.exception
    assert len(app.error) == 1 and "closed" in app.error[0].value
    assert "_class_turn" not in app.session_state


# ---- (c) send to class --------------------------------------------------------------------

def test_send_to_class_offers_a_banner_that_waits_for_a_click(teacher, visit):
    student = visit()
    student.number_input(key="epochs").set_value(9).run()       # the student's own edit
    board = teacher()
    board.selectbox(key="send_preset").set_value("p1-task1").run()
    board.selectbox(key="send_activation").set_value("leaky_relu").run()
    board.number_input(key="send_alpha").set_value(0.1).run()
    board.text_input(key="send_message").input("Watch the validation loss").run()
    board.button(key="send_class").click().run()
    assert not board.exception and any("Sent" in s.value for s in board.success)
    from xray_ui import lecture
    lecture.forget()
    student.run()
    assert not student.exception
    assert "**Try this:** p1\\-task1 — LeakyReLU α 0\\.1" in [m.value for m in student.markdown], \
        [m.value for m in student.markdown]
    assert student.session_state["epochs"] == 9                   # nothing changed without a click
    assert any("Watch the validation loss" in i.value for i in student.info)   # pinned
    seed = student.session_state["seed"]
    student.button(key="pin_accept").click().run()
    assert not student.exception
    assert student.session_state["activation"] == "leaky_relu" and student.session_state["alpha"] == 0.1
    assert student.session_state["epochs"] == get_preset("p1-task1").config.epochs
    assert student.session_state["seed"] == seed                  # the student's seed stays
    assert not [b for b in student.button if b.key == "pin_accept"]   # accepted: the banner is gone
    # the pinned message shows on every page
    for page in ("pages/2_Classify.py", "pages/3_Report.py", BOARD):
        other = visit(page)
        assert any("Watch the validation loss" in i.value for i in other.info), page
    board.button(key="send_clear").click().run()
    lecture.forget()
    student.run()
    assert not any("Watch the validation loss" in i.value for i in student.info)


def test_a_bad_send_is_one_error_line(teacher):
    board = teacher()
    board.selectbox(key="send_activation").set_value("tanh").run()       # knobs but no preset
    board.button(key="send_class").click().run()
    assert not board.exception and len(board.error) == 1 and "preset" in board.error[0].value
    board.selectbox(key="send_activation").set_value("(the preset's)").run()
    board.button(key="send_class").click().run()                         # nothing at all
    assert len(board.error) == 1 and "Nothing to send" in board.error[0].value
    assert classes.pinned() is None


# ---- (d) the projector view ---------------------------------------------------------------

def _race_spec(app) -> dict:
    chart = next(c for c in app.get("plotly_chart") if "present_race" in str(c.proto.id))
    return json.loads(chart.proto.spec)


@pytest.mark.parametrize("page", [None, BOARD])
def test_the_projector_view_races_the_class_curves(visit, page):
    cid = classes.open(["p1-task1", "p1-task2"], "Task 1 vs Task 2")
    s = get_store()
    for i, vals in enumerate([[0.4, 0.5], [0.6, 0.7], [0.3, 0.5], [0.65]]):
        a = classes.assign(cid, f"s{i}")
        r = s.create_run(f"s{i}", a.config, group_id=cid)
        s.update_progress(r.id, state="training", epochs_done=len(vals),
                          history={"loss": vals, "accuracy": vals, "val_loss": vals, "val_accuracy": vals})
    app = visit(page, view="present")
    assert not app.exception
    text = texts(app)
    assert "Task 1 vs Task 2" in text and 'display: none' in text        # the sidebar hidden
    assert not [b for b in app.button if b.key in ("train", "teacher_logout")]
    spec = _race_spec(app)
    faint = [t for t in spec["data"] if not t.get("showlegend", True)]
    bold = [t for t in spec["data"] if t.get("showlegend", True)]
    assert len(faint) == 4 and all(t["line"]["width"] == 2 for t in faint)
    assert [t["name"] for t in bold] == ["p1-task1 (mean of 2)", "p1-task2 (mean of 2)"]
    assert bold[0]["y"] == pytest.approx([35.0, 50.0]) and bold[1]["y"] == pytest.approx([62.5, 70.0])
    assert spec["layout"]["font"]["size"] >= 20
    # the fragment redraws at most once a second
    from xray_ui import lecture
    assert lecture.PRESENT_REFRESH_S >= 1.0


def test_the_projector_view_without_an_experiment_says_so(visit):
    app = visit(BOARD, view="present")
    assert not app.exception and "No class experiment yet" in texts(app)


def test_a_new_send_and_experiment_show_on_the_next_run_of_the_train_page(visit):
    """The watcher fragment (every WATCH_S) reruns the page when the send or the experiment changed."""
    from xray_ui import lecture
    app = visit()
    assert not [b for b in app.button if b.key in ("pin_accept", "class_join")]
    classes.send("p1-task3", {}, "Look up")
    cid = classes.open(["p1-task1", "p1-task2"])
    lecture.forget()
    app.run()        # what the fragment's rerun does (run_every does not fire in AppTest)
    assert {b.key for b in app.button} >= {"pin_accept", "class_join"}
    assert lecture.WATCH_S <= 5 and lecture.CACHE_S <= lecture.WATCH_S


def test_the_report_page_shows_and_exports_the_class_experiment(visit):
    app = visit()
    ws = ws_of(app)
    cid = classes.open(["p1-task1", "p1-task2"], "Task 1 vs Task 2", overrides={"epochs": 2})
    s = get_store()
    for i, (who, acc) in enumerate([(ws, 0.61), ("b", 0.74), ("c", 0.60), ("d", 0.75)]):
        a = classes.assign(cid, who)
        r = s.create_run(who, a.config, group_id=cid)     # 2 epochs: not a course preset
        s.finish(r.id, "finished", result={"test": {"accuracy": acc, "loss": 1.0}})
    rep = visit("pages/3_Report.py", ws=ws)
    assert not rep.exception
    assert any(h.value == "Class experiment: Task 1 vs Task 2 (open)" for h in rep.subheader)
    assert rep.dataframe[0].value["finished"].tolist() == [2, 2]
    assert "Report (Markdown)" in texts(rep) and "Report (HTML" in texts(rep)   # the downloads are offered
    from xray_core.runs import report as rp
    md = rp.export(rp.build_report(s, ws), "md")
    assert "## Class experiment: Task 1 vs Task 2 (open)" in md
