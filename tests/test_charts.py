"""The live charts stay light and readable: bounded per-batch traces, figures built once
per version of a run's data (shared by every watcher), a confusion matrix a projector shows."""
import numpy as np

from xray_core import CLASSES
from xray_core.train.job import Snapshot
from xray_ui import charts


def _snap(n_batches: int, epochs_done: int, state: str = "training", job_id: str = "jobT") -> Snapshot:
    rng = np.random.default_rng(0)
    loss = list(1.5 * np.exp(-np.arange(n_batches) / 3000) + 0.2 * rng.random(n_batches))
    return Snapshot(job_id=job_id, state=state, queue_position=None, epoch=epochs_done, epochs=40, step=3,
                    steps_per_epoch=300, elapsed=1.0, eta=2.0, batch_loss=loss, batch_accuracy=[],
                    batch_epoch=[i / 300 for i in range(n_batches)],
                    history={"loss": [1.0] * epochs_done, "accuracy": [0.5] * epochs_done,
                             "val_loss": [1.1] * epochs_done, "val_accuracy": [0.45] * epochs_done},
                    unit_stats=[], error=None, result=None)


def test_the_batch_trace_is_bounded_and_keeps_its_ends_and_spikes():
    n = 12_000
    x = list(range(n))
    y = [0.5] * n
    y[7_777] = 9.0           # a spike must survive decimation
    y[1_234] = -1.0
    bx, by = charts.downsample(x, y)
    assert len(bx) <= charts.MAX_BATCH_POINTS and len(bx) >= charts.MAX_BATCH_POINTS // 2
    assert bx[0] == 0 and bx[-1] == n - 1 and bx == sorted(bx)
    assert 9.0 in by and -1.0 in by
    small = charts.downsample(x[:50], y[:50])
    assert small == (x[:50], y[:50])
    fig = charts.curves(_snap(n, 40).history, _snap(n, 40).batch_epoch, _snap(n, 40).batch_loss)
    batch = next(t for t in fig.data if t.name == "batch loss")
    assert len(batch.x) <= charts.MAX_BATCH_POINTS


def test_accuracy_is_in_percent_with_titled_axes():
    fig = charts.curves(_snap(600, 2).history)
    acc = [t for t in fig.data if "accuracy" in t.name]
    assert acc and all(max(t.y) == 50.0 or max(t.y) == 45.0 for t in acc)
    assert fig.layout.yaxis.title.text == "loss (cross-entropy)"
    assert fig.layout.yaxis2.title.text == "accuracy (%)" and list(fig.layout.yaxis2.range) == [0, 100]
    pr = charts.precision_recall({c: 0.5 for c in CLASSES}, {c: 1.0 for c in CLASSES})
    assert max(pr.data[1].y) == 100 and "%" in pr.layout.yaxis.title.text


def test_a_figure_is_built_once_per_version_of_the_run_and_shared_by_watchers():
    charts.FIGURES.clear()
    snap = _snap(900, 3)
    first = charts.live_curves(snap)
    for _ in range(20):                      # 20 watchers / polls with nothing new
        assert charts.live_curves(_snap(900, 3)) is first
    assert charts.FIGURES.builds == 1
    moved = charts.live_curves(_snap(901, 3))  # one more batch: a new figure
    assert moved is not first and charts.FIGURES.builds == 2
    charts.live_curves(_snap(901, 3, state="evaluating"))
    assert charts.FIGURES.builds == 3
    charts.live_curves(_snap(901, 3, job_id="other"))  # another run never gets this run's figure
    assert charts.FIGURES.builds == 4


def test_the_figure_cache_is_bounded():
    cache = charts.FigureCache(size=3)
    for i in range(10):
        cache.get((i,), lambda: charts.waiting("…"))
    assert len(cache._d) == 3 and cache.builds == 10


def test_the_confusion_matrix_is_readable_on_a_projector():
    conf = [[90, 5, 3, 2], [10, 80, 5, 5], [0, 1, 99, 0], [4, 4, 2, 0]]
    fig = charts.confusion(conf)
    assert fig.layout.height >= 300
    assert fig.layout.xaxis.tickangle == 0 and fig.layout.yaxis.tickangle == 0
    text = fig.data[0].text
    assert text[0][0] == "90<br>90.0 %" and text[1][0] == "10<br>10.0 %"
    assert text[3][3] == "0<br>0.0 %"         # a row whose diagonal is empty still reads
    assert list(fig.data[0].x) == list(CLASSES) == list(fig.data[0].y)


def test_one_colour_table_and_background_is_not_white():
    assert set(charts.CLASS_COLOURS) == set(CLASSES)
    assert charts.CLASS_COLOURS["background"].lower() not in ("#ffffff", "#fff", "white")
    from xray_core.maps.inference import CLASS_COLOURS
    assert charts.CLASS_COLOURS["lung"] == "#%02x%02x%02x" % CLASS_COLOURS[CLASSES.index("lung")]


def test_the_waiting_placeholder_has_no_empty_axes():
    fig = charts.waiting("Waiting for a free trainer")
    assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False
    assert "free trainer" in fig.layout.annotations[0].text and not fig.data


