import math

import pytest

from xray_core.config import RunConfig, parse_filters
from xray_core.errors import ConfigError
from xray_core.presets import PRESETS, get_preset, matching_preset


def test_defaults_resolve_per_architecture():
    assert RunConfig().resolved().lr == 1e-5
    seed = RunConfig(arch="cnn").resolved()
    assert (seed.lr, seed.l2, seed.dropout) == (1e-5, 1e-2, 0.3)
    fixed = RunConfig(arch="cnn", cnn_mode="corrected").resolved()
    assert fixed.lr == 1e-3 and fixed.l2 < 1e-2
    assert RunConfig(arch="cnn", cnn_mode="corrected", lr=0.05).resolved().lr == 0.05


@pytest.mark.parametrize("bad, words", [
    (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch size"), (dict(lr=0.0), "learning rate"),
    (dict(lr=-1e-3), "learning rate"), (dict(lr=math.nan), "learning rate"), (dict(lr=math.inf), "learning rate"),
    (dict(alpha=1.0), "alpha"), (dict(alpha=-0.1), "alpha"), (dict(filters=(1, 2, 3)), "five"),
    (dict(activation="swish"), "activation"), (dict(arch="rnn"), "architecture"),
    (dict(dropout=1.0), "dropout"), (dict(optimizer="lbfgs"), "optimizer"), (dict(seed=-1), "seed"),
    (dict(epochs=2.5), "epochs"), (dict(cnn_mode="fast"), "CNN mode"), (dict(limit_train=0), "limit"),
])
def test_invalid_values_are_refused_with_a_readable_message(bad, words):
    with pytest.raises(ConfigError, match=words):
        RunConfig(**bad).validate()


def test_round_trips_through_dict_and_query_string():
    cfg = RunConfig(arch="cnn", filters=(32, 64, 64, 128, 128), batch_norm=True, lr=3e-4, seed=7,
                    activation="leaky_relu", alpha=0.2)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    q = cfg.to_query()
    assert q["filters"] == "32,64,64,128,128" and "epochs" not in q  # only what differs
    assert RunConfig.from_query(q) == cfg
    assert RunConfig.from_query({"utm_source": "x"}) == RunConfig()


def test_bad_query_values_raise_config_error():
    with pytest.raises(ConfigError):
        RunConfig.from_query({"epochs": "many"})
    with pytest.raises(ConfigError):
        RunConfig.from_dict({"epochs": 3, "colour": "red"})


def test_parse_filters():
    assert parse_filters("64, 128,128,256,256") == (64, 128, 128, 256, 256)
    for bad in ("64,128", "a,b,c,d,e", "0,1,1,1,1"):
        with pytest.raises(ConfigError):
            parse_filters(bad)


def test_seven_presets_carry_the_course_numbers():
    assert list(PRESETS)[:7] == ["p1-task1", "p1-task2", "p1-task3", "p1-task4", "p1-task5", "p2-task1", "p2-task2"]
    # additive presets after the course's seven: the overfitting lesson on a small subset
    small = get_preset("p1-task5-small")
    assert small.config == get_preset("p1-task5").config.replace(limit_train=200)
    assert "phantom" in small.lesson and "real" in small.lesson
    assert get_preset("p1-task1").reported == {"train_accuracy": 83.9, "test_accuracy": 66.8, "test_loss": 0.81}
    assert get_preset("p1-task5").config.batch_norm and get_preset("p1-task4").config.batch_size == 32
    assert get_preset("p2-task2").config.filters == (32, 64, 64, 128, 128)
    assert get_preset("p2-task2").reported["test_accuracy"] == 25.7
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("p3-task1")


def test_matching_preset_ignores_seed_but_not_knobs():
    cfg = get_preset("p1-task3").config
    assert matching_preset(cfg.replace(seed=5)).name == "p1-task3"
    assert matching_preset(cfg.replace(epochs=41)) is None
