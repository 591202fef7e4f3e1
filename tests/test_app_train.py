"""AppTest drives the Train page by its stable widget keys."""
import re
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from .conftest import wait_for

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def at():
    st.cache_resource.clear()  # AppTest instances share one session id and cache_resource
    app = AppTest.from_file(APP, default_timeout=120).run()
    yield app
    job = _current_job(app)
    if job is not None:
        job.stop()
        job.join(60)


def _current_job(app):
    try:
        runs = app.session_state["xray_runs"]
    except KeyError:
        return None
    return runs.current.job if runs.current else None


def params(app) -> str:
    return next(m.value for m in app.metric if m.label == "Parameters")


def poll(app, pred, timeout=120):
    """Rerun the page until pred(page) holds (run_every does not fire in AppTest)."""
    return wait_for(lambda: pred(app.run()), timeout, every=0.3)


def test_page_starts_clean_and_counts_parameters_as_controls_change(at):
    assert not at.exception and not at.error
    assert params(at) == "353,254"
    at.checkbox(key="batch_norm").check().run()
    assert params(at) == "355,054"
    at.radio(key="arch").set_value("cnn").run()
    assert params(at) == "3,271,492"
    assert at.session_state["lr"] == 1e-5 and at.session_state["l2"] == 1e-2  # the course CNN's own values
    at.button(key="filters_halve").click().run()
    assert at.text_input(key="filters").value == "32,64,64,128,128" and params(at) == "1,392,772"
    at.radio(key="arch").set_value("fc").run()
    assert params(at) == "355,054"  # batch norm survived the trip through the CNN controls


def test_every_named_widget_key_exists(at):
    at.radio(key="arch").set_value("cnn").run()
    at.selectbox(key="activation").set_value("leaky_relu").run()
    keys = {w.key for kind in ("selectbox", "radio", "number_input", "slider", "checkbox", "text_input", "button")
            for w in getattr(at, kind)}
    for k in ("data_source", "arch", "activation", "alpha", "epochs", "batch_size", "lr", "optimizer",
              "dropout", "filters", "cnn_mode", "l2", "seed", "preset", "train", "stop", "limit_train"):
        assert k in keys, k
    at.radio(key="arch").set_value("fc").run()
    assert "batch_norm" in {w.key for w in at.checkbox}
    at.selectbox(key="optimizer").set_value("sgd").run()
    assert at.slider(key="momentum").value == 0.9  # SGD's momentum has its widget


def _widget_keys(app) -> set:
    return {w.key for kind in ("selectbox", "radio", "number_input", "slider", "checkbox", "text_input")
            for w in getattr(app, kind)}


def test_every_knob_of_the_table_has_its_widget_with_the_tables_range():
    from xray_core.config import KNOBS, bounds
    from xray_ui.controls import WIDGET_KNOBS
    seen = set()
    for q in ({"arch": "cnn"}, {"arch": "cnn", "cnn_mode": "corrected"},
              {"activation": "leaky_relu", "optimizer": "sgd"}, {"arch": "segment"}):
        app = page_with_link(q)
        assert not app.exception
        seen |= _widget_keys(app)
        for w in [*app.slider, *app.number_input]:
            if w.key in KNOBS and not KNOBS[w.key].cap:
                lo, hi = bounds(w.key)
                assert (w.max, w.min) == (hi, KNOBS[w.key].off if KNOBS[w.key].off is not None else lo), w.key
    assert set(WIDGET_KNOBS) == {n for n, k in KNOBS.items() if k.widget} and set(WIDGET_KNOBS) <= seen


def shown(element) -> str:
    """What the browser shows for a message made with texts.plain (backslash escapes removed)."""
    return re.sub(r"\\(.)", r"\1", element.value)


def page_with_link(query: dict) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    for k, v in query.items():
        app.query_params[k] = v
    return app.run()


@pytest.mark.parametrize("query, key, value", [
    ({"dropout": "0.95"}, "dropout", 0.95),
    ({"activation": "leaky_relu", "alpha": "0.995"}, "alpha", 0.995),
    ({"optimizer": "sgd", "momentum": "0.999"}, "momentum", 0.999),
    ({"epochs": "200", "batch_size": "1024", "lr": "1e-7"}, "batch_size", 1024),
])
def test_links_at_the_configs_limits_render(query, key, value):
    app = page_with_link(query)
    assert not app.exception and not app.warning, [w.value for w in app.warning]
    assert app.session_state[key] == value
    app.number_input(key="seed").set_value(3).run()
    assert not app.exception
    assert dict(app.query_params)[key] in (query[key], [query[key]])  # the knob survives in the link


