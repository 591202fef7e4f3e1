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
        assert p.config.arch == "segment" and p.config.batch_norm
        assert "Part 3" in p.title and matching_preset(p.config.replace(seed=3)).name == name
    # the full one augments; the class's one-minute one does not (9 epochs: it did not pay off)
    assert PRESETS["p3-unet"].config.augment and not PRESETS["p3-unet-small"].config.augment
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


# ---- data and training ---------------------------------------------------------------------

from PIL import Image  # noqa: E402

from .fixtures_data import tiny_course  # noqa: E402

TINY = ["--arch", "segment", "--input-size", "32", "--depth", "2", "--base-filters", "4", "--batch-norm",
        "--epochs", "2", "--batch-size", "4", "--lr", "3e-3"]


def _write_films(root, sizes=(6, 2, 3), seed=0):
    """Phantom films and their label maps in the jsrt_films layout (PNG, 256x256)."""
    from xray_core.data.films import phantom_films
    from xray_core.data.preprocess import to_u8
    ds = phantom_films(*sizes, seed=seed, cache=False)
    for split, sp in ds.splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for x, y, name in zip(sp.x, sp.y, sp.names):
            Image.fromarray(to_u8(x[..., 0])).save(root / split / f"{name}.png")
            Image.fromarray(y).save(root / split / f"{name}_labels.png")
    return root


@pytest.fixture(scope="module")
def films_dir(tmp_path_factory):
    return _write_films(tmp_path_factory.mktemp("films") / "jsrt_films")


@pytest.fixture(scope="module")
def trained(films_dir, tmp_path_factory):
    """One tiny segmentation run through the CLI (the contract: train --data DIR --out --json)."""
    import os
    from xray_core.cli.main import main
    out = tmp_path_factory.mktemp("seg-run")
    home = out / "home"
    old = os.environ.get("XRAY_LAB_HOME")
    os.environ["XRAY_LAB_HOME"] = str(home)
    try:
        rc = main(["train", *TINY, "--augment", "--data", str(films_dir), "--out", str(out / "run"),
                   "--json", str(out / "run.json"), "--workspace", "seg"])
    finally:
        if old is None:
            os.environ.pop("XRAY_LAB_HOME", None)
        else:
            os.environ["XRAY_LAB_HOME"] = old
    assert rc == 0
    return {"dir": out, "home": home, "record": json.loads((out / "run.json").read_text()),
            "model": out / "run" / "model.keras"}


