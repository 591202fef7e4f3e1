"""AppTest drives the Inside page (pages/5_Inside.py): FC and CNN models of the session,
every explanation method, the two-run comparison, the seed CNN's batch-norm panel, uploads,
and the Classify page's "why?" point picker handing a film patch over."""
import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from xray_core.config import RunConfig
from xray_core.train.job import TrainingJob
from xray_ui.session import SessionRuns

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
PAGE = "pages/5_Inside.py"


@pytest.fixture(scope="module")
def fc_jobs(toy_dataset):
    relu = TrainingJob(RunConfig(arch="fc", epochs=2, batch_size=64, lr=1e-3), toy_dataset, probe=False).run()
    leaky = TrainingJob(RunConfig(arch="fc", activation="leaky_relu", epochs=1, batch_size=64, lr=1e-3, seed=3),
                        toy_dataset, probe=False).run()
    assert relu.snapshot().state == leaky.snapshot().state == "done"
    return relu, leaky


@pytest.fixture(scope="module")
def cnn_job(toy_dataset):
    cfg = RunConfig(arch="cnn", cnn_mode="seed", filters=(4, 4, 4, 4, 4), epochs=1, batch_size=64,
                    lr=1e-3, limit_train=128)
    job = TrainingJob(cfg, toy_dataset, probe=False).run()
    assert job.snapshot().state == "done", job.snapshot().error
    return job


def open_page(*jobs, page=PAGE) -> AppTest:
    st.cache_resource.clear()
    app = AppTest.from_file(APP, default_timeout=180)
    if jobs:
        runs = SessionRuns()
        for j in jobs:
            runs.add(j, None)
        app.session_state["xray_runs"] = runs
    app.run()
    app.switch_page(page).run()
    return app


def chart_keys(app) -> set[str]:
    return {c.key for c in app.get("plotly_chart")}


def chart(app, key: str) -> dict:
    return json.loads(next(c for c in app.get("plotly_chart") if c.key == key).proto.spec)


