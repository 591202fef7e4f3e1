"""AppTest drives the Experiments page (pages/4_Experiments.py): it renders, a tiny repeat
(p1-task2 with 2 seeds on 200 phantom patches) runs in the background and shows mean ± sd, the
comparison against the course's figure gives a verdict, and bad sweep values are refused."""
from pathlib import Path

import pytest

from tests.conftest import wait_for
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/4_Experiments.py"


@pytest.fixture
def page():
    st.cache_resource.clear()  # AppTest instances share one session id and cache_resource
    app = AppTest.from_file(APP, default_timeout=120).run()
    app.switch_page(PAGE).run()
    yield app
    for e in app.session_state["xray_experiments"] if "xray_experiments" in app.session_state else []:
        e.group.stop()
        for m in e.group.members:
            m.job.join(60)


def poll(app, pred, timeout=300):  # generous: CI and a shared 2-core box are slow
    """Re-run the page until pred(app) holds (the fragment's run_every does not fire in AppTest)."""
    return bool(wait_for(lambda: (app.run(), pred(app))[1], timeout, every=0.5))


def metric(app, label):
    return next((m.value for m in app.metric if m.label == label), None)


def test_page_renders_with_every_tab_and_nothing_to_compare_yet(page):
    assert not page.exception and not page.error
    assert page.title[0].value == "X-ray Lab · Experiments"
    assert page.radio(key="exp_view").options == ["Repeat", "Compare", "Sweep", "The course as a study"]
    for view, button in (("Repeat", "exp_repeat"), ("Sweep", "exp_sweep"), ("The course as a study", "exp_study")):
        page.radio(key="exp_view").set_value(view).run()
        assert not page.exception and button in {b.key for b in page.button}, view
    page.radio(key="exp_view").set_value("Compare").run()
    assert any("Run a **Repeat** first" in i.value for i in page.info)


def test_a_tiny_repeat_shows_mean_and_sd_and_compares_with_the_course(page):
    page.selectbox(key="preset").set_value("p1-task2").run()
    page.number_input(key="limit_train").set_value(200).run()
    page.number_input(key="exp_seeds").set_value(2).run()
    page.button(key="exp_repeat").click().run()
    assert not page.exception and not page.error
    (entry,) = page.session_state["xray_experiments"]
    assert [m.job.config.seed for m in entry.group.members] == [0, 1]
    assert poll(page, lambda a: entry.group.finished and "±" in (metric(a, "Test accuracy (mean ± sd)") or ""))
    assert not page.exception
    res = entry.group.result()
    assert [r["state"] for r in res["runs"]] == ["done", "done"]
    acc = res["test_accuracy"]
    assert metric(page, "Test accuracy (mean ± sd)") == f"{100 * acc['mean']:.1f} ± {100 * acc['sd']:.1f} %"
    assert "±" in metric(page, "Test loss (mean ± sd)")
    assert any(m.label == "Test accuracy (mean ± sd)" and m.delta == "course: 69.1 %" for m in page.metric)
    assert len(page.get("plotly_chart")) >= 3  # curves, two spreads
    # the Compare view now offers the group, and judges it against the course's figure
    page.radio(key="exp_view").set_value("Compare").run()
    page.selectbox(key="exp_cmp_b").set_value("the course's figure").run()
    assert not page.exception
    assert page.number_input(key="exp_cmp_figure").value == pytest.approx(69.1)  # p1-task2's figure
    verdicts = [m.value for m in list(page.success) + list(page.warning) if "Verdict" in m.value]
    assert verdicts and ("different" in verdicts[0] or "no evidence" in verdicts[0])
    assert metric(page, "Difference B − A").endswith("points")


def test_a_unet_repeat_trains_on_the_phantoms_films(page):
    """A segmentation setup's repeat gets whole films (it was handed the phantom's patches and
    every seed failed: 'a patch dataset ..., but a segmentation model needs whole films')."""
    page.selectbox(key="preset").set_value("p3-unet-small").run()
    for key, value in (("epochs", 1), ("input_size", 32), ("base_filters", 4)):
        page.number_input(key=key).set_value(value).run()
    page.slider(key="depth").set_value(2).run()
    page.number_input(key="exp_seeds").set_value(2).run()
    assert not page.exception and not page.error, [e.value for e in page.error]
    page.button(key="exp_repeat").click().run()
    assert not page.exception and not page.error, [e.value for e in page.error]
    (entry,) = page.session_state["xray_experiments"]
    assert entry.group.members[0].job.config.arch == "segment"
    assert poll(page, lambda a: entry.group.finished)
    res = entry.group.result()
    assert [r["state"] for r in res["runs"]] == ["done", "done"], [r.get("error") for r in res["runs"]]


def test_bad_sweep_values_are_a_one_line_error(page):
    page.radio(key="exp_view").set_value("Sweep").run()
    page.selectbox(key="exp_knob").set_value("batch_size").run()
    page.text_input(key="exp_values").input("16,abc").run()
    page.button(key="exp_sweep").click().run()
    assert not page.exception
    assert any("whole numbers" in e.value for e in page.error)
    assert "xray_experiments" not in page.session_state or not page.session_state["xray_experiments"]


def test_the_sweep_and_study_widgets_take_the_knob_tables_ranges(page):
    from xray_core.config import KNOBS, bounds
    from xray_core.runs import experiments as ex
    page.radio(key="exp_view").set_value("Sweep").run()
    knob = page.selectbox(key="exp_knob")
    assert knob.options == [ex.KNOB_LABELS[n] for n in ex.SWEEP_KNOBS]
    assert page.text_input(key="exp_values").value == KNOBS["alpha"].sweep.values
    knob.set_value("limit_train").run()
    assert page.text_input(key="exp_values").value == KNOBS["limit_train"].sweep.values
    page.radio(key="exp_view").set_value("The course as a study").run()
    assert page.number_input(key="exp_study_epochs").max == bounds("epochs")[1]
    lim = page.number_input(key="exp_study_limit")
    assert (lim.min, lim.max, lim.step) == (KNOBS["limit_train"].off, KNOBS["limit_train"].max, KNOBS["limit_train"].step)
