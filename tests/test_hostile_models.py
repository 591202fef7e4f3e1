"""Issue 23, item 1: a .keras model's cost to RUN is measured before it runs.

The hostile student's model: Conv2D(128, 32x32 kernel, 'same') -> MaxPooling2D(32) ->
Dense(4), 131,716 parameters. Before the fix it passed the parameter check and a map
of one film ran it in batches of 4,096 patches: 2 GB of activations in the server.
Its 4,096-filter twin (4.2 M parameters, ~4.3 G multiply-adds per patch) must be refused.
"""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from xray_core.config import RunConfig
from xray_core.cost import cost
from xray_core.errors import DataError
from xray_core.maps import inference, modelcheck
from xray_core.maps.inference import anatomy_map, fit_batch, load_model, patch_bytes
from xray_core.maps.modelcheck import check_archive

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _save(path, *layers):
    import keras
    keras.Sequential([keras.Input((32, 32, 1)), *layers]).save(path)
    return str(path)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The issue's model, saved for real (Keras writes it as an upload would arrive)."""
    from keras import layers as L
    return _save(tmp_path_factory.mktemp("h") / "h128.keras",
                 L.Conv2D(128, 32, padding="same", name="c"), L.MaxPooling2D(32, name="p"),
                 L.Flatten(name="f"), L.Dense(4, activation="softmax", name="o"))


def _with_filters(src, dst, filters):
    """The same archive with the conv's filters changed in config.json (the weights are
    never read: the check refuses before Keras builds anything)."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    cfg = json.loads(members["config.json"])
    for layer in cfg["config"]["layers"]:
        if layer["class_name"] == "Conv2D":
            layer["config"]["filters"] = filters
        if layer["class_name"] in ("MaxPooling2D", "Flatten"):
            layer.get("build_config", {}).pop("input_shape", None)
        if layer["class_name"] == "Dense":
            layer["build_config"] = {"input_shape": [None, filters]}
    members["config.json"] = json.dumps(cfg).encode()
    with zipfile.ZipFile(dst, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    return str(dst)


def test_the_128_filter_model_is_measured_with_the_training_caps_arithmetic(hostile):
    s = check_archive(hostile)
    assert s.params == 131_716
    # every one of the 32x32 output pixels applies 32*32*128 weights + 128 biases; then Dense(128 -> 4)
    assert s.multiply_adds == (32 * 32 * 128 + 128) * 32 * 32 + (128 * 4 + 4)
    assert s.multiply_adds < 150_000_000          # under the default cap: it is accepted ...
    assert s.peak_bytes == (32 * 32 + 32 * 32 * 128) * 4   # ... and one patch needs ~0.5 MB


def test_the_4096_filter_twin_is_refused_in_one_line_naming_the_limit(hostile, tmp_path):
    path = _with_filters(hostile, tmp_path / "h4096.keras", 4096)
    with pytest.raises(DataError) as e:
        load_model(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert "150,000,000 multiply-adds per patch" in msg and "XRAY_LAB_MAX_MACS" in msg
    assert str(tmp_path) not in msg                # names the file, not the server folder


def test_the_macs_cap_is_the_servers(hostile, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_MAX_MACS", "100000000")
    with pytest.raises(DataError, match="100,000,000 multiply-adds"):
        check_archive(hostile)
    monkeypatch.setenv("XRAY_LAB_MAX_MACS", "200000000")
    assert check_archive(hostile).multiply_adds > 100_000_000


@pytest.mark.parametrize("config", [RunConfig(arch="fc"),
                                    RunConfig(arch="cnn", cnn_mode="corrected", filters=(8, 8, 16, 16, 16),
                                              padding="valid")],
                         ids=["fc", "cnn-valid"])
def test_a_model_trained_here_counts_as_the_training_cap_counts_it(config, tmp_path):
    from xray_core.models import build_model
    path = tmp_path / "m.keras"
    build_model(config, compile=False).save(path)
    assert check_archive(str(path)).multiply_adds == cost(config)["multiply_adds"]


def test_a_cheap_but_wide_layer_is_refused_for_its_activations(tmp_path):
    """1x1 conv to 20,000 channels: only ~41 M multiply-adds, but 80 MB for ONE patch."""
    from keras import layers as L
    path = _save(tmp_path / "wide.keras", L.Conv2D(20_000, 1, name="wide"), L.MaxPooling2D(32),
                 L.Flatten(), L.Dense(4, activation="softmax"))
    with pytest.raises(DataError, match=r"one patch needs 78 MB of activations .*64 MB"):
        load_model(path)


def test_batches_are_sized_by_bytes_not_by_count(hostile):
    m = load_model(hostile)
    assert patch_bytes(m)[0] == check_archive(hostile).peak_bytes
    n = fit_batch(m)
    assert 1 <= n < 4096 and n * patch_bytes(m)[0] <= modelcheck.BATCH_BYTES


def test_gradients_in_chunks_equal_one_pass(hostile, monkeypatch):
    from xray_core.maps import explain
    m = load_model(hostile)
    patch = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    whole = explain.integrated_gradients(m, patch, steps=8)
    explain.cache_clear()
    calls = []
    real = explain._submodel

    def counting(model, name, build):
        fn = real(model, name, build)
        return (lambda *a: calls.append(a[0].shape[0]) or fn(*a)) if name == "grad" else fn
    monkeypatch.setattr(explain, "_submodel", counting)
    monkeypatch.setattr(modelcheck, "BATCH_BYTES", 3 * patch_bytes(m)[1])
    chunked = explain.integrated_gradients(m, patch, steps=8)
    assert calls == [3, 3, 2]
    np.testing.assert_allclose(chunked, whole, rtol=1e-4, atol=1e-7)


def test_a_wide_dense_able_network_maps_patch_by_patch_not_in_one_huge_pass(tmp_path):
    """3x3 'same' conv to 2,048 channels + three 2x2 pools: the whole-film pass would hold
    ~650 MB at stride 4; the map goes patch by patch in small batches and says why."""
    from keras import layers as L
    path = _save(tmp_path / "densewide.keras", L.Conv2D(2048, 3, padding="same"), L.MaxPooling2D(2),
                 L.MaxPooling2D(2), L.MaxPooling2D(2), L.Flatten(), L.Dense(4, activation="softmax"))
    m = load_model(path)
    assert inference.map_method(m)[0] == "dense"          # the shape alone would allow it ...
    film = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    amap = anatomy_map(m, film, stride=16)
    assert amap.method == "patches" and "MB" in amap.method_reason   # ... its size does not


_MEASURE = r"""
import json, os, sys
import numpy as np
sys.path.insert(0, {root!r})
from xray_core.maps.inference import anatomy_map, load_model, predict_patches

