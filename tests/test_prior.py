"""The prior map (per-pixel label frequencies), map scores, and "use position"."""
import numpy as np
import pytest

from xray_core.maps import prior as P

from .conftest import SHARED_DATA


def _maps():
    """4 label maps 4x4: pixel (0, 0) is lung in 3 of them, the rest as drawn."""
    m = np.zeros((4, 4, 4), np.uint8)
    m[:, 2:, :] = 2
    m[:, 3, 1:3] = 3
    m[:3, 0, 0] = 2
    m[0, 0, 3] = 1
    return m


def test_the_prior_is_each_pixels_label_frequencies_and_its_map_the_most_frequent():
    pr = P.build_prior(_maps(), smoothing=0)
    assert pr.freq.shape == (4, 4, 4) and pr.n_maps == 4
    assert np.allclose(pr.freq.sum(-1), 1)
    assert np.allclose(pr.freq[0, 0], [0.25, 0, 0.75, 0])
    assert np.allclose(pr.freq[0, 3], [0.75, 0.25, 0, 0])
    assert np.allclose(pr.freq[3, 1], [0, 0, 0, 1])
    labels = pr.labels()
    assert labels.dtype == np.uint8
    assert labels[0, 0] == 2 and labels[0, 3] == 0 and labels[3, 1] == 3 and labels[2, 0] == 2
    counts = np.bincount(_maps().ravel(), minlength=4)
    assert np.allclose(pr.class_share, counts / counts.sum())


def test_smoothing_leaves_no_class_impossible_and_keeps_the_majority():
    raw, smooth = P.build_prior(_maps(), smoothing=0), P.build_prior(_maps(), smoothing=0.5)
    assert smooth.freq.min() > 0 and np.allclose(smooth.freq.sum(-1), 1)
    assert np.allclose(smooth.freq[0, 0], np.array([1, 0, 3, 0]) / 4 * 4 / 6 + 0.5 / 6)
    assert np.array_equal(raw.labels(), smooth.labels())


def test_the_prior_resizes_to_any_film_size():
    pr = P.build_prior(_maps(), smoothing=0)
    up = pr.probabilities(8)
    assert up.shape == (8, 8, 4) and np.allclose(up.sum(-1), 1, atol=1e-6)
    # enlarging a map that is constant over 2x2 blocks keeps each block's majority
    blocky = np.repeat(np.repeat(np.array([[0, 2], [3, 1]], np.uint8), 2, 0), 2, 1)[None]
    pb = P.build_prior(np.repeat(blocky, 3, 0), smoothing=0)
    assert np.array_equal(pb.labels(8)[::4, ::4], np.array([[0, 2], [3, 1]]))
    assert np.array_equal(pb.labels(8), np.repeat(np.repeat(np.array([[0, 2], [3, 1]]), 4, 0), 4, 1))
    # shrinking by 2 averages each 2x2 block
    down = pr.probabilities(2)
    assert np.allclose(down[0, 0], pr.freq[:2, :2].mean((0, 1)))
    assert np.allclose(down[1, 1], pr.freq[2:, 2:].mean((0, 1)))
    assert pr.labels((2, 4)).shape == (2, 4)


def test_pixel_accuracy_and_dice_by_hand():
    truth = np.array([[0, 0, 2, 2],
                      [0, 1, 2, 2],
                      [0, 0, 3, 3],
                      [0, 0, 3, 3]], np.uint8)
    pred = truth.copy()
    pred[1, 1] = 0          # the clavicle missed
    pred[2, 2] = 2          # one heart pixel called lung
    assert P.pixel_accuracy(pred, truth) == pytest.approx(14 / 16)
    d = P.dice(pred, truth)
    assert d[0] == pytest.approx(2 * 7 / (7 + 8))
    assert d[1] == pytest.approx(0.0)
    assert d[2] == pytest.approx(2 * 4 / (4 + 5))
    assert d[3] == pytest.approx(2 * 3 / (4 + 3))
    assert np.isnan(P.dice(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))[1])   # in neither
    assert P.dice(truth, truth) == pytest.approx([1, 1, 1, 1])


