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
    # a bad filter list in a link says what is wrong and what to type, not just "cannot read"
    with pytest.raises(ConfigError, match="exactly five filter counts"):
        RunConfig.from_query({"arch": "cnn", "filters": "1,2,999999"})
    with pytest.raises(ConfigError, match="like 64,128,128,256,256"):
        RunConfig.from_query({"arch": "cnn", "filters": "a,b"})


def test_parse_filters():
    assert parse_filters("64, 128,128,256,256") == (64, 128, 128, 256, 256)
    for bad in ("64,128", "a,b,c,d,e", "0,1,1,1,1"):
        with pytest.raises(ConfigError):
            parse_filters(bad)


def test_seven_presets_carry_the_course_numbers():
    assert list(PRESETS) == ["p1-task1", "p1-task2", "p1-task3", "p1-task4", "p1-task5", "p2-task1", "p2-task2",
                             "p2-corrected", "p1-task5-small", "p3-unet", "p3-unet-small"]
    # additive: the overfitting lesson on a small subset
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


# ---- the knob table --------------------------------------------------------------

from xray_core.config import CAPS, KNOBS, applies, arch_defaults, cap, parse_text  # noqa: E402
from xray_core.presets import describe  # noqa: E402


def _other_value(name):
    """A valid value of the knob that is not its default (for round trips)."""
    k = KNOBS[name]
    if k.choices:
        return next(c for c in reversed(k.choices) if c != getattr(RunConfig(), name))
    if name in ("input_size", "depth"):        # the U-Net's: 7 is no input size, and deeper than 6
        return {"input_size": 64, "depth": 3}[name]
    return {bool: True, tuple: (8, 16, 16, 32, 32), str: "/data/course"}.get(k.kind) or \
        (k.max if k.max is not None and k.kind is float else 7)


@pytest.mark.parametrize("name", list(KNOBS))
def test_every_knob_round_trips_through_the_url_and_dict(name):
    cfg = RunConfig().replace(**{name: _other_value(name)}).validate()
    q = cfg.to_query()
    assert set(q) == {name}
    assert RunConfig.from_query(q) == cfg and RunConfig.from_dict(cfg.to_dict()) == cfg


def test_the_table_describes_every_field_with_label_range_and_help():
    from dataclasses import fields
    assert set(KNOBS) == {f.name for f in fields(RunConfig)}
    for name, k in KNOBS.items():
        if k.widget:
            assert k.label and k.help, name
        if k.kind in (int, float):
            assert k.min is not None and (k.max is not None or k.cap), name
        if k.widget in ("slider", "number"):
            assert k.step, name
    assert set(arch_defaults("fc")) == {"lr", "l2", "dropout"}
    assert arch_defaults("cnn", "corrected") == {"lr": 1e-3, "l2": 1e-4, "dropout": 0.2}
    assert RunConfig(arch="cnn", cnn_mode="corrected").resolved().lr == KNOBS["lr"].per_arch["cnn/corrected"]


@pytest.mark.parametrize("name", [n for n, k in KNOBS.items() if k.kind in (int, float) and k.max is not None])
def test_the_tables_range_is_exactly_what_validation_accepts(name):
    k = KNOBS[name]
    for ok in (k.min, k.max):
        RunConfig(**{name: k.kind(ok)}).validate()
    step = 1 if k.kind is int else max(abs(k.max), 1e-6) * 1e-6
    for bad in (k.min - step if k.min > 0 or k.kind is float else -1, k.max + step):
        with pytest.raises(ConfigError, match=k.noun):
            RunConfig(**{name: k.kind(bad)}).validate()


def test_the_issues_links_are_valid_configs():
    for q in ({"dropout": "0.95"}, {"alpha": "0.995", "activation": "leaky_relu"},
              {"optimizer": "sgd", "momentum": "0.99"}):
        RunConfig.from_query(q)


def test_text_parsing_follows_the_table():
    assert parse_text("lr", "auto") is None and parse_text("limit_train", "") is None
    assert parse_text("batch_norm", "yes") is True and parse_text("epochs", "12") == 12
    with pytest.raises(ConfigError, match="epochs"):
        parse_text("epochs", "2.5")
    assert RunConfig.from_query({"momentum": "0.5", "optimizer": "sgd"}).momentum == 0.5


def test_applies_knows_which_knobs_a_config_uses():
    assert not applies("alpha", RunConfig()) and applies("alpha", RunConfig(activation="leaky_relu"))
    assert applies("momentum", {"optimizer": "sgd"}) and not applies("momentum", {"optimizer": "adam"})
    assert not applies("batch_norm", RunConfig(arch="cnn")) and applies("filters", RunConfig(arch="cnn"))


# ---- cost caps -----------------------------------------------------------------------