def test_a_segmentation_run_records_pixel_accuracy_dice_and_the_prior(trained, films_dir):
    from xray_core.data.films import load_films
    from xray_core.maps.prior import build_prior, score_maps
    rec = trained["record"]
    assert rec["state"] == "done" and rec["config"]["arch"] == "segment" and rec["config"]["augment"]
    h = rec["history"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", *(f"val_dice_{c}" for c in CLASSES)):
        assert len(h[key]) == 2, key
        assert all(np.isfinite(v) for v in h[key])
    assert all(0 <= v <= 1 for k in h if k != "loss" and k != "val_loss" for v in h[k])
    t = rec["test"]
    assert t["films"] == 3 and t["pixels"] == 3 * 256 * 256 and t["n"] == 3
    assert t["accuracy"] == t["pixel_accuracy"] and 0 <= t["accuracy"] <= 1 and t["loss"] > 0
    assert set(t["dice"]) == set(CLASSES) and np.array(t["confusion"]).sum() == 3 * 256 * 256
    assert t["map_ms_per_film"] > 0 and rec["timing"]["fit_seconds"] > 0
    # the prior's figures: the training films' most frequent label per pixel, on the test films
    ds = load_films(str(films_dir))
    prior = build_prior(ds.split("train").y).labels((256, 256))
    want = score_maps(np.broadcast_to(prior, ds.split("test").y.shape), ds.split("test").y)
    assert t["prior"]["pixel_accuracy"] == pytest.approx(want["pixel_accuracy"])
    assert t["prior"]["dice"]["lung"] == pytest.approx(want["dice"]["lung"])
    assert t["prior"]["training_films"] == 6
    # the model's own test maps give the recorded pixel accuracy
    from xray_core.maps.inference import load_model
    from xray_core.segmentation import predict_maps
    model = load_model(str(trained["model"]))
    maps = predict_maps(model, ds.split("test").x)
    assert float(np.mean(maps == ds.split("test").y)) == pytest.approx(t["pixel_accuracy"], abs=1e-6)
    assert rec["timing"]["estimate"]["source"] == "rough"


def test_the_run_store_keeps_the_dice_curves(trained, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_HOME", str(trained["home"]))
    from xray_core.runs.store import get_store
    stored = get_store().get(trained["record"]["run_id"])
    assert stored.history["val_dice_lung"] == pytest.approx(trained["record"]["history"]["val_dice_lung"])
    assert stored.test["accuracy"] == trained["record"]["test"]["accuracy"]


def test_classify_maps_a_film_with_the_segmentation_model_in_one_pass(trained, films_dir, tmp_path):
    from xray_core.cli.main import main
    from xray_core.maps.inference import load_model
    from xray_core.segmentation import predict_maps
    from xray_core.data.preprocess import from_u8
    films = sorted((films_dir / "test").glob("*[0-9].png"))
    patch = tmp_path / "patch.png"
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(patch)
    out = tmp_path / "c.json"
    rc = main(["classify", "--model", str(trained["model"]), *map(str, films), str(patch),
               "--map-dir", str(tmp_path / "maps"), "--json", str(out)])
    assert rc == 0
    recs = json.loads(out.read_text())
    model = load_model(str(trained["model"]))
    for r, f in zip(recs, films):
        assert r["ok"] and r["method"] == "segment" and r["map_seconds"] > 0
        assert r["map"] == str(tmp_path / "maps" / f.name) and r["overlay"].endswith(".overlay.png")
        assert abs(sum(r["shares"].values()) - 1) < 1e-6 and r["label"] in CLASSES
        written = np.asarray(Image.open(r["map"]))
        assert written.shape == (256, 256) and written.max() <= 3
        want = predict_maps(model, from_u8(np.asarray(Image.open(f)))[None, :, :, None])[0]
        assert np.array_equal(written, want)
        assert np.asarray(Image.open(r["overlay"])).shape == (256, 256, 3)
    bad = recs[-1]
    assert not bad["ok"] and "a patch" in bad["error"] and "\n" not in bad["error"]


def test_evaluate_on_films_reports_pixel_accuracy_dice_and_the_prior(trained, films_dir, tmp_path, capsys):
    from xray_core.cli.main import main
    out = tmp_path / "e.json"
    assert main(["evaluate", "--model", str(trained["model"]), "--data", str(films_dir), "--split", "test",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    t = trained["record"]["test"]
    assert res["films"] == 3 and res["pixel_accuracy"] == pytest.approx(t["pixel_accuracy"], abs=1e-6)
    assert res["dice"]["lung"] == pytest.approx(t["dice"]["lung"], abs=1e-6)
    assert res["prior"]["pixel_accuracy"] == pytest.approx(t["prior"]["pixel_accuracy"])
    printed = capsys.readouterr().out
    assert "pixel accuracy" in printed and "prior (image ignored)" in printed
    # a dataset with a test/ split alone: scores, and no prior (no training films) said in words
    import shutil
    only = tmp_path / "only_test"
    shutil.copytree(films_dir / "test", only / "test")
    assert main(["evaluate", "--model", str(trained["model"]), "--data", str(only),
                 "--split", "test", "--json", str(out)]) == 0
    alone = json.loads(out.read_text())
    assert alone["prior"] is None and "no prior" in alone["prior_note"]


def test_a_patch_model_is_scored_on_films_too(films_dir, tmp_path):
    """evaluate --data FILMS with a patch model: its anatomy maps against the label maps."""
    from xray_core.cli.main import main
    from xray_core.models import build_model
    model = build_model(RunConfig(arch="fc"))
    model.save(tmp_path / "fc.keras")
    out = tmp_path / "e.json"
    assert main(["evaluate", "--model", str(tmp_path / "fc.keras"), "--data", str(films_dir), "--split", "test",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert not res["segmentation_model"] and res["method"] == "patches" and 0 <= res["pixel_accuracy"] <= 1
    assert res["prior"]["pixel_accuracy"] > 0.5
    # with position: an untrained model's flat guesses times the prior land near the prior's own map
    assert res["position"]["pixel_accuracy"] > res["pixel_accuracy"] and set(res["position"]["dice"]) == \
        {"background", "clavicle", "lung", "heart"}


# ---- bad input: one line each ----------------------------------------------------------------

def _one_line(capsys, argv):
    from xray_core.cli.main import main
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_bad_films_and_the_wrong_kind_of_data_are_one_line_each(films_dir, tmp_path, capsys):
    base = ["train", *TINY, "--json", str(tmp_path / "never.json"), "--data"]
    # a film without its label map
    d = _copy(films_dir, tmp_path / "nolabels")
    victim = sorted((d / "train").glob("*_labels.png"))[0]
    victim.unlink()
    assert "film without its label map" in _one_line(capsys, base + [str(d)])
    # no label maps at all
    d = _copy(films_dir, tmp_path / "none")
    for f in d.rglob("*_labels.png"):
        f.unlink()
    assert "no label maps" in _one_line(capsys, base + [str(d)])
    # a label map of another size than its film
    d = _copy(films_dir, tmp_path / "size")
    lab = sorted((d / "train").glob("*_labels.png"))[0]
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(lab)
    assert "same size" in _one_line(capsys, base + [str(d)])
    # values outside 0..3 (a 0/255 mask)
    d = _copy(films_dir, tmp_path / "values")
    lab = sorted((d / "validation").glob("*_labels.png"))[0]
    a = np.asarray(Image.open(lab)).copy()
    a[a == 2] = 255
    Image.fromarray(a).save(lab)
    assert "outside 0..3" in _one_line(capsys, base + [str(d)])
    # patches to a segmentation run, films to a patch run
    patches = tiny_course(tmp_path / "patches")
    assert "a patch dataset" in _one_line(capsys, base + [str(patches)])
    assert "whole films with label maps" in _one_line(
        capsys, ["train", "--preset", "p1-task1", "--epochs", "1", "--data", str(films_dir)])
    assert not (tmp_path / "never.json").exists()


def test_a_job_handed_the_wrong_kind_of_dataset_fails_in_one_line(films_dir):
    from xray_core.data.films import load_films
    from xray_core.data.load import load_dataset
    from xray_core.train.job import FAILED, TrainingJob
    films = load_films(str(films_dir))
    job = TrainingJob(RunConfig(arch="fc", epochs=1), films).run()
    snap = job.snapshot()
    assert snap.state == FAILED and "whole films" in snap.error and "\n" not in snap.error
    job = TrainingJob(RunConfig(arch="segment", input_size=32, depth=2, base_filters=4, epochs=1),
                      load_dataset("phantom")).run()
    snap = job.snapshot()
    assert snap.state == FAILED and "patch dataset" in snap.error and "\n" not in snap.error


# ---- augmentation, the model check, estimates ------------------------------------------------

def test_augmentation_moves_film_and_label_map_together_and_repeats_by_seed():
    from xray_core.train.batches import augment_films
    rng = np.random.default_rng(0)
    y = np.zeros((2, 64, 64), np.int32)
    y[:, 10:40, 8:30], y[:, 20:50, 35:60], y[:, 5:12, :] = 2, 3, 1
    x = (y / 3.0).astype(np.float32)[..., None]        # the film's grey level says its label
    xa, ya = augment_films(x, y, np.array([3, 4]))
    xa, ya = np.asarray(xa), np.asarray(ya)
    assert ya.dtype == np.int32 and set(np.unique(ya)) <= {0, 1, 2, 3}
    assert not np.array_equal(ya, y)                    # it did move
    # the same warp moved both: away from label edges the film still says the label (tone changes
    # keep the order of the grey levels)
    order = np.argsort([xa[ya == c].mean() for c in range(4)])
    assert list(order) == [0, 1, 2, 3]
    again = np.asarray(augment_films(x, y, np.array([3, 4]))[1])
    other = np.asarray(augment_films(x, y, np.array([5, 6]))[1])
    assert np.array_equal(again, ya) and not np.array_equal(other, ya)
    del rng


@pytest.mark.parametrize("n,batch", [(10, 4), (3, 8), (8, 4)])
def test_film_batches_all_have_one_shape_and_show_every_film_each_epoch(n, batch):
    """One shape per batch: the U-Net's XLA-compiled step would compile again (~10 s) for a
    smaller last batch; the last batch is topped up from the epoch's own order instead."""
    from xray_core.data.films import FilmSplit
    from xray_core.train.batches import film_batches
    x = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 4, 4, 1), np.float32)
    split = FilmSplit(x=x, y=np.zeros((n, 4, 4), np.uint8), names=[f"f{i}" for i in range(n)])
    ds = film_batches(split, batch, seed=1)
    assert ds.cardinality().numpy() == -(-n // batch)
    # autotuning off: dropping an epoch's iterator otherwise waited ~10 s for its threads
    assert ds.options().autotune.enabled is False
    it = iter(ds.repeat(2))
    for _ in range(2):
        seen = [np.asarray(next(it)[0]) for _ in range(-(-n // batch))]
        assert {b.shape[0] for b in seen} == {batch}
        ids = np.concatenate([b[:, 0, 0, 0] for b in seen]).astype(int)
        assert set(ids) == set(range(n))                 # every film, every epoch
        assert len(ids) - len(set(ids)) == -(-n // batch) * batch - n   # only the top-up repeats


def test_modelcheck_accepts_the_unet_and_counts_its_cost(tmp_path, monkeypatch):
    from xray_core import segmentation
    from xray_core.errors import DataError
    from xray_core.maps.modelcheck import check_archive
    knobs = dict(input_size=64, depth=3, base_filters=4, batch_norm=True, dropout=0.1)
    segmentation.build_unet(**knobs, seed=0).save(tmp_path / "u.keras")
    s = check_archive(str(tmp_path / "u.keras"))
    want = segmentation.unet_cost(**knobs)
    assert (s.params, s.multiply_adds) == (want["params"], want["multiply_adds"])
    monkeypatch.setenv("XRAY_LAB_MAX_FILM_MACS", str(want["multiply_adds"] - 1))
    with pytest.raises(DataError, match="multiply-adds per film.*XRAY_LAB_MAX_FILM_MACS"):
        check_archive(str(tmp_path / "u.keras"))


def test_estimates_of_segment_runs_are_rough_and_never_build_a_model():
    import sys
    from xray_core.presets import get_preset
    from xray_core.train import estimate as E
    big = E.estimate(get_preset("p3-unet").config, 150, 30, 37)
    small = E.estimate(get_preset("p3-unet-small").config, 150, 30, 37)
    assert big["source"] == small["source"] == "rough"
    assert 200 < big["total"] < 600 and 20 < small["total"] < 120 and big["total"] > 4 * small["total"]
    assert E.page_estimate(get_preset("p3-unet").config, 150, 30, 37)["total"] == big["total"]
    assert E.measure_in_background(get_preset("p3-unet").config) is None
    with pytest.raises(ConfigError, match="rough"):
        E.calibrate(get_preset("p3-unet").config)
    del sys
