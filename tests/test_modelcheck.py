"""Uploaded .keras archives are checked before Keras builds anything from them."""
import copy
import json
import os
import zipfile

import numpy as np
import pytest

from xray_core.config import RunConfig
from xray_core.errors import DataError
from xray_core.maps.inference import load_model, predict_patches
from xray_core.maps.modelcheck import MAX_CONFIG_BYTES, check_archive
from xray_core.presets import get_preset


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A real, small Keras archive (Flatten -> Dense(4)) to craft variants from."""
    import keras
    path = tmp_path_factory.mktemp("m") / "tiny.keras"
    keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(name="flatten"),
                      keras.layers.Dense(4, activation="softmax", name="output")]).save(path)
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def craft(tmp_path, members: dict, edit=None, name="crafted.keras"):
    members = dict(members)
    if edit is not None:
        cfg = json.loads(members["config.json"])
        edit(cfg)
        members["config.json"] = json.dumps(cfg).encode()
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in members.items():
            z.writestr(n, data)
    return str(path)


def insert_dense(units):
    def edit(cfg):
        layers = cfg["config"]["layers"]
        big = copy.deepcopy(layers[-1])
        big["config"].update(name="huge", units=units, activation="relu")
        big["build_config"] = {"input_shape": [None, 1024]}
        layers.insert(-1, big)
        layers[-1]["build_config"] = {"input_shape": [None, units]}
    return edit


def test_a_small_archive_declaring_dense_1e6_is_refused_before_memory_moves(tmp_path, tiny):
    path = craft(tmp_path, tiny, insert_dense(1_000_000))
    assert os.path.getsize(path) < 32 * 1024
    import keras  # noqa: F401  (imported before the measurement: TF's own start-up is not the model)
    before = _rss_mb()
    with pytest.raises(DataError, match="parameters"):
        load_model(path)
    assert _rss_mb() - before < 50


def test_the_parameter_cap_is_the_environments(tmp_path, tiny, monkeypatch):
    path = craft(tmp_path, tiny, insert_dense(100))      # 1024*100+100 + 404 params
    assert check_archive(path).params == 1024 * 100 + 100 + 100 * 4 + 4
    monkeypatch.setenv("XRAY_LAB_MAX_PARAMS", "50000")
    with pytest.raises(DataError, match="50,000 parameters"):
        check_archive(path)


@pytest.mark.parametrize("cls,module", [("Lambda", "keras.layers"), ("TFSMLayer", "keras.layers"),
                                        ("Conv3D", "keras.layers"), ("Evil", "evil.module")])
def test_layers_this_app_does_not_build_are_refused(tmp_path, tiny, cls, module):
    def edit(cfg):
        layer = cfg["config"]["layers"][1]
        layer["class_name"], layer["module"] = cls, module
        if cls == "Lambda":
            layer["config"]["function"] = {"class_name": "__lambda__", "config": {"code": "x"}}
    with pytest.raises(DataError, match="cannot load the model"):
        load_model(craft(tmp_path, tiny, edit))


def test_objects_from_outside_keras_are_refused(tmp_path, tiny):
    def edit(cfg):
        cfg["config"]["layers"][-1]["config"]["kernel_initializer"] = {
            "module": "os", "class_name": "system", "config": {}, "registered_name": None}
    with pytest.raises(DataError, match="outside Keras"):
        load_model(craft(tmp_path, tiny, edit))


def test_wrong_input_or_output_shapes_are_refused(tmp_path):
    import keras
    wrong_in = tmp_path / "in.keras"
    keras.Sequential([keras.Input((64, 64, 1)), keras.layers.Flatten(), keras.layers.Dense(4)]).save(wrong_in)
    with pytest.raises(DataError, match="expected 32x32x1"):
        load_model(str(wrong_in))
    wrong_out = tmp_path / "out.keras"
    keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]).save(wrong_out)
    with pytest.raises(DataError, match="expected 4 class"):
        load_model(str(wrong_out))


def test_a_build_shape_that_lies_is_refused(tmp_path, tiny):
    def edit(cfg):
        cfg["config"]["layers"][-1]["build_config"] = {"input_shape": [None, 10 ** 9]}
    with pytest.raises(DataError, match="does not match"):
        load_model(craft(tmp_path, tiny, edit))


def test_archive_caps(tmp_path, tiny):
    many = dict(tiny, **{f"pad{i}.txt": b"x" for i in range(20)})
    with pytest.raises(DataError, match="holds 23 files"):
        check_archive(craft(tmp_path, many, name="many.keras"))
    big = dict(tiny, **{"config.json": b" " * (MAX_CONFIG_BYTES + 1)})
    with pytest.raises(DataError, match="too large"):
        check_archive(craft(tmp_path, big, name="big.keras"))
    deep = dict(tiny, **{"config.json": b"[" * 100_000 + b"]" * 100_000})
    with pytest.raises(DataError, match="JSON|too deeply"):
        check_archive(craft(tmp_path, deep, name="deep.keras"))
    bomb = dict(tiny, **{"model.weights.h5": b"\0" * (200 << 20)})   # compresses to ~200 KB
    with pytest.raises(DataError, match="unpacks to"):
        check_archive(craft(tmp_path, bomb, name="bomb.keras"))
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="not a valid .keras"):
        check_archive(str(junk))
    assert str(tmp_path) not in str(pytest.raises(DataError, check_archive, str(junk)).value)


@pytest.mark.parametrize("cfg", [
    RunConfig(arch="fc", batch_norm=True, dropout=0.2, activation="leaky_relu"),
    RunConfig(arch="fc", activation="tanh"),
    RunConfig(arch="cnn", cnn_mode="seed"),
    RunConfig(arch="cnn", cnn_mode="corrected", activation="leaky_relu"),
    get_preset("p2-corrected").config,   # compiled with a cosine learning-rate schedule
], ids=["fc-bn-leaky", "fc-tanh", "cnn-seed", "cnn-corrected", "p2-corrected"])
def test_models_this_app_builds_pass_with_their_exact_parameter_count(tmp_path, cfg):
    from xray_core.models import build_model
    model = build_model(cfg, steps_per_epoch=10)   # as a run builds it: with its optimizer's schedule
    path = tmp_path / "m.keras"
    model.save(path)
    assert check_archive(str(path)).params == model.count_params()
    again = load_model(str(path))
    x = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(predict_patches(again, x), predict_patches(model, x), atol=1e-5)