def test_default_caps_let_every_course_experiment_through():
    for p in PRESETS.values():
        p.config.validate()
    RunConfig(arch="cnn", cnn_mode="corrected", epochs=200, batch_size=1024).validate()


@pytest.mark.parametrize("cfg, env", [
    (RunConfig(epochs=201), "XRAY_LAB_MAX_EPOCHS"),
    (RunConfig(batch_size=1025), "XRAY_LAB_MAX_BATCH"),
    (RunConfig(arch="cnn", filters=(2048,) * 5), "XRAY_LAB_MAX_PARAMS"),
    (RunConfig(arch="cnn", filters=(64, 256, 256, 64, 64)), "XRAY_LAB_MAX_MACS"),  # 1.5 M params, 202 M MACs
])
def test_caps_refuse_with_one_line_naming_the_limit_and_what_to_do(cfg, env):
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and env in msg and "limit of" in msg and ": use " in msg
    cfg.validate(caps=False)  # the knob's own range is fine: only the server's cap refuses it


def test_a_teacher_sets_the_caps_by_environment(monkeypatch):
    monkeypatch.setenv("XRAY_LAB_MAX_EPOCHS", "10")
    monkeypatch.setenv("XRAY_LAB_MAX_PARAMS", "1_000_000")
    assert cap("epochs") == 10
    with pytest.raises(ConfigError, match="10"):
        RunConfig(epochs=11).validate()
    RunConfig(epochs=10).validate()
    with pytest.raises(ConfigError, match="XRAY_LAB_MAX_PARAMS"):
        RunConfig(arch="cnn", epochs=5).validate()  # the course CNN: 3.27 M
    monkeypatch.setenv("XRAY_LAB_MAX_EPOCHS", "5000")
    RunConfig(epochs=5000).validate()
    monkeypatch.setenv("XRAY_LAB_MAX_BATCH", "lots")
    with pytest.raises(ConfigError, match="XRAY_LAB_MAX_BATCH"):
        RunConfig().validate()
    assert set(CAPS) == {"params", "multiply_adds", "film_multiply_adds", "epochs", "batch_size"}