def test_a_link_over_a_cost_cap_is_refused_in_one_line():
    app = page_with_link({"arch": "cnn", "filters": "2048,2048,2048,2048,2048"})
    assert not app.exception
    msgs = [shown(w) for w in app.warning]
    assert len(msgs) == 1 and "XRAY_LAB_MAX_PARAMS" in msgs[0] and "\n" not in msgs[0]
    assert params(app) == "353,254"  # the defaults, not the refused model


def test_the_sidebar_refuses_over_the_caps_without_building_the_model(at, monkeypatch):
    at.radio(key="arch").set_value("cnn").run()
    at.text_input(key="filters").input("64,256,256,64,64").run()
    assert not at.exception
    assert any("XRAY_LAB_MAX_MACS" in shown(i) for i in at.info) and at.button(key="train").disabled
    monkeypatch.setenv("XRAY_LAB_MAX_EPOCHS", "10")  # a teacher's cap below the page's 25 epochs
    at.text_input(key="filters").input("64,128,128,256,256").run()
    assert not at.exception and at.number_input(key="epochs").value == 25
    assert any("XRAY_LAB_MAX_EPOCHS" in shown(i) for i in at.info)
    at.number_input(key="epochs").set_value(10).run()
    assert not at.exception and not at.info and not at.button(key="train").disabled


def test_the_picker_names_the_preset_the_controls_equal(at):
    assert at.selectbox(key="preset").value == "p1-task1"  # the defaults are Task 1
    at.number_input(key="epochs").set_value(3).run()
    assert at.selectbox(key="preset").value == "(custom)"
    at.number_input(key="epochs").set_value(25).run()
    assert at.selectbox(key="preset").value == "p1-task1"


def test_text_from_a_link_is_shown_as_plain_text_not_markdown():
    import markdown_it
    app = page_with_link({"epochs": "[click me](https://evil.example/login)", "data": "<https://evil.example>"})
    assert not app.exception
    shown = " ".join(w.value for w in app.warning)
    assert "click me" in shown
    html = markdown_it.MarkdownIt("commonmark").render(shown)
    assert "<a" not in html and "evil.example/login" in html


def test_config_toml_hides_tracebacks_from_students():
    import tomllib
    cfg = tomllib.loads((Path(APP).parent / ".streamlit" / "config.toml").read_text())
    assert cfg["client"]["showErrorDetails"] == "none"


def test_the_streamlit_patch_fails_loudly_if_its_target_is_gone():
    import types
    from xray_ui import PATCHED, disable_keras_reset
    with pytest.raises(RuntimeError, match=PATCHED):
        disable_keras_reset(types.SimpleNamespace())
    fake = types.SimpleNamespace(**{PATCHED: lambda: None})
    disable_keras_reset(fake)
    assert getattr(fake, PATCHED).__name__ == "_no_keras_reset"


@pytest.mark.parametrize("name, expect", [
    ("p1-task1", dict(activation="relu", epochs=25, batch_size=64, batch_norm=False, arch="fc")),
    ("p1-task4", dict(activation="leaky_relu", epochs=40, batch_size=32, batch_norm=False)),
    ("p1-task5", dict(activation="leaky_relu", epochs=40, batch_size=32, batch_norm=True)),
    ("p2-task2", dict(arch="cnn", cnn_mode="seed", filters="32,64,64,128,128")),
])
def test_presets_fill_every_control(at, name, expect):
    at.selectbox(key="preset").set_value(name).run()
    for k, v in expect.items():
        assert at.session_state[k] == v, k
    assert at.session_state["lr"] == pytest.approx(1e-5)
    at.number_input(key="epochs").set_value(3).run()
    assert at.session_state["preset"] == "(custom)"  # an edited preset is no longer the course's


