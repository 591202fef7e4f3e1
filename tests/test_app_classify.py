"""AppTest drives the Classify page (pages/2_Classify.py) by its stable widget keys:
model choice (session run, uploaded .keras, one-click quick train), uploads of
films / patches / DICOM / broken files, the anatomy map and the demos."""
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from xray_core import CLASSES
from xray_core.config import RunConfig
from xray_core.data.phantom.build import phantom_radiographs
from xray_core.train.job import TrainingJob
from xray_ui.session import SessionRuns

from .conftest import wait_for

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
PAGE = "pages/2_Classify.py"

_spec = importlib.util.spec_from_file_location("make_dicom_fixture", REPO / "scripts" / "make_dicom_fixture.py")
_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixture)
make_dicom = _fixture.make_dicom


# ---- fixtures and helpers ----------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_job(toy_dataset):
    """A small FC trained on the toy patches (a couple of seconds), shared by the tests."""
    cfg = RunConfig(arch="fc", epochs=2, batch_size=64, lr=1e-3)
    job = TrainingJob(cfg, toy_dataset, probe=False).run()
    assert job.snapshot().state == "done" and job.model is not None
    return job


@pytest.fixture(scope="module")
def film():
    """A 256x256 phantom test film (uint8) and its true label map."""
    _, f, labels = phantom_radiographs(1, seed=0)[0]
    return np.asarray(f, dtype=np.uint8), labels


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(a, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _stop_jobs(app) -> None:
    try:
        session = app.session_state["xray_runs"]
    except KeyError:
        return
    for run in session.runs:
        run.job.stop()
        run.job.join(60)


@pytest.fixture
def page():
    """The Classify page, reached from the Train page as a user would, with no model."""
    st.cache_resource.clear()  # AppTest instances share one session id and cache_resource
    apps = []

    def open_page(runs=None):
        app = AppTest.from_file(APP, default_timeout=120)
        if runs is not None:
            app.session_state["xray_runs"] = runs
        app.run()
        app.switch_page(PAGE).run()
        apps.append(app)
        return app

    yield open_page
    for app in apps:
        _stop_jobs(app)


@pytest.fixture
def at_model(page, trained_job):
    """The Classify page in a session that already trained `trained_job` on the Train page."""
    runs = SessionRuns()
    runs.add(trained_job, None)
    return page(runs)


def errors(app) -> list[str]:
    return [e.value for e in app.error]


def predictions(app) -> list[str]:
    return [m.value for m in app.markdown if m.value.startswith("Predicted: **")]


def charts(app) -> int:
    return len(app.get("plotly_chart"))


def upload(app, files) -> AppTest:
    app.file_uploader(key="uploads").set_value(files)
    return app.run()


def map_cache(app) -> dict:
    return dict(app.session_state["_cls_maps"]) if "_cls_maps" in app.session_state else {}


# ---- no model ----------------------------------------------------------------------------

def test_page_loads_without_a_model_and_offers_quick_train(page):
    at = page()
    assert not at.exception and not at.error
    assert at.button(key="quick_train").label
    assert not [b for b in at.button if b.key in ("demo_patches", "demo_film")]  # nothing to classify with yet
    for key in ("stride", "opacity"):
        assert at.slider(key=key) is not None
    from xray_core.config import MAP_KNOBS, map_default
    k = MAP_KNOBS["stride"]   # the map knobs' table: the same range as `classify --stride`
    s = at.slider(key="stride")
    assert (s.value, s.min, s.max, s.label, s.help) == (map_default("stride"), k.min, k.max, k.label, k.help) == \
        (4, 1, 32, k.label, k.help)
    assert at.file_uploader(key="uploads").accept_multiple_files
    assert {"png", "jpg", "jpeg", "tif", "tiff", "bmp", "gif", "dcm"} <= {
        t.lstrip(".") for t in at.file_uploader(key="uploads").allowed_type}


def test_quick_train_gives_a_usable_model_that_the_train_page_sees(page, film, monkeypatch):
    from xray_ui import classify_view
    monkeypatch.setattr(classify_view, "QUICK_EPOCHS", 1)  # a shorter quick train, same code path
    monkeypatch.setattr(classify_view, "QUICK_LIMIT_TRAIN", 256)
    at = page()
    at.button(key="quick_train").click().run()
    assert not at.exception
    session = at.session_state["xray_runs"]
    assert len(session.runs) == 1 and session.runs[0].preset == "p1-task5"
    cfg = session.runs[0].job.config
    assert cfg.batch_norm and cfg.activation == "leaky_relu" and cfg.limit_train == 256 and cfg.epochs == 1
    job = session.runs[0].job

    def finished():
        at.run()  # run_every does not fire in AppTest: poll
        assert not at.exception
        return job.snapshot().finished

    wait_for(finished, every=0.5)
    assert job.snapshot().state == "done", job.snapshot().error
    at.run()
    assert not at.exception and not at.error
    assert not [b for b in at.button if b.key == "quick_train"]
    assert at.selectbox(key="model_pick").value == f"run:{job.id}"
    upload(at, ("film.png", png(film[0]), "image/png"))
    assert not at.exception and not at.error
    assert len(predictions(at)) == 1
    # the Train page lists the same run
    at.switch_page("app.py").run()
    assert not at.exception
    assert any("p1-task5" in str(v) for v in at.dataframe(key="runs_table").value["label"])


# ---- uploads -----------------------------------------------------------------------------

def test_png_film_gets_a_map_with_shares_and_opacity_only_reblends(at_model, film):
    at = upload(at_model, ("chest film.png", png(film[0]), "image/png"))
    assert not at.exception and not at.error
    assert len(predictions(at)) == 1
    assert charts(at) == 2                      # probabilities + area per class
    assert any("patches (64×64) classified in" in c.value for c in at.caption)  # stride 4 on 256 px
    assert any("lung" in m.value and "rgb" in m.value for m in at.markdown)   # colour legend
    images_before = len(at.image)
    assert images_before == 4                  # original, the 32x32 input, the map overlay, the prior map
    assert any("32×32" in c for img in at.image for c in img.captions)
    cache = map_cache(at)
    assert len(cache) == 1
    (key, amap), = cache.items()
    assert key[2] == 4 and amap.labels.shape == (256, 256) and set(np.unique(amap.labels)) <= {0, 1, 2, 3}
    assert abs(sum(amap.shares.values()) - 1) < 1e-6

    at.slider(key="opacity").set_value(0.8).run()
    assert not at.exception
    after = map_cache(at)
    assert list(after) == [key] and after[key] is amap    # same object: not recomputed
    assert any("kept from before" in c.value for c in at.caption)
    assert len(at.image) == images_before

    at.slider(key="stride").set_value(8).run()
    assert not at.exception
    assert len(map_cache(at)) == 2 and any(k[2] == 8 for k in map_cache(at))
    assert any("patches (32×32) classified in" in c.value for c in at.caption)


def test_dicom_film_is_read_and_mapped(at_model, film):
    # 12-bit MONOCHROME1 with a window: dense tissue must come out bright after inversion
    stored = (4095 - film[0].astype(np.uint16) * 16).astype(np.uint16)
    dcm = make_dicom(stored, photometric="MONOCHROME1", bits_stored=12, window=(2048, 4096))
    at = upload(at_model, ("chest.dcm", dcm, "application/dicom"))
    assert not at.exception and not at.error
    assert len(predictions(at)) == 1 and charts(at) == 2
    (amap,) = map_cache(at).values()
    # inverted back: the film the map used matches the PNG's intensities
    assert np.corrcoef(amap.film.ravel(), film[0].astype(np.float32).ravel())[0, 1] > 0.95


def test_a_broken_file_among_good_ones_gets_one_line_and_the_rest_are_classified(at_model, film):
    patch = film[0][100:132, 60:92]
    good_png = png(patch)
    files = [
        ("patch.png", good_png, "image/png"),
        ("broken.png", good_png[: len(good_png) // 2], "image/png"),     # truncated
        ("page.jpg", b"<html><body>not an x-ray</body></html>", "image/jpeg"),
        ("really_a_png.jpg", good_png, "image/jpeg"),                    # misleading extension
        ("film.png", png(film[0]), "image/png"),
    ]
    at = upload(at_model, files)
    assert not at.exception
    errs = errors(at)
    assert len(errs) == 2
    assert errs[0].startswith("broken.png:") and errs[1].startswith("page.jpg:")
    assert all("\n" not in e and "Traceback" not in e for e in errs)
    assert len(predictions(at)) == 3
    assert charts(at) == 3 + 1                   # three probability charts, one map (the film)
    assert len(at.image) == 3 * 2 + 2             # original + model input each; the film's map and prior map


def test_tiny_patch_and_gif_first_frame_are_classified(at_model, film):
    patch = film[0][100:132, 60:92]
    frames = [Image.fromarray(patch), Image.fromarray(255 - patch)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    at = upload(at_model, [("p.gif", buf.getvalue(), "image/gif"), ("p.bmp", _bmp(patch), "image/bmp")])
    assert not at.exception and not at.error
    assert len(predictions(at)) == 2 and charts(at) == 2 and not map_cache(at)   # patches: no map


def _bmp(a) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="BMP")
    return buf.getvalue()


# ---- uploaded models ---------------------------------------------------------------------

def test_uploaded_keras_model_is_used_and_a_broken_one_is_one_line(page, trained_job, film, tmp_path):
    paths = trained_job.save(tmp_path / "saved")
    data = Path(paths["model"]).read_bytes()
    at = page()
    assert [b for b in at.button if b.key == "quick_train"]
    at.file_uploader(key="model_upload").set_value(("my model.keras", data, "application/octet-stream")).run()
    assert not at.exception and not at.error
    pick = at.selectbox(key="model_pick")
    assert pick.value.startswith("upload:")
    assert not [b for b in at.button if b.key == "quick_train"]
    upload(at, ("film.png", png(film[0]), "image/png"))
    assert not at.exception and not at.error and len(predictions(at)) == 1

    bad = AppTest.from_file(APP, default_timeout=120).run()
    bad.switch_page(PAGE).run()
    bad.file_uploader(key="model_upload").set_value(("bad.keras", b"PK\x03\x04 not really a zip",
                                                     "application/octet-stream")).run()
    assert not bad.exception
    errs = errors(bad)
    assert len(errs) == 1 and errs[0].startswith("bad.keras:") and "\n" not in errs[0]
    assert "/tmp" not in errs[0] and "xray_upload_" not in errs[0]
    assert [b for b in bad.button if b.key == "quick_train"]      # still no model


@pytest.mark.parametrize("padding, says", [
    ("valid", "Method: dense — the film went through the convolutions once"),
    ("same", "zero border"),
])
def test_the_map_says_how_a_cnn_was_mapped(page, film, tmp_path, padding, says):
    """An uploaded corrected CNN: with 'valid' padding it is mapped in one pass and the caption
    says that is exact; with 'same' the caption names the zero border (positions re-checked patch
    by patch, or, this untrained net being unsure nearly everywhere, the whole map)."""
    from xray_core.models import build_model
    model = build_model(RunConfig(arch="cnn", cnn_mode="corrected", filters=(2, 4, 4, 4, 4), padding=padding,
                                  seed=1))
    path = tmp_path / f"{padding}.keras"
    model.save(path)
    at = page()
    at.file_uploader(key="model_upload").set_value((path.name, path.read_bytes(), "application/octet-stream")).run()
    assert not at.exception and not at.error
    upload(at, ("film.png", png(film[0]), "image/png"))
    assert not at.exception and not at.error
    notes = [c.value for c in at.caption if c.value.startswith("Method:")]
    assert len(notes) == 1 and says in notes[0], notes
    assert ("exactly the patch-by-patch labels" in notes[0]) == (padding == "valid"), notes


# ---- demos -------------------------------------------------------------------------------

def test_demo_patches_show_true_and_predicted(at_model):
    at = at_model.button(key="demo_patches").click().run()
    assert not at.exception and not at.error
    heads = [h.value for h in at.subheader if "test patches right" in h.value]
    assert len(heads) == 1 and heads[0].endswith("of 12 test patches right")
    captions = [c for img in at.image for c in img.captions]
    marked = [c for c in captions if "→" in c]
    assert len(marked) == 12
    assert all(c.split(" ")[1] in CLASSES and c.split("→ ")[1].split(" ")[0] in CLASSES for c in marked)
    right = int(heads[0].split(" ")[0])
    assert right == sum(c.startswith("✓") for c in marked)


def test_demo_film_shows_map_truth_and_scores(at_model):
    at = at_model.button(key="demo_film").click().run()
    assert not at.exception and not at.error
    labels = {m.label: m.value for m in at.metric}
    assert "Pixel accuracy" in labels and "Mean Dice" in labels
    acc = float(labels["Pixel accuracy"].rstrip(" %"))
    assert 0 <= acc <= 100
    assert any(c.value.startswith("Dice per class") for c in at.caption)
    assert charts(at) == 1 and len(map_cache(at)) == 1
    assert {c for img in at.image for c in img.captions} >= {"Predicted anatomy map", "True label map"}
    assert next(iter(map_cache(at)))[0].startswith("phantom:PH")
    # the opacity slider re-blends the same map
    (amap,) = map_cache(at).values()
    at.slider(key="opacity").set_value(0.2).run()
    assert not at.exception and list(map_cache(at).values())[0] is amap


def test_method_note_counts_the_positions_a_same_network_re_checked():
    import dataclasses

    from xray_core.maps.inference import AnatomyMap
    from xray_ui.classify_view import method_note
    z = np.zeros((4, 4), np.uint8)
    amap = AnatomyMap(labels=z, probs=None, shares={}, stride=4, seconds=0.1, labels_film=z, film=z,
                      grid_shape=(64, 64), method="dense", refined=1422)
    note = method_note(amap)
    assert note.startswith("Method: dense") and "1,422 of the 4,096 positions" in note and "exactly" not in note
    exact = method_note(dataclasses.replace(amap, refined=0, exact=True))
    assert "exactly the patch-by-patch labels" in exact and "re-checked" not in exact
