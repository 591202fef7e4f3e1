"""xray_core.maps.explain and `python -m xray_core explain`: the maps are faithful (deletion test),
the layers are read from the right tensors, and bad input gets one line."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xray_core import CLASSES
from xray_core.maps import explain as ex
from xray_core.cli.main import main
from xray_core.config import RunConfig
from xray_core.errors import ConfigError, ImageError
from xray_core.data.images import patch_input, read_image
from xray_core.maps.inference import predict_patches
from xray_core.train.job import TrainingJob

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fc(toy_dataset):
    job = TrainingJob(RunConfig(arch="fc", epochs=2, batch_size=64, lr=1e-3), toy_dataset, probe=False).run()
    assert job.snapshot().state == "done"
    return job.model


@pytest.fixture(scope="module")
def cnn(toy_dataset):
    """The seed CNN's layout (row-wise BN) with 4 filters per conv: seconds, not minutes."""
    cfg = RunConfig(arch="cnn", cnn_mode="seed", filters=(4, 4, 4, 4, 4), epochs=1, batch_size=64,
                    lr=1e-3, limit_train=128)
    job = TrainingJob(cfg, toy_dataset, probe=False).run()
    assert job.snapshot().state == "done", job.snapshot().error
    return job.model


@pytest.fixture(scope="module")
def test_x(toy_dataset):
    return toy_dataset.split("test").x[..., 0]


# ---- faithful, not decorative --------------------------------------------------------------

@pytest.mark.parametrize("method", ["saliency", "occlusion"])
def test_deleting_the_marked_pixels_hurts_far_more_than_random_pixels(fc, test_x, method):
    """Black out the 10 % most important pixels vs 10 % random ones (5 draws), 12 patches."""
    res = ex.deletion_test(fc, test_x[:12], method=method, fraction=0.1, draws=5, seed=0)
    print(json.dumps(res))
    assert res["patches"] == 12
    assert res["drop_top"] > 3 * res["drop_random"]
    assert res["drop_top"] - res["drop_random"] > 0.2
    assert res["share_top_beats_random"] >= 0.75


def test_integrated_gradients_add_up_to_the_probability_change(fc, test_x):
    """Completeness: the attributions sum to p(patch) - p(black) for the class."""
    for q in test_x[:4]:
        p = ex.probabilities(fc, q)
        t = int(np.argmax(p))
        ig = ex.integrated_gradients(fc, q, steps=64)
        black = predict_patches(fc, np.zeros((1, 32, 32), np.float32))[0, t]
        assert ig.shape == (32, 32) and ig.dtype == np.float32
        assert abs(float(ig.sum()) - (p[t] - black)) < 0.05 + 0.05 * abs(p[t] - black)


def test_maps_follow_the_chosen_class(fc, test_x):
    q = test_x[0]
    pred = int(np.argmax(ex.probabilities(fc, q)))
    other = (pred + 1) % len(CLASSES)
    for method in ("saliency", "occlusion"):
        assert not np.allclose(ex.explain(fc, q, method), ex.explain(fc, q, method, target=other))
    assert np.array_equal(ex.explain(fc, q, "saliency"), ex.explain(fc, q, "saliency", target=CLASSES[pred]))
    gxi = ex.gradient_x_input(fc, q)
    assert gxi.shape == (32, 32) and np.corrcoef(gxi.ravel(), ex.integrated_gradients(fc, q).ravel())[0, 1] > 0


def test_cache_hits_per_model_and_patch(fc, cnn, test_x):
    a = ex.integrated_gradients(fc, test_x[0])
    assert ex.integrated_gradients(fc, test_x[0]) is a           # same model, same patch: cached
    assert ex.integrated_gradients(fc, test_x[1]) is not a       # another patch
    assert ex.model_key(fc) != ex.model_key(cnn)
    assert len(ex._cache) <= ex.CACHE_SIZE


def test_bad_input_is_one_line(fc):
    with pytest.raises(ImageError):
        ex.explain(fc, np.zeros((16, 16)))
    with pytest.raises(ConfigError, match="unknown method"):
        ex.explain(fc, np.zeros((32, 32)), "lime")
    with pytest.raises(ConfigError, match="Grad-CAM needs a convolutional layer"):
        ex.grad_cam(fc, np.zeros((32, 32)))
    with pytest.raises(ConfigError, match="unknown class"):
        ex.explain(fc, np.zeros((32, 32)), target="liver")


# ---- FC units --------------------------------------------------------------------------------

