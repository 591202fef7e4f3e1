"""The U-Net builder: readable layer names, knobs, losses, its cost by arithmetic, and that it learns."""
import numpy as np
import pytest

from xray_core import segmentation as S
from xray_core.errors import ConfigError


def _macs_from_keras(model) -> int:
    """Multiply-adds of a built model, layer by layer from Keras' own shapes and weights
    (a bias is one multiply-add per output, as in xray_core/cost.py)."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "Conv2DTranspose"):
            kernel = layer.kernel.shape            # (kh, kw, in, out) / (kh, kw, out, in)
            _, h, w, c = layer.output.shape
            cin = kernel[2] if kind == "Conv2D" else kernel[3]
            taps = kernel[0] * kernel[1] * cin
            if kind == "Conv2DTranspose":      # stride = kernel: each output pixel gets one tap
                taps = cin
            total += (taps + (1 if layer.use_bias else 0)) * c * h * w
    return int(total)


@pytest.mark.parametrize("knobs", [
    dict(input_size=64, depth=2, base_filters=4, batch_norm=True, dropout=0.0, film_size=128),
    dict(input_size=32, depth=3, base_filters=8, batch_norm=False, dropout=0.3, film_size=32),
    dict(input_size=128, depth=4, base_filters=16, batch_norm=True, dropout=0.1, film_size=256),
])
def test_the_cost_by_arithmetic_equals_keras_count(knobs):
    model = S.build_unet(**knobs)
    cost = S.unet_cost(**knobs)
    assert cost["params"] == model.count_params()
    assert cost["multiply_adds"] == _macs_from_keras(model)


def test_the_default_unet_reads_as_a_u_with_named_layers():
    model = S.build_unet()                     # 256x256 films, worked on at 128x128, 4 levels, 16 filters
    names = [l.name for l in model.layers]
    assert names == S.layer_names(depth=4, batch_norm=True, dropout=0.0)
    for want in ("film", "shrink", "enc1_conv1", "enc1_bn1", "enc1_relu1", "pool1", "enc4_conv2", "pool4",
                 "bottleneck_conv1", "up4", "skip4", "dec4_conv1", "up1", "skip1", "dec1_conv2", "head",
                 "grow", "probabilities"):
        assert want in names, want
    assert model.input_shape == (None, 256, 256, 1) and model.output_shape == (None, 256, 256, 4)
    assert model.get_layer("shrink").output.shape[1:3] == (128, 128)
    assert model.get_layer("bottleneck_conv1").output.shape[1:] == (8, 8, 256)
    assert model.get_layer("enc2_conv1").output.shape[-1] == 32
    # dec{i} works at enc{i}'s resolution and joins its output
    assert model.get_layer("dec2_conv1").output.shape[1:] == model.get_layer("enc2_conv2").output.shape[1:]
    assert model.get_layer("skip2").output.shape[-1] == 2 * 32
    assert S.unet_cost()["params"] == model.count_params() == 1_945_284


def test_knobs_change_the_network_and_bad_ones_are_one_line_config_errors():
    small = S.build_unet(input_size=64, depth=3, base_filters=8, batch_norm=False, dropout=0.2, film_size=128)
    names = [l.name for l in small.layers]
    assert "bottleneck_drop" in names and not any("_bn" in n for n in names) and "pool4" not in names
    assert small.output_shape == (None, 128, 128, 4)
    same = S.build_unet(input_size=32, depth=2, base_filters=4, film_size=32)
    assert "shrink" not in [l.name for l in same.layers] and "grow" not in [l.name for l in same.layers]
    for bad, words in [(dict(input_size=100), "divide"), (dict(input_size=64, depth=7), "depth"),
                       (dict(input_size=48, depth=5, film_size=96), "halved"), (dict(base_filters=0), "base filters"),
                       (dict(dropout=1.5), "dropout"), (dict(depth=2.5), "depth")]:
        with pytest.raises(ConfigError) as e:
            S.unet_cost(**bad)
        assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError):
        S.segmentation_loss("focal")


def test_the_losses_agree_with_their_definitions():
    import keras
    y = np.array([[[0, 1], [2, 3]]], np.int32)
    perfect = keras.ops.convert_to_tensor(np.eye(4, dtype=np.float32)[y] * 0.997 + 0.001)
    flat = keras.ops.convert_to_tensor(np.full((1, 2, 2, 4), 0.25, np.float32))
    ce, dice, both = (S.segmentation_loss(k) for k in S.LOSSES)
    assert float(ce(y, flat)) == pytest.approx(np.log(4), rel=1e-5)
    assert float(ce(y, perfect)) < 0.01
    assert float(dice(y, perfect)) < 0.01
    # flat 0.25 everywhere: per class inter 0.25, |truth| 1, |pred| 1 -> dice (0.5 + 1) / (2 + 1)
    assert float(dice(y, flat)) == pytest.approx(1 - 1.5 / 3, rel=1e-5)
    assert float(both(y, flat)) == pytest.approx(np.log(4) + 0.5, rel=1e-5)


def _toy_films(n, side, rng):
    """Films with a bright disc (class 2) and a dark bar (class 3) on a noisy background."""
    yy, xx = np.mgrid[:side, :side]
    x = np.empty((n, side, side, 1), np.float32)
    y = np.zeros((n, side, side), np.uint8)
    for i in range(n):
        cy, cx, r = rng.integers(8, side - 8, 2).tolist() + [rng.integers(4, 7)]
        y[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 2
        top = rng.integers(0, side - 4)
        y[i, top:top + 3, :] = np.where(y[i, top:top + 3, :] == 0, 3, y[i, top:top + 3, :])
        x[i, ..., 0] = np.array([0.4, 0.5, 0.9, 0.05])[y[i]] + rng.normal(0, 0.05, (side, side))
    return np.clip(x, 0, 1), y


def test_a_tiny_unet_learns_a_trivial_segmentation():
    import keras
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = _toy_films(48, 32, rng)
    xt, yt = _toy_films(8, 32, rng)
    model = S.build_unet(input_size=32, depth=2, base_filters=8, film_size=32, seed=0)
    S.compile_unet(model, "both", lr=1e-2)
    before = S.predict_maps(model, xt)
    model.fit(x, y, batch_size=8, epochs=12, verbose=0)
    maps = S.predict_maps(model, xt)
    assert maps.shape == (8, 32, 32) and maps.dtype == np.uint8
    from xray_core.maps.prior import score_maps
    s = score_maps(maps, yt)
    assert s["pixel_accuracy"] > 0.95, s
    assert s["dice"]["lung"] > 0.85 and s["dice"]["heart"] > 0.8, s
    assert score_maps(before, yt)["pixel_accuracy"] < s["pixel_accuracy"]


def test_a_map_is_made_at_the_film_size_from_the_shrunk_input():
    model = S.build_unet(input_size=32, depth=2, base_filters=4, film_size=64, seed=1)
    films = np.random.default_rng(0).random((3, 64, 64, 1)).astype(np.float32)
    p = np.asarray(model(films, training=False))
    assert p.shape == (3, 64, 64, 4) and np.allclose(p.sum(-1), 1, atol=1e-5)
    assert S.predict_maps(model, films[..., 0], batch_size=2).shape == (3, 64, 64)