def arr(v) -> np.ndarray:
    """A plotly JSON array: a list, or plotly's typed array {dtype, bdata, shape}."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return a.reshape(tuple(int(n) for n in str(v["shape"]).split(","))) if v.get("shape") else a
    return np.asarray(v)


def ok(app) -> None:
    assert not app.exception, app.exception
    assert not [e.value for e in app.error], [e.value for e in app.error]


def test_page_without_a_model_says_what_to_do():
    at = open_page()
    ok(at)
    assert any("No model yet" in i.value for i in at.info)
    assert not chart_keys(at)


def test_fc_model_every_method_weights_and_comparison(fc_jobs):
    relu, leaky = fc_jobs
    at = open_page(relu, leaky)
    ok(at)
    at.selectbox(key="inside_model").set_value(f"run:{relu.id}").run()
    ok(at)
    keys = chart_keys(at)
    assert {"inside_patch_fig", "inside_probs", "inside_saliency", "inside_occlusion", "inside_fc_units",
            "inside_cmp_bars", "inside_cmp_units"} <= keys
    assert "inside_gradcam" not in keys and "inside_fmaps" not in keys
    # the saliency figure holds the patch and a 32x32 map over it
    fig = chart(at, "inside_saliency")
    assert [arr(t["z"]).shape for t in fig["data"]] == [(32, 32), (32, 32)]
    # 24 unit tiles, labelled; the comparison bars name both activations' kinds
    assert len([a for a in chart(at, "inside_fc_units")["layout"]["annotations"] if a["text"].startswith("#")]) == 24
    assert "never positive" in json.dumps(chart(at, "inside_cmp_bars")["data"][0]["x"])
    assert any("% of the 300 units are dead" in c.value for c in at.caption)
    # another target class redraws the maps for it
    before = arr(chart(at, "inside_saliency")["data"][1]["z"])
    at.selectbox(key="inside_target").set_value("clavicle" if at.selectbox(key="inside_target").value != "clavicle"
                                                 else "lung").run()
    ok(at)
    assert not np.allclose(arr(chart(at, "inside_saliency")["data"][1]["z"]), before)


def test_misclassified_and_upload_sources(fc_jobs):
    relu, _ = fc_jobs
    at = open_page(relu)
    at.radio(key="inside_source").set_value("Misclassified").run()
    ok(at)
    at.selectbox(key="inside_true").set_value("lung")
    at.selectbox(key="inside_pred").set_value("lung").run()
    ok(at)
    assert "inside_saliency" in chart_keys(at)   # patches it got right are listed too
    at.radio(key="inside_source").set_value("Upload").run()
    ok(at)
    assert "inside_saliency" not in chart_keys(at)
    buf = io.BytesIO()
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None] * 4, (64, 1))).save(buf, format="PNG")
    at.file_uploader(key="inside_upload").set_value(("ramp.png", buf.getvalue(), "image/png")).run()
    ok(at)
    assert "inside_saliency" in chart_keys(at)
    at.file_uploader(key="inside_upload").set_value(("notes.png", b"<html>no</html>", "image/png")).run()
    assert not at.exception and any("not an image" in e.value for e in at.error)


def test_cnn_path_gradcam_feature_maps_and_rowwise_bn(cnn_job):
    at = open_page(cnn_job)
    ok(at)
    keys = chart_keys(at)
    assert {"inside_saliency", "inside_occlusion", "inside_gradcam", "inside_filters", "inside_fmaps",
            "inside_hist", "inside_bn"} <= keys
    assert "inside_fc_units" not in keys
    assert len(chart(at, "inside_hist")["data"]) == 5            # one histogram per conv layer
    assert at.radio(key="inside_layer").options == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    at.radio(key="inside_layer").set_value("conv4").run()
    ok(at)
    assert "conv4" in chart(at, "inside_fmaps")["layout"]["title"]["text"]
    assert any("BatchNormalization(axis=1)" in c.value for c in at.caption)


def test_classify_film_point_opens_the_inside_page(fc_jobs):
    relu, _ = fc_jobs
    at = open_page(relu, page="pages/2_Classify.py")
    at.button(key="demo_film").click().run()
    ok(at)
    assert not {"why_patch_demo", "why_sal_demo"} & chart_keys(at)   # nothing computed until asked
    at.toggle(key="why_on_demo").set_value(True).run()
    ok(at)
    at.slider(key="why_x_demo").set_value(40)
    at.slider(key="why_y_demo").set_value(200).run()
    ok(at)
    assert {"why_patch_demo", "why_probs_demo", "why_sal_demo"} <= chart_keys(at)
    assert "(40, 200)" in chart(at, "why_patch_demo")["layout"]["title"]["text"]
    at.button(key="why_open_demo").click().run()
    ok(at)
    assert at.radio(key="inside_source").value == "From the Classify page"
    assert "film point (40, 200)" in chart(at, "inside_patch_fig")["layout"]["title"]["text"]


def test_a_new_patch_is_explained_for_its_own_prediction(fc_jobs):
    relu, _ = fc_jobs
    at = open_page(relu)
    at.selectbox(key="inside_target").set_value("clavicle").run()
    assert at.selectbox(key="inside_target").value == "clavicle"
    at.number_input(key="inside_index").set_value(100).run()
    ok(at)
    title = chart(at, "inside_saliency")["layout"]["title"]["text"]
    pred = next(h.value for h in at.subheader if h.value.startswith("Why ")).split()[1]
    assert at.selectbox(key="inside_target").value == pred and title.endswith(pred)


def test_classify_film_point_by_clicking_the_map(fc_jobs):
    """A click on the map (Streamlit's plotly point selection) moves the point; moving a
    slider afterwards is not undone by the same selection on later reruns."""
    from xray_ui.charts_inside import picked_point
    relu, _ = fc_jobs
    at = open_page(relu, page="pages/2_Classify.py")
    at.button(key="demo_film").click().run()
    at.toggle(key="why_on_demo").set_value(True).run()
    ok(at)
    fig = chart(at, "why_map_demo")
    assert [t["type"] for t in fig["data"]] == ["image", "scatter", "scatter"]
    assert fig["data"][0]["source"].startswith("data:image/png;base64,")
    assert len(fig["data"][1]["x"]) == 32 * 32               # a clickable point every 8 px of a 256 px film
    at.session_state["why_map_demo"] = {"selection": {"points": [{"x": 44, "y": 196, "curve_number": 1}]}}
    at.run()
    ok(at)
    assert "(44, 196)" in chart(at, "why_patch_demo")["layout"]["title"]["text"]
    ring = chart(at, "why_map_demo")["data"][2]
    assert (ring["x"][0], ring["y"][0]) == (44, 196)
    at.slider(key="why_x_demo").set_value(100).run()
    ok(at)
    assert "(100, 196)" in chart(at, "why_patch_demo")["layout"]["title"]["text"]
    # the pure helper: only the grid's points count, clamped to the film
    assert picked_point({"selection": {"points": [{"x": 300, "y": -3, "curve_number": 1}]}}, 256, 256) == (255, 0)
    assert picked_point({"selection": {"points": [{"x": 5, "y": 5, "curve_number": 2}]}}, 256, 256) is None
    assert picked_point(None, 256, 256) is None