def test_p2_corrected_sets_valid_padding_and_the_sidebar_can_undo_it(at):
    at.selectbox(key="preset").set_value("p2-corrected").run()
    assert (at.session_state["arch"], at.session_state["cnn_mode"], at.session_state["padding"]) == \
        ("cnn", "corrected", "valid")
    assert params(at) == "411,076"            # the maps shrink to 1x1: a far smaller dense head
    at.radio(key="padding").set_value("same").run()
    assert not at.exception and params(at) == "1,394,116"
    assert at.session_state["preset"] == "(custom)"


def test_settings_come_from_and_go_to_the_url():
    st.cache_resource.clear()
    app = AppTest.from_file(APP, default_timeout=120)
    app.query_params["arch"] = "cnn"
    app.query_params["filters"] = "32,64,64,128,128"
    app.query_params["seed"] = "7"
    app.run()
    assert params(app) == "1,392,772" and app.session_state["seed"] == 7
    app.number_input(key="epochs").set_value(5).run()
    assert app.query_params["epochs"] == ["5"] or app.query_params["epochs"] == "5"
    bad = AppTest.from_file(APP, default_timeout=120)
    bad.query_params["epochs"] = "lots"
    bad.run()
    assert not bad.exception and any("ignored" in w.value for w in bad.warning)


def test_short_training_reaches_results(at, monkeypatch):
    at.number_input(key="epochs").set_value(2).run()
    at.number_input(key="limit_train").set_value(600).run()
    at.button(key="train").click().run()
    assert poll(at, lambda a: any(m.label == "Test accuracy" for m in a.metric))
    assert not at.exception
    labels = {m.label for m in at.metric}
    assert {"Test accuracy", "Test loss", "Train accuracy"} <= labels
    runs = at.session_state["xray_runs"]
    snap = runs.current.job.snapshot()
    assert snap.state == "done" and len(snap.history["loss"]) == 2
    assert len(at.get("plotly_chart")) >= 4  # curves, dead units, confusion, precision/recall
    # results in view: the headline figures next to the status line, pointing at the full results
    test = snap.result["test"]
    head = [m.value for m in at.markdown if "full results below" in m.value]
    assert head and f"Test accuracy {100 * test['accuracy']:.1f} %" in head[0] and "(#results)" in head[0]
    assert not any(m.delta for m in at.metric)  # course figures are captions, never a delta arrow
    # nothing moved: page reruns reuse the run's figures instead of building them again
    # (once the store has the run's end and the page shows the stored record: one rebuild)
    from xray_ui import charts

    def settled() -> bool:
        before = charts.FIGURES.builds
        at.run()
        return charts.FIGURES.builds == before
    assert wait_for(settled, 60, every=0.5)
    built = []
    for name in ("curves", "unit_monitor", "confusion", "precision_recall", "class_balance",
                 "activation_function"):
        real = getattr(charts, name)
        monkeypatch.setattr(charts, name, lambda *a, _f=real, _n=name, **k: built.append(_n) or _f(*a, **k))
    at.run()
    at.run()
    assert not at.exception and len(at.get("plotly_chart")) >= 4
    assert built == []
    # the test patches go out as the PNGs made once per run (Streamlit's "auto" format would
    # re-encode each one as a JPEG on every rerun, blurring the pixels the student inspects)
    from xray_core import CLASSES
    conf = test["confusion"]
    t, p = max(((i, j) for i in range(4) for j in range(4)), key=lambda c: conf[c[0]][c[1]])
    at.selectbox(key="mis_true").set_value(CLASSES[t]).run()
    at.selectbox(key="mis_pred").set_value(CLASSES[p]).run()
    urls = [img.url for el in at.get("image") for img in el.proto.imgs]
    assert urls and all(u.endswith(".png") for u in urls)


def test_the_course_figure_is_a_caption_without_an_arrow(at):
    at.selectbox(key="preset").set_value("p1-task1").run()
    at.number_input(key="limit_train").set_value(300).run()   # 25 short epochs; still the preset
    at.button(key="train").click().run()
    assert poll(at, lambda a: any(m.label == "Test accuracy" for m in a.metric))
    assert any(c.value == "course: 66.8 %" for c in at.caption)
    assert not any(m.delta for m in at.metric)