def test_a_shared_figure_is_serialised_once_not_per_watcher():
    charts.FIGURES.clear()
    fig = charts.live_curves(_snap(900, 3))
    d = fig.to_dict()
    assert fig.to_dict() is d                       # what st.plotly_chart serialises: no new deep copy
    plain = charts.curves(_snap(900, 3).history, _snap(900, 3).batch_epoch, _snap(900, 3).batch_loss)
    assert type(plain) is not charts.SharedFigure and plain.to_dict() == d
    assert charts.FIGURES.get(("png",), lambda: [b"x"]) == [b"x"]   # non-figures are kept as they are


def test_the_curves_built_without_plotlys_checks_are_what_plotly_validates():
    # curves() skips plotly's validation for speed: the validated figure must be identical.
    import plotly.graph_objects as go
    snap = _snap(1_000, 4)
    fig = charts.curves(snap.history, snap.batch_epoch, snap.batch_loss,
                        overlays=[("run 2", {"val_loss": [1.0, 0.8], "val_accuracy": [0.3, None]})])
    d = fig.to_dict()
    assert go.Figure(d).to_dict() == d
    assert [t["name"] for t in d["data"]] == ["batch loss", "loss", "val loss", "accuracy", "val accuracy",
                                              "run 2 val loss", "run 2 val accuracy"]
    assert [t.get("xaxis") for t in d["data"]] == ["x", "x", "x", "x2", "x2", "x", "x2"]
    fig.update_layout(title_text="changed")          # figures never share their layout
    assert charts.curves(snap.history).layout.title.text == "Training curves"


def test_decimation_keeps_each_bins_first_min_and_max_and_ignores_nans():
    y = [0.5, 3.0, 1.0, float("nan"), 1.0, 0.0, 2.0] * 300 + [float("nan")] * 300
    x = list(range(len(y)))
    bx, by = charts.downsample(x, y)
    assert bx[0] == 0 and bx[-1] == len(y) - 1 and bx == sorted(set(bx))
    assert 3.0 in by and 0.0 in by
    inner = [v for i, v in zip(bx, by) if 0 < i < len(y) - 301]
    assert not any(v != v for v in inner)            # NaNs never chosen while a bin has numbers
    assert any(v != v for i, v in zip(bx, by) if len(y) - 300 <= i < len(y) - 1)   # an all-NaN bin keeps a point


# ---- whole films (issue 24): a segmentation run's charts --------------------------------------

def _seg_snap(epochs_done: int, state: str = "training") -> Snapshot:
    snap = _snap(10, epochs_done, state=state, job_id="jobSeg")
    dice = {f"val_dice_{c}": [0.1 * (k + 1) + 0.05 * e for e in range(epochs_done)] for k, c in enumerate(CLASSES)}
    return Snapshot(**{**snap.__dict__, "history": {**snap.history, **dice}})


def test_a_segmentation_runs_dice_is_one_line_per_class_in_its_colour_built_once_per_epoch():
    charts.FIGURES.clear()
    assert not charts.has_dice(_snap(10, 2).history) and charts.has_dice(_seg_snap(2).history)
    fig = charts.live_dice(_seg_snap(2))
    assert [t.name for t in fig.data] == list(CLASSES)
    assert [t.line.color for t in fig.data] == [charts.CLASS_COLOURS[c] for c in CLASSES]
    assert np.allclose(fig.data[2].y, [0.3, 0.35]) and list(fig.data[2].x) == [1, 2]
    assert list(fig.layout.yaxis.range) == [0, 1] and fig.layout.xaxis.title.text == "epoch"
    assert charts.live_dice(_seg_snap(2)) is fig and charts.FIGURES.builds == 1   # polls with nothing new
    assert charts.live_dice(_seg_snap(3)) is not fig and charts.FIGURES.builds == 2
    # its loss and accuracy: the accuracy axis says it counts pixels, the loss is not only cross-entropy
    curves = charts.live_curves(_seg_snap(3), accuracy="pixel accuracy")
    assert curves.layout.yaxis2.title.text == "pixel accuracy (%)" and curves.layout.yaxis.title.text == "loss"
    assert charts.live_curves(_seg_snap(3)).layout.yaxis2.title.text == "accuracy (%)"   # a patch run's own figure


def test_test_dice_is_shown_beside_the_priors_and_films_count_pixels():
    model = {"background": 0.97, "clavicle": None, "lung": 0.9, "heart": 0.8}
    prior = {"background": 0.91, "clavicle": 0.27, "lung": 0.82, "heart": 0.78}
    fig = charts.dice_vs_prior(model, prior)
    assert [t.name for t in fig.data] == ["model", "prior (image ignored)"]
    assert list(fig.data[0].y) == [0.97, None, 0.9, 0.8] and list(fig.data[1].y) == [0.91, 0.27, 0.82, 0.78]
    assert len(charts.dice_vs_prior(model, None).data) == 1
    bal = charts.film_balance({"train": {"films": 150, "pixel_share": {"background": 0.5, "clavicle": 0.02,
                                                                       "lung": 0.3, "heart": 0.18}}})
    assert bal.data[0].name == "train (150 films)" and list(bal.data[0].y) == [50.0, 2.0, 30.0, 18.0]
    conf = charts.confusion([[5, 1, 0, 0], [0, 3, 0, 0], [0, 0, 4, 0], [0, 0, 1, 2]], unit="pixels")
    assert "pixels" in conf.layout.title.text and "pixels" in conf.data[0].hovertemplate
    assert charts.precision_recall({c: 0.5 for c in CLASSES}, {c: 1.0 for c in CLASSES},
                                   unit="pixels").layout.yaxis.title.text == "% of pixels"
