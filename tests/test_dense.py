"""Dense anatomy maps (xray_core/dense.py): same labels as patch by patch, fallbacks with reasons,
and `classify --method`. Tiny untrained CNNs keep this fast."""
import json

import numpy as np
import pytest
from PIL import Image

from xray_core.cli.main import main
from xray_core.config import RunConfig
from xray_core.maps.dense import DensePlan, _run, dense_plan
from xray_core.errors import ConfigError
from xray_core.maps.inference import anatomy_map, map_method
from xray_core.models import build_model
from xray_core.data.phantom.build import phantom_radiographs

TINY = (2, 4, 4, 4, 4)


@pytest.fixture(scope="module")
def film():
    return phantom_radiographs(1, seed=0)[0][1]


@pytest.fixture(scope="module")
def cnn():
    return build_model(RunConfig(arch="cnn", cnn_mode="corrected", filters=TINY, seed=3), compile=False)


def test_dense_pass_equals_patch_network_away_from_the_patch_border(cnn):
    """Inside a patch, out of reach of its zero border, every feature of the whole-film pass is
    the patch network's own, at each grid step (1, 2, 4, 8 px: à trous vs real pooling)."""
    import keras
    rng = np.random.default_rng(0)
    patch = rng.random((32, 32)).astype(np.float32)
    canvas = rng.random((64, 64)).astype(np.float32)
    canvas[16:48, 16:48] = patch
    plan = dense_plan(cnn)
    kinds = [s[0] for s in plan.steps]
    n = kinds.index("pool", kinds.index("pool") + 1) + 3      # up to conv4 (its batch norm folded in)
    assert kinds[n - 2:n] == ["conv", "act"]                  # and its ReLU: an (8, 8) map in the patch
    want = keras.Model(cnn.inputs, cnn.get_layer("relu4").output)(patch[None, :, :, None]).numpy()[0]
    for t in (1, 2, 4, 8):
        got = _run(DensePlan(True, "", plan.steps[:n], plan.pools), canvas[None, :, :, None], t).numpy()[0]
        step = 4 // min(t, 4)                               # two pools: 4 px per feature
        o = 16 // min(t, 4)
        got = got[o:o + 8 * step:step, o:o + 8 * step:step]
        # conv1 (1 px), conv2+conv3 (2 x 2 px), conv4 (4 px) reach 3 features in from the border
        np.testing.assert_allclose(got[3:-3, 3:-3], want[3:-3, 3:-3], atol=1e-5)
        assert not np.allclose(got, want, atol=1e-5)        # ...and the border does differ


@pytest.fixture(scope="module")
def valid_cnn():
    """A tiny 'valid' CNN whose batch norm statistics matter (not the identity of a fresh layer)."""
    m = build_model(RunConfig(arch="cnn", cnn_mode="corrected", filters=TINY, padding="valid", seed=3),
                    compile=False)
    rng = np.random.default_rng(1)
    for layer in m.layers:
        if layer.name.startswith("batchnorm"):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    return m


@pytest.mark.parametrize("stride", [8, 4, 2, 1])
def test_valid_cnn_dense_map_is_the_patch_map(valid_cnn, film, stride):
    """No zero padding: the whole-film pass gives every patch's own probabilities, at every grid
    step (real pools, à trous pools, the identity last pool on a 1x1 map), with nothing re-checked."""
    plan = dense_plan(valid_cnn)
    assert plan.ok and plan.exact and "exactly the patch-by-patch labels" in plan.reason
    a = anatomy_map(valid_cnn, film, stride=stride, method="patches", smooth=0)
    b = anatomy_map(valid_cnn, film, stride=stride, smooth=0)
    assert b.method == "dense" and b.refined == 0 and b.grid_shape == a.grid_shape
    np.testing.assert_allclose(b.probs, a.probs, atol=1e-5)
    assert np.array_equal(a.labels, b.labels)


def test_same_padding_plans_are_not_exact(cnn):
    assert dense_plan(cnn).ok and not dense_plan(cnn).exact


@pytest.mark.parametrize("stride", [4, 1])
def test_dense_labels_match_patches(cnn, film, stride):
    a = anatomy_map(cnn, film, stride=stride, method="patches")
    b = anatomy_map(cnn, film, stride=stride)
    assert a.method == "patches" and b.grid_shape == a.grid_shape
    assert np.mean(a.labels == b.labels) >= 0.99
    # an untrained net is unsure almost everywhere: either the unsure points were re-checked,
    # or (most of the grid unsure) the whole map went patch by patch, saying so
    assert b.method == "dense" or "zero borders" in b.method_reason, b.method_reason
    half = anatomy_map(cnn, film, stride=stride, refine_margin=1e-4)   # re-check only near-ties
    assert half.method == "dense" and 0 < half.refined < half.grid_shape[0] * half.grid_shape[1]
    # without the patch-by-patch check of unsure points, the dense pass alone is close but not equal
    raw = anatomy_map(cnn, film, stride=stride, refine_margin=0)
    assert raw.refined == 0 and np.abs(raw.probs - a.probs).max() < 0.05