def status_mb(field):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(field + ":")) / 1024

model = load_model({path!r})
predict_patches(model, np.zeros((2, 32, 32), np.float32))      # TF and the predict function built
film = np.random.default_rng(0).random((256, 256)).astype(np.float32)
with open("/proc/self/clear_refs", "w") as fh:    # peak RSS (VmHWM) := now: the map's own peak follows
    fh.write("5")
before = status_mb("VmRSS")
amap = anatomy_map(model, film, stride=8)
print(json.dumps(dict(before=before, peak=status_mb("VmHWM"), after=status_mb("VmRSS"), method=amap.method,
                      shape=list(amap.labels.shape))))
"""


def test_a_map_of_the_128_filter_model_keeps_the_servers_memory_bounded(hostile):
    """Measured in a fresh process: the map's peak RSS over what the process held before
    (TF loaded, model built). Before byte-sized batches this was ~2,100 MB."""
    out = subprocess.run([sys.executable, "-c", _MEASURE.format(root=ROOT, path=hostile)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["shape"] == [256, 256] and r["method"] == "patches"
    grew = r["peak"] - r["before"]
    print(f"map of the 128-filter model: peak RSS +{grew:.0f} MB, afterwards {r['after'] - r['before']:+.0f} MB")
    assert grew < 300, r
    assert r["after"] - r["before"] < 100, r        # given back, not kept


def test_an_overlapping_pool_is_not_free(tmp_path):
    """MaxPooling2D(32, strides=1, 'same') over 4,096 channels: no weights, no conv, but
    32*32 comparisons for each of 32*32*4,096 outputs (~4.3 G per patch)."""
    from keras import layers as L
    path = _save(tmp_path / "pool.keras", L.Conv2D(4096, 1, name="wide"), L.MaxPooling2D(32, strides=1, padding="same"),
                 L.MaxPooling2D(32), L.Flatten(), L.Dense(4, activation="softmax"))
    with pytest.raises(DataError, match="multiply-adds per patch"):
        check_archive(path)