def test_fc_units_mark_dead_units_and_rank_them_last(toy_dataset, test_x):
    job = TrainingJob(RunConfig(arch="fc", epochs=1, batch_size=64, lr=1e-3), toy_dataset, probe=False).run()
    model = job.model
    dense1 = model.get_layer("dense1")
    w, b = dense1.get_weights()
    killed = [3, 50, 299]
    w[:, killed] = 0.0
    b[killed] = -1.0           # ReLU(-1) = 0 on every patch: dead
    dense1.set_weights([w, b])
    u = ex.fc_units(model, test_x[:64])
    assert u.images.shape == (300, 32, 32) and u.layer == "dense1" and u.activation == "relu"
    assert set(np.flatnonzero(u.dead)) >= set(killed)
    assert set(u.order[-len(killed):]) <= set(np.flatnonzero(u.dead))
    assert np.all(np.diff(u.influence[u.order]) <= 0)
    assert np.allclose(u.images[7], w[:, 7].reshape(32, 32))
    with pytest.raises(ConfigError, match="no convolutional layer"):
        ex.conv_filters(model)


def test_compare_fc_runs(fc, toy_dataset, test_x):
    leaky = TrainingJob(RunConfig(arch="fc", activation="leaky_relu", epochs=1, batch_size=64, lr=1e-3, seed=5),
                        toy_dataset, probe=False).run().model
    same = ex.compare_fc(fc, fc, test_x[:64])
    assert same["similarity_mean"] > 0.999
    cmp = ex.compare_fc(fc, leaky, test_x[:64])
    assert cmp["activation"] == ["relu", "leaky_relu"] and cmp["dead_kind"] == ["dead", "never positive"]
    assert 0 < cmp["similarity_mean"] < 0.99
    assert 0 <= cmp["dead_share"][0] <= 1 and 0 <= cmp["dead_share"][1] <= 1


# ---- CNN ------------------------------------------------------------------------------------

def test_cnn_filters_feature_maps_and_gradcam(cnn, test_x):
    assert ex.conv_filters(cnn).shape == (4, 3, 3)
    fm = ex.feature_maps(cnn, test_x[0])
    assert fm.names == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert [m.shape for m in fm.maps] == [(32, 32, 4), (16, 16, 4), (16, 16, 4), (8, 8, 4), (8, 8, 4)]
    assert all(int(h[0].sum()) == m.size for h, m in zip(fm.hist, fm.maps))
    assert all(m.min() >= 0 for m in fm.maps)             # seed convs are ReLU'd
    # conv1's maps are the conv of the patch: check one value by hand
    k, bias = cnn.get_layer("conv1").get_weights()
    pad = np.pad(test_x[0], 1)
    by_hand = max(0.0, float((pad[10:13, 20:23] * k[:, :, 0, 2]).sum() + bias[2]))
    assert abs(fm.maps[0][10, 20, 2] - by_hand) < 1e-4
    cam = ex.grad_cam(cnn, test_x[0])
    assert cam.shape == (32, 32) and cam.min() >= 0
    for method in ("saliency", "occlusion", "gradcam"):
        assert ex.explain(cnn, test_x[1], method).shape == (32, 32)


def test_gradcam_of_a_valid_cnn_uses_the_last_map_wider_than_one_pixel(test_x):
    """'valid' convs leave conv5 a 1x1 map (a constant CAM): Grad-CAM reads conv4's 3x3 instead."""
    from xray_core.models import build_model
    m = build_model(RunConfig(arch="cnn", cnn_mode="corrected", filters=(4, 4, 4, 4, 4), padding="valid"),
                    compile=False)
    assert tuple(m.get_layer("conv5").output.shape)[1:3] == (1, 1)
    shown = [x for x in test_x[:20] if np.ptp(ex.grad_cam(m, x, layer="conv4")) > 0]
    assert shown, "no patch with a non-constant conv4 CAM"
    cam = ex.grad_cam(m, shown[0])
    assert cam.shape == (32, 32)
    assert np.array_equal(cam, ex.grad_cam(m, shown[0], layer="conv4"))
    assert np.ptp(ex.grad_cam(m, shown[0], layer="conv5")) == 0       # what the last conv would show


def test_rowwise_batchnorm_panel_reads_the_model_and_differs_from_channelwise(cnn, test_x):
    assert ex.rowwise_bn_layers(cnn) == [f"batchnorm{i}" for i in range(1, 6)]
    bn = cnn.get_layer("batchnorm1")
    gamma, beta, mean, var = bn.get_weights()
    r = ex.batchnorm_rows(cnn, test_x[:16], index=2)
    assert r["rows"] == 32 and r["before"].shape == (32, 32)
    want = gamma[:, None] * (r["before"] - mean[:, None]) / np.sqrt(var[:, None] + bn.epsilon) + beta[:, None]
    assert np.allclose(r["model"], want, atol=1e-4)      # the model normalises per ROW
    assert r["channel_mean_spread"]["channelwise"] < 1e-6  # channel-wise equalises channels
    assert r["channel_mean_spread"]["rowwise"] > 1e-3       # row-wise does not
    with pytest.raises(ConfigError, match="row-wise"):
        ex.batchnorm_rows(ex_fc_model(), test_x[:2])