def test_a_huge_model_is_refused_without_importing_keras():
    import subprocess
    import sys
    code = ("import sys\nfrom xray_core.config import RunConfig\nfrom xray_core.errors import ConfigError\n"
            "try:\n    RunConfig(arch='cnn', filters=(2048,) * 5).validate()\nexcept ConfigError as e:\n"
            "    print(e)\nprint('keras' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=__file__.rsplit("/tests/", 1)[0]).stdout.splitlines()
    assert "XRAY_LAB_MAX_PARAMS" in out[0] and out[1] == "False"


# ---- labels --------------------------------------------------------------------------

def test_defaults_are_p1_task1_and_inapplicable_knobs_do_not_matter():
    assert matching_preset(RunConfig()).name == "p1-task1"
    assert matching_preset(RunConfig(alpha=0.3, momentum=0.5, filters=(8, 8, 8, 8, 8))).name == "p1-task1"
    assert matching_preset(RunConfig(arch="cnn", lr=1e-5, l2=1e-2, dropout=0.3)).name == "p2-task1"
    assert matching_preset(RunConfig(batch_norm=True)) is None


@pytest.mark.parametrize("cfg, label", [
    (RunConfig(), "p1-task1"),
    (get_preset("p1-task5").config.replace(epochs=10), "p1-task5, 10 epochs"),
    (get_preset("p1-task5").config.replace(epochs=1, limit_train=256), "p1-task5, 1 epoch, 256 patches"),
    (RunConfig(batch_size=16, seed=4), "p1-task1, batch 16"),
    (RunConfig(arch="cnn", cnn_mode="corrected"), "p2-task1, corrected"),
    (get_preset("p2-task2").config.replace(lr=1e-3), "p2-task2, lr 0.001"),
    (RunConfig(optimizer="sgd", momentum=0.5), "p1-task1, SGD + momentum, momentum 0.5"),
    # the closest preset of the same architecture, even when another arch's differs in fewer knobs
    (RunConfig(arch="segment", epochs=1, input_size=32, depth=2, base_filters=4),
     "p3-unet-small, no batch norm, 1 epoch, batch 64, +4 more"),
])
def test_describe_names_the_closest_preset_and_what_changed(cfg, label):
    assert describe(cfg) == label


def test_caps_guard_the_edges_not_the_engine():
    """Sidebar, links and CLI validate with caps; resolved() and stored records check only the table."""
    big = RunConfig(epochs=500)
    assert big.resolved().epochs == 500 and RunConfig.from_dict(big.to_dict()) == big
    with pytest.raises(ConfigError, match="XRAY_LAB_MAX_EPOCHS"):
        RunConfig.from_query({"epochs": "500"})
    with pytest.raises(ConfigError, match="epochs"):
        RunConfig(epochs=0).resolved()


# ---- the knob table is the only place (issue 22, item 3) ------------------------------

def test_a_preset_ignores_exactly_the_knobs_flagged_preset_free():
    from xray_core import presets
    from xray_core.config import PRESET_FREE_KNOBS
    assert presets.IGNORED == PRESET_FREE_KNOBS == tuple(n for n, k in KNOBS.items() if k.preset_free)
    assert set(PRESET_FREE_KNOBS) == {"seed", "data", "limit_train"}
    p = PRESETS["p1-task2"]
    for name in PRESET_FREE_KNOBS:   # any value of a free knob: still the preset
        assert matching_preset(p.config.replace(**{name: _other_value(name)})) is p, name
    for name in ("epochs", "batch_size", "lr"):   # not free: an edit
        assert matching_preset(p.config.replace(**{name: _other_value(name)})) is not p, name


def test_the_cost_caps_read_only_the_knobs_flagged_step_cost():
    from xray_core.config import STEP_COST_KNOBS, step_cost_view
    from xray_core.cost import cost
    assert set(vars(step_cost_view(RunConfig()))) == set(STEP_COST_KNOBS)
    assert {"arch", "cnn_mode", "filters", "padding", "batch_norm"} <= set(STEP_COST_KNOBS)
    assert not {"lr", "epochs", "seed", "data", "dropout", "head_dropout"} & set(STEP_COST_KNOBS)
    for cfg in [p.config for p in PRESETS.values()] + [RunConfig(arch="cnn", padding="valid")]:
        assert cost(step_cost_view(cfg)) == cost(cfg)   # an unflagged knob read by cost() would raise here


def test_the_cost_caps_follow_a_step_cost_knob_through_validation(monkeypatch):
    monkeypatch.setenv("XRAY_LAB_MAX_PARAMS", "2000000")
    RunConfig(arch="cnn", filters=(32, 64, 64, 128, 128)).validate()
    with pytest.raises(ConfigError, match="parameters"):
        RunConfig(arch="cnn").validate()


def test_head_dropout_applies_only_to_a_corrected_cnn():
    assert applies("head_dropout", RunConfig(arch="cnn", cnn_mode="corrected"))
    assert not applies("head_dropout", RunConfig(arch="cnn"))
    assert not applies("head_dropout", RunConfig(arch="fc", cnn_mode="corrected"))   # the chain: cnn_mode needs a CNN
    assert not applies("head_dropout", {"arch": "fc", "cnn_mode": "corrected"})
    assert applies("head_dropout", {"arch": "cnn", "cnn_mode": "corrected"})
    assert RunConfig.from_dict({"arch": "cnn", "cnn_mode": "corrected"}).head_dropout == 0.3  # records from before it


def test_the_runs_table_columns_are_the_knobs_flagged_column():
    from xray_core.config import COLUMN_KNOBS, column_cells
    assert COLUMN_KNOBS == tuple(n for n, k in KNOBS.items() if k.column)
    fc = column_cells(RunConfig(batch_norm=True).resolved().to_dict())
    assert list(fc) == [KNOBS[n].column.title for n in COLUMN_KNOBS]
    assert fc["arch"] == "fc" and fc["bn"] is True and fc["filters"] == "" and fc["mode"] == "" and fc["lr"] == 1e-5
    cnn = column_cells(RunConfig(arch="cnn").resolved().to_dict())
    assert cnn["filters"] == "64,128,128,256,256" and cnn["mode"] == "seed" and cnn["bn"] is None
    assert column_cells({"arch": "cnn", "cnn_mode": "corrected"})["mode"] == "corrected"   # a record's partial config


def test_a_knob_flagged_column_becomes_a_runs_table_column(monkeypatch):
    import dataclasses
    from xray_core import config
    monkeypatch.setitem(config.KNOBS, "optimizer", dataclasses.replace(KNOBS["optimizer"],
                                                                       column=config.Column("optimizer", 70)))
    assert config.column_cells(RunConfig(optimizer="sgd").to_dict())["optimizer"] == "sgd"


def test_the_map_knobs_are_one_table_with_the_engines_range():
    from xray_core.config import MAP_KNOBS, MapConfig, map_default
    from xray_core.maps.inference import MAX_STRIDE, METHODS
    s, m = MAP_KNOBS["stride"], MAP_KNOBS["method"]
    assert (s.min, s.max, map_default("stride")) == (1, MAX_STRIDE, 4) and s.label and s.help
    assert set(m.choices) <= set(METHODS) and map_default("method") in m.choices and m.help
    assert set(MAP_KNOBS) == {"stride", "method"} and MapConfig().stride == 4
