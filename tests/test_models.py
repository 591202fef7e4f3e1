import numpy as np
import pytest

from xray_core.config import RunConfig
from xray_core.models import build_model, cost, layer_table, multiply_adds


@pytest.mark.parametrize("cfg, total, trainable", [
    (RunConfig(), 353_254, 353_254),
    (RunConfig(batch_norm=True), 355_054, 354_154),
    (RunConfig(activation="leaky_relu"), 353_254, 353_254),
    (RunConfig(arch="cnn"), 3_271_492, 3_271_332),
    (RunConfig(arch="cnn", filters=(32, 64, 64, 128, 128)), 1_392_772, 1_392_612),
])
def test_parameter_counts_match_the_assignment(cfg, total, trainable):
    t = layer_table(cfg)
    assert (t["total_params"], t["trainable_params"]) == (total, trainable)
    assert sum(r["params"] for r in t["layers"]) == total


def test_fc_layer_order_reads_like_the_assignment():
    names = [r["name"] for r in layer_table(RunConfig(batch_norm=True, activation="leaky_relu"))["layers"]]
    assert names == ["patch", "flatten", "dense1", "batchnorm1", "leaky_relu1",
                     "dense2", "batchnorm2", "leaky_relu2", "output"]


def test_seed_cnn_batchnorm_normalises_rows_not_channels():
    rows = {r["name"]: r for r in layer_table(RunConfig(arch="cnn"))["layers"]}
    # axis=1 on NHWC: 4 params per image row (32, 16, 16, 8, 8 rows) instead of per channel
    assert [rows[f"batchnorm{i}"]["params"] for i in range(1, 6)] == [128, 64, 64, 32, 32]
    fixed = {r["name"]: r for r in layer_table(RunConfig(arch="cnn", cnn_mode="corrected"))["layers"]}
    assert [fixed[f"batchnorm{i}"]["params"] for i in range(1, 6)] == [256, 512, 512, 1024, 1024]
    order = [r["name"] for r in layer_table(RunConfig(arch="cnn"))["layers"]][:5]
    assert order == ["patch", "conv1", "dropout1", "batchnorm1", "maxpool1"]


def test_same_seed_same_weights_other_seed_other_weights():
    a = build_model(RunConfig(seed=3)).get_weights()[0]
    b = build_model(RunConfig(seed=3)).get_weights()[0]
    c = build_model(RunConfig(seed=4)).get_weights()[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # He-normal: std ≈ sqrt(2 / fan_in) for the first dense layer (fan_in 1024)
    assert abs(a.std() - np.sqrt(2 / 1024)) < 0.005


def test_models_output_a_probability_per_class():
    for cfg in (RunConfig(activation="tanh", dropout=0.2), RunConfig(arch="cnn", filters=(4, 4, 4, 4, 4)),
                RunConfig(arch="cnn", cnn_mode="corrected", filters=(4, 4, 4, 4, 4), activation="elu")):
        p = np.asarray(build_model(cfg)(np.zeros((3, 32, 32, 1), "float32")))
        assert p.shape == (3, 4) and np.allclose(p.sum(1), 1, atol=1e-5)


def test_optimizer_and_learning_rate_follow_the_config():
    m = build_model(RunConfig(optimizer="sgd", lr=0.01, momentum=0.8))
    assert type(m.optimizer).__name__ == "SGD" and np.isclose(float(m.optimizer.learning_rate), 0.01)
    assert type(build_model(RunConfig()).optimizer).__name__ == "Adam"


@pytest.mark.parametrize("cfg", [
    RunConfig(), RunConfig(batch_norm=True), RunConfig(arch="cnn"), RunConfig(arch="cnn", cnn_mode="corrected"),
    RunConfig(arch="cnn", filters=(32, 64, 64, 128, 128)), RunConfig(arch="cnn", filters=(3, 5, 7, 9, 11)),
    RunConfig(arch="cnn", cnn_mode="corrected", padding="valid"), RunConfig(arch="cnn", padding="valid"),
], ids=["fc", "fc+bn", "cnn-seed", "cnn-corrected", "cnn-half", "cnn-odd", "cnn-corrected-valid", "cnn-seed-valid"])
def test_cost_arithmetic_equals_keras_counts(cfg):
    """cost() guards the caps without building a model: it must agree with the model Keras builds."""
    model = build_model(cfg, compile=False)
    assert cost(cfg) == {"params": model.count_params(), "multiply_adds": multiply_adds(cfg)}
    assert cost(cfg)["params"] == layer_table(cfg)["total_params"]


def test_valid_padding_shrinks_every_conv_and_keeps_the_course_layer_names():
    """'valid' convs: 32 -> 30 -> (pool) 15 -> 13 -> 11 -> (pool) 5 -> 3 -> 1; the last pool has
    nothing left to pool but stays, so the summary still reads like the assignment."""
    same = build_model(RunConfig(arch="cnn", cnn_mode="corrected"), compile=False)
    valid = build_model(RunConfig(arch="cnn", cnn_mode="corrected", padding="valid"), compile=False)
    assert [l.name for l in valid.layers] == [l.name for l in same.layers]
    sides = {l.name: tuple(l.output.shape)[1] for l in valid.layers if l.name.startswith(("conv", "maxpool"))}
    assert sides == {"conv1": 30, "maxpool1": 15, "conv2": 13, "conv3": 11, "maxpool2": 5,
                     "conv4": 3, "conv5": 1, "maxpool3": 1}
    assert all(l.padding == "valid" for l in valid.layers if l.name.startswith("conv"))
    assert multiply_adds(RunConfig(arch="cnn", cnn_mode="corrected", padding="valid")) < \
        multiply_adds(RunConfig(arch="cnn", cnn_mode="corrected")) / 3


def _rate(model, name):
    return next(l.rate for l in model.layers if l.name == name)


def test_no_hidden_floor_under_the_corrected_cnns_head_dropout():
    """What the table allows is what runs: head dropout 0.1 is a Dropout(0.1)."""
    m = build_model(RunConfig(arch="cnn", cnn_mode="corrected", head_dropout=0.1), compile=False)
    assert _rate(m, "dropout_dense") == pytest.approx(0.1)
    m = build_model(RunConfig(arch="cnn", cnn_mode="corrected", dropout=0.1, head_dropout=0.0), compile=False)
    assert _rate(m, "dropout_dense") == 0.0 and _rate(m, "dropout1") == pytest.approx(0.1)
    m = build_model(RunConfig(arch="cnn", cnn_mode="corrected", dropout=0.5), compile=False)
    assert _rate(m, "dropout_dense") == pytest.approx(0.3)   # the table's default, not max(dropout, 0.3)
    # the course's CNN keeps its one rate, dropout, at the head too
    m = build_model(RunConfig(arch="cnn", dropout=0.1, head_dropout=0.9), compile=False)
    assert _rate(m, "dropout_dense") == pytest.approx(0.1)


def test_the_corrected_preset_says_its_head_dropout_and_builds_as_before():
    from xray_core.presets import PRESETS
    cfg = PRESETS["p2-corrected"].config
    assert cfg.head_dropout == 0.3 and cfg.dropout == 0.2
    m = build_model(cfg, compile=False)
    assert _rate(m, "dropout_dense") == pytest.approx(0.3) and _rate(m, "dropout1") == pytest.approx(0.2)