@pytest.mark.parametrize("config, words", [
    (RunConfig(arch="cnn", cnn_mode="seed", filters=TINY), "axis=1"),
    (RunConfig(arch="fc"), "fully connected"),
])
def test_models_that_cannot_go_dense_keep_patches_with_a_reason(config, words, film):
    model = build_model(config, compile=False)
    assert map_method(model, "auto")[0] == "patches"
    amap = anatomy_map(model, film, stride=16)
    assert amap.method == "patches" and words in amap.method_reason
    assert amap.method_reason.startswith("Patch by patch, because ")


def test_unknown_method_is_refused(cnn):
    with pytest.raises(ConfigError, match="method must be one of"):
        map_method(cnn, "fast")


@pytest.fixture(scope="module")
def saved(tmp_path_factory, film, cnn):
    d = tmp_path_factory.mktemp("dense_cli")
    Image.fromarray(np.asarray(film, np.uint8)).save(d / "film.png")
    cnn.save(d / "cnn.keras")
    build_model(RunConfig(arch="fc"), compile=False).save(d / "fc.keras")
    return d


@pytest.mark.parametrize("method", ["dense", "patches"])
def test_classify_method_json(saved, method, capsys):
    out = saved / f"{method}.json"
    assert main(["classify", "--model", str(saved / "cnn.keras"), str(saved / "film.png"),
                 "--stride", "8", "--method", method, "--json", str(out)]) == 0
    (rec,) = json.loads(out.read_text())
    assert rec["ok"] and rec["method_reason"]
    # untrained and unsure everywhere, the tiny CNN may fall back to patches: then it says why
    assert rec["method"] == method or (method == "dense" and "zero borders" in rec["method_reason"])
    assert isinstance(rec["map_seconds"], float) and rec["map_seconds"] > 0


def test_classify_dense_on_fc_falls_back_with_one_note(saved, capsys):
    out = saved / "fc.json"
    assert main(["classify", "--model", str(saved / "fc.keras"), str(saved / "film.png"),
                 "--stride", "16", "--method", "dense", "--json", str(out)]) == 0
    (rec,) = json.loads(out.read_text())
    assert rec["method"] == "patches" and "fully connected" in rec["method_reason"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: --method dense does not apply")


def test_classify_rejects_unknown_method(saved, capsys):
    assert main(["classify", "--model", str(saved / "cnn.keras"), str(saved / "film.png"),
                 "--method", "fast"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_random_valid_architectures_map_exactly(film):
    """Beyond the course's layout: 1x1, 3x3 and 5x5 'valid' convs, batch norm or not, pools on
    odd maps (the floor drops a row), in random orders -- the dense map is the patch map."""
    import random

    import keras
    from keras import layers as L
    rng = random.Random(0)
    seen = 0
    for _ in range(6):
        x = inp = keras.Input((32, 32, 1))
        side = 32
        for _ in range(rng.randint(1, 4)):
            k = rng.choice([k for k in (1, 3, 5) if side - (k - 1) >= 1])
            x = L.Conv2D(rng.choice([2, 3]), k, padding="valid")(x)
            side -= k - 1
            if rng.random() < 0.5:
                x = L.BatchNormalization(momentum=0.0)(x)
            x = L.Activation(rng.choice(["relu", "elu", "tanh"]))(x)
            if rng.random() < 0.5 and side >= 2:
                x = L.MaxPooling2D(2)(x)
                side //= 2
        out = L.Dense(4, activation="softmax")(L.Dense(6, activation="relu")(L.Flatten()(x)))
        model = keras.Model(inp, out)
        nprng = np.random.default_rng(seen)
        for layer in model.layers:
            if isinstance(layer, L.BatchNormalization):
                layer.moving_mean.assign(nprng.normal(0, 0.1, layer.moving_mean.shape))
                layer.moving_variance.assign(nprng.uniform(0.5, 2.0, layer.moving_variance.shape))
        assert dense_plan(model).exact, dense_plan(model).reason
        a = anatomy_map(model, film, stride=4, method="patches", smooth=0)
        b = anatomy_map(model, film, stride=4, smooth=0)
        assert b.method == "dense" and b.refined == 0
        np.testing.assert_allclose(b.probs, a.probs, atol=1e-5)
        seen += 1
    assert seen == 6