def ex_fc_model():
    from xray_core.models import build_model
    return build_model(RunConfig(arch="fc"), compile=False)


# ---- CLI ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(fc, cnn, tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    fc.save(d / "fc.keras")
    cnn.save(d / "cnn.keras")
    return d


@pytest.fixture(scope="module")
def patch_files(test_x, tmp_path_factory):
    d = tmp_path_factory.mktemp("patches")
    for i in range(2):
        Image.fromarray(np.rint(test_x[i] * 255).astype(np.uint8)).save(d / f"p{i}.png")
    big = np.tile(np.rint(test_x[2] * 255).astype(np.uint8), (2, 2))   # 64x64: resized like the app does
    Image.fromarray(big).save(d / "big.png")
    (d / "notes.png").write_text("<html>not an image</html>")
    return d


def test_cli_explain_writes_records(saved, patch_files, fc, tmp_path, capsys):
    files = [str(patch_files / n) for n in ("p0.png", "notes.png", "big.png")]
    out = tmp_path / "x.json"
    assert main(["explain", "--model", str(saved / "fc.keras"), "--json", str(out), *files]) == 0
    recs = json.loads(out.read_text())
    assert [r["file"] for r in recs] == files
    assert recs[1]["ok"] is False and set(recs[1]) == {"file", "ok", "error"} and "notes.png" in recs[1]["error"]
    for r in (recs[0], recs[2]):
        assert r["ok"] and set(CLASSES) == set(r["probabilities"])
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
        s = np.asarray(r["saliency"])
        assert s.shape == (32, 32) and np.isfinite(s).all()
    # the probabilities are the model on the patch exactly as the app prepares it
    patch = patch_input(read_image((patch_files / "big.png").read_bytes(), "big.png"))
    p = predict_patches(fc, patch[None])[0]
    assert np.allclose([recs[2]["probabilities"][c] for c in CLASSES], p, atol=1e-5)
    assert np.allclose(recs[2]["saliency"], ex.integrated_gradients(fc, patch), atol=1e-6)


def test_cli_explain_methods_and_errors(saved, patch_files, tmp_path, capsys):
    f = str(patch_files / "p1.png")
    out = tmp_path / "cam.json"
    assert main(["explain", "--model", str(saved / "cnn.keras"), "--method", "gradcam", "--json", str(out), f]) == 0
    assert np.asarray(json.loads(out.read_text())[0]["saliency"]).min() >= 0
    capsys.readouterr()
    assert main(["explain", "--model", str(saved / "fc.keras"), "--method", "gradcam", f]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Grad-CAM needs a convolutional layer" in err[0]
    assert main(["explain", "--model", str(saved / "fc.keras"), str(patch_files / "notes.png"),
                 str(tmp_path / "missing.png")]) == 1
    assert "no file could be explained" in capsys.readouterr().err
    assert main(["explain", "--model", str(tmp_path / "nope.keras"), f]) == 1


def test_cli_explain_as_a_process_has_no_traceback(saved, patch_files, tmp_path):
    out = tmp_path / "o.json"
    r = subprocess.run([sys.executable, "-m", "xray_core", "explain", "--model", str(saved / "fc.keras"),
                        "--method", "occlusion", "--json", str(out), str(patch_files / "p0.png")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert json.loads(out.read_text())[0]["method"] == "occlusion"


def test_film_patch_is_the_patch_the_anatomy_map_classified(fc):
    from xray_core.maps.inference import anatomy_map
    from xray_core.data.phantom.build import phantom_radiographs
    _, film, _ = phantom_radiographs(1, seed=0)[0]
    amap = anatomy_map(fc, np.asarray(film, np.uint8), stride=8, smooth=0)
    for y, x in ((0, 0), (40, 120), (248, 8)):
        p = predict_patches(fc, ex.film_patch(amap.film, y, x)[None])[0]
        assert np.allclose(p, amap.probs[y, x], atol=1e-5)
    with pytest.raises(ImageError, match="outside"):
        ex.film_patch(amap.film, 300, 0)


def test_explained_models_can_be_freed_and_still_save(tmp_path):
    """The per-model parts (sub-models, compiled gradient) must not keep a model alive,
    nor change what it saves (a class of 30 explains many models in one server)."""
    import gc
    import weakref
    import keras
    model = ex_fc_model()
    q = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    for method in ("saliency", "occlusion"):
        ex.explain(model, q, method)
    ex.fc_units(model, q[None])
    model.save(tmp_path / "m.keras")
    assert len(keras.models.load_model(tmp_path / "m.keras").weights) == len(model.weights)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
