"""Whole films in the app (issue 24, items 1-2), driven by AppTest through stable widget keys.

Classify page: a film's map beside the prior map; with its label map (NAME_labels.png, uploaded
with it or beside it) every map's pixel accuracy and Dice; "use position" for a patch model; a
segmentation model mapped in one pass; bad label maps refused in one line each.
Train page: "Segmentation (U-Net)" trains on the phantom's films with live Dice per class and a
validation film's map each epoch; the wrong kind of data for the architecture is one line.
Segmentation runs here are tiny (input 64, depth 2, 4 base filters, a few films, 2 epochs)."""
import io
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from xray_core.config import RunConfig
from xray_core.data.phantom.build import phantom_radiographs
from xray_core.train.job import TrainingJob
from xray_ui.session import SessionRuns

from .conftest import wait_for

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
PAGE = "pages/2_Classify.py"
TINY_UNET = dict(arch="segment", input_size=64, depth=2, base_filters=4, batch_norm=True, augment=False)


# ---- fixtures and helpers ----------------------------------------------------------------

@pytest.fixture(scope="module")
def patch_job(toy_dataset):
    """A small FC trained on the toy patches (a couple of seconds)."""
    job = TrainingJob(RunConfig(arch="fc", epochs=2, batch_size=64, lr=1e-3), toy_dataset, probe=False).run()
    assert job.snapshot().state == "done"
    return job