def test_stop_ends_the_run_and_keeps_results(at):
    at.number_input(key="epochs").set_value(200).run()  # the longest run the default caps allow
    at.button(key="train").click().run()
    assert poll(at, lambda a: _current_job(a).snapshot().state == "training"
                and len(_current_job(a).snapshot().batch_loss) > 0)
    at.button(key="stop").click().run()
    assert poll(at, lambda a: _current_job(a).snapshot().finished)
    assert _current_job(at).snapshot().state == "stopped"
    assert poll(at, lambda a: any(m.label == "Test accuracy" for m in a.metric))


def test_a_folder_outside_the_data_roots_cannot_be_named(at, tmp_path, monkeypatch):
    """The Folder source is a picker of the roots' datasets; a stale or forged name is refused
    in one line that names no server path."""
    from xray_core.data import roots
    from .fixtures_data import course_layout, rids
    monkeypatch.setenv("XRAY_LAB_DATA_ROOTS", str(tmp_path / "root"))
    roots.clear_cache()
    course_layout(tmp_path / "root" / "course", {"train": rids(2, "A")}, per_class=2)
    at.radio(key="data_source").set_value("folder").run()
    assert at.selectbox(key="data_path").options == ["course"]
    st.cache_resource.clear()
    linked = AppTest.from_file(APP, default_timeout=120)
    linked.query_params["data"] = str(tmp_path / "root" / "course")   # a server path, even a real one
    linked.run()
    assert not linked.exception and linked.button(key="train").disabled
    assert linked.selectbox(key="data_path").value is None
    shown = [m.value for m in (*linked.error, *linked.info, *linked.warning)]
    assert any("not available on this server" in m for m in shown)
    assert not any(str(tmp_path) in m for m in shown)


def test_streamlit_never_resets_keras_between_reruns(monkeypatch):
    """Streamlit calls keras.backend.clear_session() after every script run unless
    xray_ui disables it; with live charts that stalls training ~100x."""
    import keras
    calls = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: calls.append(1))
    st.cache_resource.clear()
    app = AppTest.from_file(APP, default_timeout=120).run()
    app.run()
    assert not app.exception and calls == []


def test_a_folder_without_a_train_split_cannot_be_trained_on(at, tmp_path, monkeypatch):
    from xray_core.data import roots
    from .fixtures_data import course_layout, rids
    monkeypatch.setenv("XRAY_LAB_DATA_ROOTS", str(tmp_path))
    roots.clear_cache()
    course_layout(tmp_path / "only_test", {"test": rids(1, "T")}, per_class=2)
    at.radio(key="data_source").set_value("folder").run()
    at.selectbox(key="data_path").select("only_test").run()
    assert not at.exception and at.button(key="train").disabled
    assert any("no training split" in w.value for w in at.warning)


def test_streamlits_config_is_read_without_its_lock_and_gives_the_same_values():
    import types

    import streamlit.config as config
    from xray_ui import read_config_without_lock
    assert config.get_option.xray_unlocked
    locked = config.get_option.locked
    config.get_config_options()                      # parsed (the server does it at start-up)
    for key in config._config_options:
        assert config.get_option(key) == locked(key), key
    with pytest.raises(RuntimeError, match="not defined"):
        config.get_option("no.suchOption")            # Streamlit's own error for an unknown key
    with pytest.raises(RuntimeError, match="_config_options"):
        read_config_without_lock(types.SimpleNamespace(get_option=lambda k: None))
    # while config._config_lock is held elsewhere, reading does not wait for it
    import threading
    got = []
    with config._config_lock:
        t = threading.Thread(target=lambda: got.append(config.get_option("server.port")))
        t.start()
        t.join(5)
    assert got == [locked("server.port")]


def test_the_page_has_an_idle_worker_prepare_the_sidebar_model(monkeypatch):
    """What the sidebar shows is traced in advance (xray_core/pretrace.py): every page run
    asks the pool for it, with the data the job will train on."""
    from xray_core.train.backends import worker
    calls = []
    monkeypatch.setattr(worker.POOL, "prepare", lambda cfg, n, dataset=None: calls.append((cfg, n, dataset)))
    st.cache_resource.clear()
    app = AppTest.from_file(APP, default_timeout=120).run()
    assert not app.exception and calls
    cfg, n, dataset = calls[-1]
    assert cfg.epochs == 25 and n == len(dataset.split("train"))
    app.number_input(key="epochs").set_value(7).run()
    assert calls[-1][0].epochs == 7
