"""Issue 24, course Part 3: arch `segment` (a U-Net on whole films) in the knob table, the
models, the presets, training through the one run path, the CLI. Small on purpose: tiny
films, 1-2 epochs, inputs of 32/64 px (the machine is shared)."""
import json

import numpy as np
import pytest

from xray_core import CLASSES
from xray_core.config import KNOBS, RunConfig, applies, cap, step_cost_parts, step_cost_view
from xray_core.cost import cost
from xray_core.errors import ConfigError


# ---- the knob table ------------------------------------------------------------------

def test_segment_is_an_architecture_with_its_own_knobs_and_defaults():
    assert "segment" in KNOBS["arch"].choices
    cfg = RunConfig(arch="segment").validate().resolved()
    assert (cfg.input_size, cfg.depth, cfg.base_filters, cfg.loss) == (128, 4, 16, "both")
    assert cfg.lr == KNOBS["lr"].per_arch["segment"] and cfg.dropout == 0.0 and cfg.l2 == 0.0
    for name in ("input_size", "depth", "base_filters", "loss", "augment", "batch_norm"):
        assert applies(name, cfg), name
        assert not applies(name, RunConfig(arch="cnn")), name
    assert applies("batch_norm", RunConfig(arch="fc")) and not applies("filters", cfg)
    # the U-Net's shape knobs change a step's cost: they are in the estimate's key
    parts = step_cost_parts(cfg.replace(input_size=64, depth=3, base_filters=8))
    assert {"segment", "in64", "d3", "f8"} <= set(parts)
    # and the fc / cnn keys on disk stay what they were
    assert step_cost_parts(RunConfig().resolved()) == ["fc", "relu", "bs64", "adam", "nobn"]


@pytest.mark.parametrize("changes, says", [
    (dict(input_size=100), "must divide the film size 256"),
    (dict(input_size=32, depth=6), "cannot be halved 6 times"),
    (dict(input_size=8), "input size must be a whole number from 16 to 256"),
    (dict(depth=0), "depth must be a whole number from 1 to 6"),
    (dict(base_filters=200), "base filters must be a whole number from 1 to 128"),
    (dict(loss="focal"), "unknown loss 'focal'"),
    (dict(base_filters=64), "XRAY_LAB_MAX_PARAMS"),
])
def test_bad_segment_knobs_are_one_line_config_errors(changes, says):
    with pytest.raises(ConfigError, match=says) as e:
        RunConfig(arch="segment", **changes).validate()
    assert "\n" not in str(e.value)


def test_the_film_cost_cap_counts_the_unet_by_arithmetic(monkeypatch):
    from xray_core import segmentation
    from xray_core.presets import get_preset
    big, small = get_preset("p3-unet").config, get_preset("p3-unet-small").config
    c = cost(step_cost_view(big))
    assert c == {"params": segmentation.unet_cost(128, 4, 16, True)["params"],
                 "film_multiply_adds": segmentation.unet_cost(128, 4, 16, True)["multiply_adds"]}
    assert cap("film_multiply_adds") == 3_200_000_000
    big.validate()
    RunConfig(arch="segment", input_size=256).validate()             # 3.0 G: four times p3-unet, allowed
    monkeypatch.setenv("XRAY_LAB_MAX_FILM_MACS", "500_000_000")
    with pytest.raises(ConfigError, match="multiply-adds per film.*XRAY_LAB_MAX_FILM_MACS"):
        big.validate()                                               # 755 M
    small.validate()                                                 # 189 M
    RunConfig(arch="cnn").validate()                                 # the patch cap is another one


# ---- models and presets ------------------------------------------------------------

def test_build_model_makes_the_named_unet_and_the_presets_are_part_3():
    from xray_core.models import build_model, layer_table
    from xray_core.presets import PRESETS, matching_preset
    from xray_core import segmentation
    for name in ("p3-unet", "p3-unet-small"):
        p = PRESETS[name]
        assert p.config.arch == "segment" and p.config.batch_norm and p.config.augment
        assert "Part 3" in p.title and matching_preset(p.config.replace(seed=3)).name == name
    cfg = RunConfig(arch="segment", input_size=32, depth=2, base_filters=4, batch_norm=True,
                    activation="leaky_relu", dropout=0.2, epochs=2, batch_size=2)
    model = build_model(cfg, steps_per_epoch=3)
    names = [l.name for l in model.layers]
    assert names == segmentation.layer_names(depth=2, batch_norm=True, dropout=0.2, activation="leaky_relu")
    assert "enc1_leaky1" in names and "bottleneck_drop" in names and "skip1" in names
    assert model.output_shape == (None, 256, 256, 4)
    assert model.count_params() == cost(step_cost_view(cfg))["params"]
    assert model.loss.__name__ == "crossentropy_dice_loss"
    # the same seed builds the same weights; another seed other ones
    same = build_model(cfg)
    other = build_model(cfg.replace(seed=1))
    w, w2, w3 = (m.get_layer("enc1_conv1").get_weights()[0] for m in (model, same, other))
    assert np.array_equal(w, w2) and not np.array_equal(w, w3)
    table = layer_table(cfg)
    assert [r["name"] for r in table["layers"]] == names


def test_warmup_then_cosine_climbs_from_a_tenth_then_decays_to_zero():
    from xray_core.models import make_optimizer
    cfg = RunConfig(arch="segment", lr=3e-3, epochs=20, lr_schedule="warmup_cosine").resolved()
    sched = make_optimizer(cfg, steps_per_epoch=19)._learning_rate   # 380 steps, warm-up 38
    lr = lambda step: float(sched(step))  # noqa: E731
    assert lr(0) == pytest.approx(3e-4, rel=1e-3)
    assert lr(19) == pytest.approx(3e-4 + (3e-3 - 3e-4) * 19 / 38, rel=1e-3)
    assert lr(38) == pytest.approx(3e-3, rel=1e-3)
    assert lr(200) < 3e-3 and lr(380) == pytest.approx(0.0, abs=1e-9)


def test_summary_arch_segment_prints_the_layer_table(capsys):
    from xray_core.cli.main import main
    assert main(["summary", "--arch", "segment", "--input-size", "64", "--depth", "3", "--batch-norm"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in out[1:-1]}
    assert rows["film"] == "InputLayer" and rows["shrink"] == "AveragePooling2D"
    assert rows["bottleneck_conv1"] == "Conv2D" and rows["up3"] == "Conv2DTranspose"
    assert rows["skip1"] == "Concatenate" and rows["grow"] == "UpSampling2D" and rows["enc1_bn1"] == "BatchNormalization"
    assert "pool4" not in rows
    assert out[-1].startswith("total params:")
    assert main(["summary", "--arch", "segment", "--input-size", "100"]) == 1
    assert "must divide the film size" in capsys.readouterr().err