def test_score_maps_averages_dice_over_maps_and_leaves_absent_classes_out():
    a = np.array([[0, 1], [2, 3]], np.uint8)
    b = np.array([[0, 0], [2, 2]], np.uint8)     # no clavicle, no heart in truth or prediction
    preds = np.stack([a, b])
    truths = np.stack([a, np.array([[0, 0], [2, 0]], np.uint8)])
    s = P.score_maps(preds, truths)
    assert s["maps"] == 2
    assert s["pixel_accuracy"] == pytest.approx(7 / 8)
    assert s["dice"]["clavicle"] == pytest.approx(1.0)       # map 2 has none: left out, not 0
    assert s["dice"]["lung"] == pytest.approx((1 + 2 / 3) / 2)
    assert s["dice"]["background"] == pytest.approx((1 + 2 * 2 / 5) / 2)
    assert s["dice_pooled"]["lung"] == pytest.approx(2 * 2 / (2 + 3))
    conf = P.confusion(preds, truths)
    assert conf.shape == (2, 4, 4) and conf.sum() == 8 and conf[1, 0, 2] == 1
    with pytest.raises(ValueError):
        P.score_maps(preds, truths[:, :1])


def test_use_position_is_model_times_prior_over_class_share():
    pr = P.build_prior(_maps(), smoothing=0.5)
    q = pr.probabilities()
    flat = np.full((4, 4, 4), 0.25, np.float32)
    # a model that cannot tell: the prior decides
    assert np.allclose(P.use_position(flat, pr), q, atol=1e-6)
    # a sure model where the prior is flat keeps its mind
    sure = np.zeros((4, 4, 4), np.float32)
    sure[..., 1] = 1.0
    assert (P.use_position(sure, pr).argmax(-1) == 1).all()
    # by hand at one pixel, with the class shares the model was trained on
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), (4, 4)).astype(np.float32)
    share = np.array([0.6, 0.02, 0.29, 0.09])
    out = P.use_position(probs, pr, class_share=share)
    want = probs[0, 0] * q[0, 0] / share
    assert np.allclose(out[0, 0], want / want.sum(), atol=1e-6)
    assert np.allclose(out.sum(-1), 1, atol=1e-6) and out.dtype == np.float32
    # probabilities of another film size use the prior resized to it; batches work too
    big = P.use_position(np.full((2, 8, 8, 4), 0.25), pr)
    assert big.shape == (2, 8, 8, 4) and np.allclose(big[1], pr.probabilities(8), atol=1e-6)
    with pytest.raises(ValueError):
        P.use_position(np.zeros((4, 4, 3)), pr)


def test_building_the_prior_refuses_bad_label_maps():
    with pytest.raises(ValueError):
        P.build_prior(np.full((2, 4, 4), 4, np.uint8))
    with pytest.raises(ValueError):
        P.build_prior(np.zeros((2, 4, 4), np.float32))


@pytest.mark.slow
def test_the_prior_of_the_real_training_films_scores_about_0_87_on_the_test_films():
    films = SHARED_DATA / "jsrt_films"
    if not (films / "train").is_dir():
        pytest.skip(f"{films} is not present on this machine")
    from xray_core.data.films import load_films_folder
    ds = load_films_folder(films)
    assert [len(ds.split(s)) for s in ("train", "validation", "test")] == [150, 30, 37]
    pr = P.build_prior(ds.split("train").y)
    test = ds.split("test").y
    s = P.score_maps(np.broadcast_to(pr.labels(), test.shape), test)
    assert s["pixel_accuracy"] == pytest.approx(0.870, abs=0.005)     # issue 24: 0.870
    assert s["dice"]["lung"] == pytest.approx(0.82, abs=0.02)
    assert s["dice"]["clavicle"] < 0.4                                # position alone cannot find it