@pytest.fixture(scope="module")
def film():
    """A 256x256 phantom test film (uint8) and its true label map."""
    _, f, labels = phantom_radiographs(1, seed=0, split="test")[0]
    return np.asarray(f, dtype=np.uint8), np.asarray(labels, dtype=np.uint8)


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory) -> bytes:
    """An untrained tiny U-Net saved as .keras: what a student downloads from a segment run."""
    from xray_core.models import build_model
    path = tmp_path_factory.mktemp("unet") / "unet.keras"
    build_model(RunConfig(**TINY_UNET, seed=1)).save(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def phantom_prior():
    """The prior the page should build by default: the phantom's 150 training films."""
    from xray_core.data.films import phantom_films
    from xray_core.maps.prior import build_prior
    return build_prior(phantom_films().split("train").y)


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(a, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def classify():
    """The Classify page reached from the Train page, optionally with a session's runs."""
    st.cache_resource.clear()  # AppTest instances share one session id and cache_resource
    apps = []

    def open_page(runs=None):
        app = AppTest.from_file(APP, default_timeout=180)
        if runs is not None:
            app.session_state["xray_runs"] = runs
        app.run()
        app.switch_page(PAGE).run()
        apps.append(app)
        return app

    yield open_page
    for app in apps:
        try:
            session = app.session_state["xray_runs"]
        except KeyError:
            continue
        for run in session.runs:
            run.job.stop()
            run.job.join(60)


@pytest.fixture
def with_patch_model(classify, patch_job):
    runs = SessionRuns()
    runs.add(patch_job, None)
    return classify(runs)


def upload(app, files) -> AppTest:
    app.file_uploader(key="uploads").set_value(files)
    return app.run()


def score_tables(app) -> list:
    """The maps' scores tables (AppTest does not expose a dataframe's key: found by column)."""
    return [d.value for d in app.dataframe if "pixel accuracy %" in d.value.columns]


def score_table(app):
    tables = score_tables(app)
    assert len(tables) == 1, len(tables)
    return tables[0]


def captions(app) -> set:
    return {c for img in app.image for c in img.captions}


def errors(app) -> list[str]:
    """What the browser shows for each error (texts.plain escapes the file names' Markdown)."""
    return [re.sub(r"\\(.)", r"\1", e.value) for e in app.error]


def the_map(app):
    from xray_core.maps.inference import AnatomyMap
    maps = [v for v in app.session_state["_cls_maps"].values() if isinstance(v, AnatomyMap)]
    assert len(maps) == 1
    return maps[0]


# ---- Classify: the prior, the scores, use position ---------------------------------------

def test_a_film_with_its_label_map_scores_the_model_the_prior_and_the_model_with_position(
        with_patch_model, film, phantom_prior):
    from xray_core.maps.prior import score_maps, use_position
    at = upload(with_patch_model, [("JPX001.png", png(film[0]), "image/png"),
                                   ("JPX001_labels.png", png(film[1]), "image/png")])
    assert not at.exception and not errors(at)
    assert len([m for m in at.markdown if m.value.startswith("Predicted: **")]) == 1   # the label map is no X-ray
    assert any(c.startswith("Prior map") for c in captions(at))
    t = score_table(at)
    assert list(t["map"]) == ["model", "prior (image ignored)"]
    prior = score_maps(phantom_prior.labels((256, 256)), film[1])
    assert t["pixel accuracy %"][1] == pytest.approx(100 * prior["pixel_accuracy"], abs=0.051)
    assert t["Dice lung"][1] == pytest.approx(prior["dice"]["lung"], abs=5e-4)
    model = score_maps(the_map(at).labels, film[1])
    assert t["pixel accuracy %"][0] == pytest.approx(100 * model["pixel_accuracy"], abs=0.051)
    assert prior["pixel_accuracy"] > 0.8     # position alone already labels most pixels of a phantom film

    at.checkbox(key="use_position").check().run()
    assert not at.exception and not errors(at)
    t = score_table(at)
    assert list(t["map"]) == ["model", "prior (image ignored)", "model + position"]
    assert any(c.startswith("Model + position") for c in captions(at))
    amap = the_map(at)
    expect = use_position(amap.probs.astype(np.float32), phantom_prior).argmax(-1)   # Bayes at film scale
    pos = score_maps(expect.astype(np.uint8), film[1])
    assert t["pixel accuracy %"][2] == pytest.approx(100 * pos["pixel_accuracy"], abs=0.051)
    assert not np.array_equal(expect, amap.labels)    # the prior moved some pixels' labels


def test_the_label_map_can_be_uploaded_beside_the_film_and_a_film_without_one_shows_the_prior(
        with_patch_model, film):
    from xray_ui.classify_view import digest
    data = png(film[0])
    at = upload(with_patch_model, ("chest.png", data, "image/png"))
    assert not at.exception and not errors(at)
    assert not score_tables(at)    # nothing to score against
    assert any(c.startswith("Prior map") for c in captions(at))
    key = f"truth_0_{digest(data)}"
    at.file_uploader(key=key).set_value(("chest_labels.png", png(film[1]), "image/png")).run()
    assert not at.exception and not errors(at)
    assert list(score_table(at)["map"]) == ["model", "prior (image ignored)"]


@pytest.mark.parametrize("name, data, says", [
    ("chest_labels.png", png(np.zeros((128, 128))), "chest_labels.png: label map is 128×128 but the film is 256×256"),
    ("chest_labels.png", png(np.full((256, 256), 255)), "chest_labels.png: label map has values outside 0..3"),
    ("chest_labels.png", b"<html>not an image</html>", "chest_labels.png: not a readable image"),
])
def test_a_bad_label_map_is_one_line_and_the_maps_still_show(with_patch_model, film, name, data, says):
    from xray_ui.classify_view import digest
    film_png = png(film[0])
    at = upload(with_patch_model, ("chest.png", film_png, "image/png"))
    images = len(at.image)
    at.file_uploader(key=f"truth_0_{digest(film_png)}").set_value((name, data, "image/png")).run()
    assert not at.exception
    errs = errors(at)
    assert len(errs) == 1 and errs[0].startswith(says) and "\n" not in errs[0] and "Traceback" not in errs[0], errs
    assert len(at.image) == images      # the model's map and the prior map are still there
    assert not score_tables(at)


def test_a_label_map_uploaded_without_its_film_is_one_line(with_patch_model, film):
    at = upload(with_patch_model, [("other.png", png(film[0]), "image/png"),
                                   ("JPX009_labels.png", png(film[1]), "image/png")])
    assert not at.exception
    assert errors(at) == ["JPX009_labels.png: a label map without its film: upload JPX009.png with it"]
    assert not score_tables(at)


def test_a_segmentation_model_maps_the_film_in_one_pass_beside_the_prior(classify, unet_file, film):
    at = classify()
    at.file_uploader(key="model_upload").set_value(("unet.keras", unet_file, "application/octet-stream")).run()
    assert not at.exception and not errors(at)
    assert at.checkbox(key="use_position").disabled            # position is already in a U-Net's map
    assert not [b for b in at.button if b.key == "demo_patches"]   # it has no 32x32 input
    at = upload(at, [("JPX001.png", png(film[0]), "image/png"), ("JPX001_labels.png", png(film[1]), "image/png")])
    assert not at.exception and not errors(at)
    assert not [m for m in at.markdown if m.value.startswith("Predicted: **")]
    assert any(c.value.startswith("Every pixel labelled in one pass") for c in at.caption)
    assert any(c.value.startswith("Method: one pass of a segmentation network") for c in at.caption)
    assert the_map(at).method == "segment" and the_map(at).labels.shape == (256, 256)
    assert list(score_table(at)["map"]) == ["model", "prior (image ignored)"]
    # a 32x32 patch is not something a segmentation model maps: one line
    at = upload(at, ("patch.png", png(film[0][100:132, 60:92]), "image/png"))
    assert not at.exception
    errs = errors(at)
    assert len(errs) == 1 and errs[0].startswith("patch.png: a 32×32 patch, but this segmentation model") and \
        "\n" not in errs[0]


def test_the_inside_page_says_a_segmentation_model_is_seen_on_the_classify_page(unet_file):
    """Inside opens patch models; a U-Net there once fed 32x32 test patches to a film input
    and printed Keras's shape error."""
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/5_Inside.py").run()
    at.file_uploader(key="inside_model_upload").set_value(("unet.keras", unet_file, "application/octet-stream")).run()
    assert not at.exception and not errors(at), errors(at)
    assert any("is a segmentation network" in i.value and "Classify page" in i.value for i in at.info)
    assert not at.get("plotly_chart")


def test_the_prior_comes_from_a_films_folder_on_the_server_real_films(with_patch_model, shared_data, monkeypatch):
    """The real JSRT films (jsrt_films under the data roots): the prior of its 150 training films
    scores a held-out patient's film exactly as the engine's prior does."""
    from xray_core.data import roots
    from xray_core.data.films import load_films
    from xray_core.maps.prior import build_prior, score_maps
    monkeypatch.setenv(roots.ENV, str(shared_data))
    roots.clear_cache()
    st.cache_data.clear()     # the page lists the films datasets at most once a minute
    at = with_patch_model.run()
    pick = at.selectbox(key="prior_from")
    assert pick.value == "phantom" and "jsrt_films" in pick.options and "jsrt_patches" not in pick.options
    pick.select("jsrt_films").run()
    test_dir = shared_data / "jsrt_films" / "test"
    name = sorted(p.stem for p in test_dir.glob("*.png") if not p.stem.endswith("_labels"))[0]
    film_png, labels_png = (test_dir / f"{name}.png").read_bytes(), (test_dir / f"{name}_labels.png").read_bytes()
    at = upload(at, [(f"{name}.png", film_png, "image/png"), (f"{name}_labels.png", labels_png, "image/png")])
    assert not at.exception and not errors(at)
    assert any("prior from 150 training films of jsrt_films" in m.value for m in at.markdown)
    truth = np.asarray(Image.open(io.BytesIO(labels_png)))
    prior = build_prior(load_films(shared_data / "jsrt_films").split("train").y)
    expect = score_maps(prior.labels(truth.shape), truth)
    t = score_table(at)
    assert t["map"][1] == "prior (image ignored)"
    assert t["pixel accuracy %"][1] == pytest.approx(100 * expect["pixel_accuracy"], abs=0.051)
    assert t["Dice heart"][1] == pytest.approx(expect["dice"]["heart"], abs=5e-4)


def test_a_segmentation_run_on_a_films_folder_maps_with_that_folders_prior_by_default(
        classify, film, tmp_path, monkeypatch):
    from xray_core.data import roots
    from xray_core.data.films import load_films
    monkeypatch.setenv(roots.ENV, str(tmp_path))
    roots.clear_cache()
    st.cache_data.clear()
    folder = _films_root(tmp_path / "films")
    job = TrainingJob(RunConfig(**TINY_UNET, epochs=1, batch_size=2, data=str(folder)), load_films(folder),
                      probe=False).run()
    assert job.snapshot().state == "done", job.snapshot().error
    runs = SessionRuns()
    runs.add(job, None)
    at = classify(runs)
    assert not at.exception and not errors(at)
    assert at.selectbox(key="model_pick").value == f"run:{job.id}"
    assert at.selectbox(key="prior_from").value == "films"      # the run's own training films
    at = upload(at, [("F.png", png(film[0]), "image/png"), ("F_labels.png", png(film[1]), "image/png")])
    assert not at.exception and not errors(at)
    assert any("prior from 3 training films of films" in m.value for m in at.markdown)
    assert the_map(at).method == "segment"
    assert list(score_table(at)["map"]) == ["model", "prior (image ignored)"]
    at.selectbox(key="prior_from").select("phantom").run()        # the student's pick stays
    at.run()
    assert at.selectbox(key="prior_from").value == "phantom"
    assert any("prior from 150 training films of the built-in phantom" in m.value for m in at.markdown)


# ---- Train: a segmentation run on the phantom's films ------------------------------------

@pytest.fixture
def train_page():
    st.cache_resource.clear()
    app = AppTest.from_file(APP, default_timeout=180).run()
    yield app
    try:
        run = app.session_state["xray_runs"].current
    except KeyError:
        run = None
    if run is not None:
        run.job.stop()
        run.job.join(60)


def poll(app, pred, timeout=240):
    """Rerun the page until pred(page) holds (run_every does not fire in AppTest)."""
    return wait_for(lambda: pred(app.run()), timeout, every=0.3)


def chart_titles(app) -> list[str]:
    out = []
    for el in app.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        out.append(((spec.get("layout") or {}).get("title") or {}).get("text", ""))
    return out


def chart(app, title: str) -> dict:
    for el in app.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        if ((spec.get("layout") or {}).get("title") or {}).get("text", "") == title:
            return spec
    raise AssertionError(f"no chart titled {title!r} in {chart_titles(app)}")


def test_segmentation_trains_on_the_phantoms_films_with_live_dice_and_a_validation_map(train_page):
    from xray_core import CLASSES
    from xray_core.train.job import preview_labels
    at = train_page
    at.radio(key="arch").set_value("segment").run()
    assert not at.exception and not at.error
    assert any(e.label.startswith("Data: phantom — train 150 · validation 30 · test 37 films") for e in at.expander)
    for key, value in (("input_size", 64), ("base_filters", 4), ("epochs", 2), ("limit_train", 8),
                       ("batch_size", 4)):
        at.number_input(key=key).set_value(value).run()
    at.slider(key="depth").set_value(2).run()
    at.checkbox(key="augment").uncheck().run()
    assert not at.exception and not at.error
    assert any("2 epochs on 8 films" in c.value for c in at.caption)
    at.button(key="train").click().run()
    job = at.session_state["xray_runs"].current.job
    assert job.config.arch == "segment"
    # what the job (mirrored from its worker process) publishes, watched closely: a new map per epoch
    published, watching = [], threading.Event()

    def watch():
        while not watching.is_set():
            snap = job.snapshot()
            if snap.preview and (not published or published[-1][0] != snap.preview["epoch"]):
                published.append((snap.preview["epoch"], snap.state))
            time.sleep(0.01)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    live = set()     # epochs whose map the page showed while the run was still training

    def done(a):
        training = not job.snapshot().finished
        for c in captions(a):     # the validation film's map, as it was after each epoch
            if c.startswith("Validation film") and "after epoch" in c and training:
                live.add(int(c.rsplit(" ", 1)[1]))
        return job.snapshot().finished and any(m.label == "Test pixel accuracy" for m in a.metric)
    try:
        assert poll(at, done), job.snapshot().error
    finally:
        watching.set()
        watcher.join(5)
    snap = job.snapshot()
    assert snap.state == "done", snap.error
    assert not at.exception and not at.error
    assert [e for e, _ in published] == [1, 2] and published[0][1] == "training"
    assert live, "the page never showed a validation map while the run trained"
    # live curves: loss and pixel accuracy per epoch, and the Dice of every class per epoch
    assert len(snap.history["loss"]) == 2 and len(snap.history["val_accuracy"]) == 2
    dice = chart(at, "Dice per class (validation films)")
    assert [t["name"] for t in dice["data"]] == list(CLASSES)
    assert all(t["y"] == snap.history[f"val_dice_{c}"] for t, c in zip(dice["data"], CLASSES))
    assert "Pixel accuracy" in str(chart(at, "Training curves")["layout"])
    # the map shown is the model's own map of that validation film after the last epoch
    val = job.dataset.split("validation")
    preview = snap.preview
    assert preview["epoch"] == 2 and preview["film"] == str(val.names[0])
    probs = np.asarray(job.model(val.x[:1], training=False))
    assert np.array_equal(preview_labels(preview), probs[0].argmax(-1))
    assert any(c.startswith(f"Validation film {val.names[0]}: the predicted map after epoch 2") for c in captions(at))
    # results: pixel accuracy and Dice beside the prior's
    labels = {m.label: m.value for m in at.metric}
    assert {"Test pixel accuracy", "Mean Dice", "Test loss"} <= set(labels)
    prior = snap.result["test"]["prior"]
    assert any(c.value == f"the prior: {100 * prior['pixel_accuracy']:.1f} %" for c in at.caption)
    assert "Dice per class (test films): the model and the prior" in chart_titles(at)
    assert "Confusion matrix (test): pixels and % of the true class" in chart_titles(at)


def _films_root(root: Path) -> Path:
    """Five phantom films with label maps in the jsrt_films layout (rendered, not cached)."""
    from xray_core.data.films import phantom_films
    from xray_core.data.preprocess import to_u8
    ds = phantom_films(3, 1, 1, seed=0, cache=False)
    for split, sp in ds.splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for x, y, name in zip(sp.x, sp.y, sp.names):
            Image.fromarray(to_u8(x[..., 0])).save(root / split / f"{name}.png")
            Image.fromarray(y).save(root / split / f"{name}_labels.png")
    return root


def test_the_wrong_kind_of_data_for_the_architecture_is_one_line(train_page, tmp_path, monkeypatch):
    from xray_core.data import roots
    from .fixtures_data import course_layout, rids
    monkeypatch.setenv("XRAY_LAB_DATA_ROOTS", str(tmp_path))
    roots.clear_cache()
    course_layout(tmp_path / "patches", {"train": rids(2, "A"), "test": rids(1, "T")}, per_class=2)
    _films_root(tmp_path / "films")
    at = train_page
    at.radio(key="data_source").set_value("folder").run()
    at.selectbox(key="data_path").select("films").run()          # films for an FC
    assert not at.exception and at.button(key="train").disabled
    errs = errors(at)
    assert len(errs) == 1 and "whole films with label maps" in errs[0] and "\n" not in errs[0], errs
    at.radio(key="arch").set_value("segment").run()              # ... are what a U-Net learns from
    assert not at.exception and not at.error and not at.button(key="train").disabled
    assert any(e.label.startswith("Data: films — train 3 · validation 1 · test 1 films") for e in at.expander)
    at.selectbox(key="data_path").select("patches").run()        # patches for a U-Net
    assert not at.exception and at.button(key="train").disabled
    errs = errors(at)
    assert len(errs) == 1 and "a patch dataset" in errs[0] and "segmentation model needs whole films" in errs[0]
    assert str(tmp_path) not in errs[0]      # a dataset is named, never a server path


def test_the_part_3_presets_pick_the_unet_and_its_films(train_page):
    at = train_page
    at.selectbox(key="preset").set_value("p3-unet-small").run()
    assert not at.exception and not at.error
    assert at.radio(key="arch").value == "segment" and at.number_input(key="input_size").value == 64
    assert any(e.label.startswith("Data: phantom — train 150 · validation 30 · test 37 films") for e in at.expander)
    assert any(c.value.startswith("Estimated time on this server") and "9 epochs on 150 films" in c.value
               for c in at.caption)
    assert not at.button(key="train").disabled
    at.selectbox(key="preset").set_value("p1-task1").run()           # back to patches: the patch data again
    assert not at.exception and not at.error
    assert any(e.label.startswith("Data: phantom —") and e.label.endswith("patches") for e in at.expander)
