"""`python -m xray_core classify`: per-file JSON records, label-map PNGs, exit codes."""
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xray_core import CLASSES
from xray_core.cli.main import main
from xray_core.config import RunConfig
from xray_core.data.phantom.build import phantom_radiographs
from xray_core.train.job import TrainingJob

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(toy_dataset, tmp_path_factory):
    job = TrainingJob(RunConfig(arch="fc", epochs=1, batch_size=64, lr=1e-3), toy_dataset, probe=False).run()
    assert job.snapshot().state == "done"
    return job.save(tmp_path_factory.mktemp("model"))["model"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A non-square film (300x240, not film scale), a 32x32 patch, a PNG named .jpg, and two bad files."""
    d = tmp_path_factory.mktemp("inputs")
    _, film, _ = phantom_radiographs(1, seed=0)[0]
    wide = Image.fromarray(np.asarray(film, np.uint8)).resize((300, 240), Image.Resampling.BILINEAR)
    wide.save(d / "film.png")
    Image.fromarray(np.asarray(film, np.uint8)[100:132, 60:92]).save(d / "patch.png")
    buf = io.BytesIO()
    Image.fromarray(np.asarray(film, np.uint8)[::2, ::2]).save(buf, format="PNG")  # 128x128: a film too
    (d / "small_film.jpg").write_bytes(buf.getvalue())
    (d / "notes.png").write_text("<html>not an image</html>")
    (d / "empty.png").write_bytes(b"")
    return d


def _files(d: Path) -> list[str]:
    return [str(d / n) for n in ("film.png", "notes.png", "patch.png", "empty.png", "small_film.jpg")]


def _check_records(records, files):
    assert isinstance(records, list) and [r["file"] for r in records] == files
    by_name = {Path(r["file"]).name: r for r in records}
    for name in ("film.png", "patch.png", "small_film.jpg"):
        r = by_name[name]
        assert r["ok"] is True, r
        assert r["label"] in CLASSES
        assert set(r["probabilities"]) == set(CLASSES)
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-3
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
    for name in ("notes.png", "empty.png"):
        r = by_name[name]
        assert r["ok"] is False and set(r) == {"file", "ok", "error"}
        assert r["error"].startswith(name + ":") and "\n" not in r["error"]
    return by_name


def _check_map(path, size):
    with Image.open(path) as im:
        assert im.size == size and im.mode == "L"
        a = np.asarray(im)
    assert set(np.unique(a).tolist()) <= {0, 1, 2, 3}
    assert len(np.unique(a)) >= 2          # a real map, not a constant picture


def test_subprocess_writes_json_and_maps_and_exits_0_despite_bad_files(model_path, inputs, tmp_path):
    out, maps = tmp_path / "out.json", tmp_path / "maps"
    files = _files(inputs)
    proc = subprocess.run([sys.executable, "-m", "xray_core", "classify", "--model", model_path, *files,
                           "--map-dir", str(maps), "--stride", "8", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    by_name = _check_records(json.loads(out.read_text()), files)
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in maps.iterdir()) == [                                # radiographs only
        "film.overlay.png", "film.png", "small_film.overlay.png", "small_film.png"]
    assert Path(by_name["film.png"]["map"]) == maps / "film.png"
    assert Path(by_name["film.png"]["overlay"]) == maps / "film.overlay.png"
    assert by_name["film.png"]["map_seconds"] > 0
    _check_map(maps / "film.png", (300, 240))
    _check_map(maps / "small_film.png", (128, 128))
    assert "map" not in by_name["patch.png"]


def test_in_process_stride_changes_the_map_grid_but_not_its_size(model_path, inputs, tmp_path, capsys):
    for stride in (1, 16):
        maps, out = tmp_path / f"m{stride}", tmp_path / f"o{stride}.json"
        assert main(["classify", "--model", model_path, str(inputs / "film.png"), "--map-dir", str(maps),
                     "--stride", str(stride), "--json", str(out)]) == 0
        (rec,) = json.loads(out.read_text())
        assert rec["ok"] and abs(sum(rec["shares"].values()) - 1) < 1e-6
        _check_map(maps / "film.png", (300, 240))
    a1 = np.asarray(Image.open(tmp_path / "m1" / "film.png"))
    a16 = np.asarray(Image.open(tmp_path / "m16" / "film.png"))
    assert a1.shape == a16.shape
    assert capsys.readouterr().out.count("film.png: ") == 2


def test_without_map_dir_no_maps_are_written(model_path, inputs, tmp_path):
    out = tmp_path / "o.json"
    assert main(["classify", "--model", model_path, str(inputs / "film.png"), "--json", str(out)]) == 0
    (rec,) = json.loads(out.read_text())
    assert rec["ok"] and rec["map"] is None and rec["overlay"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.json"]


@pytest.mark.parametrize("case", ["missing model", "invalid model", "stride 0", "stride 99", "stride text"])
def test_bad_arguments_exit_non_zero_with_one_line(case, model_path, inputs, tmp_path, capsys):
    model = model_path
    stride = "4"
    if case == "missing model":
        model = str(tmp_path / "nope.keras")
    elif case == "invalid model":
        model = str(tmp_path / "bad.keras")
        Path(model).write_bytes(b"PK\x03\x04 definitely not a keras archive")
    elif case == "stride 0":
        stride = "0"
    elif case == "stride 99":
        stride = "99"
    else:
        stride = "four"
    out = tmp_path / "o.json"
    code = main(["classify", "--model", model, str(inputs / "film.png"), "--stride", stride,
                 "--json", str(out), "--map-dir", str(tmp_path / "maps")])
    err = capsys.readouterr().err
    assert code != 0
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err
    if case.startswith("stride"):
        assert "stride" in lines[0]
    else:
        assert Path(model).name in lines[0]
    assert not out.exists() and not (tmp_path / "maps").exists()


def test_overlay_tints_the_film_in_the_class_colours_of_the_map(model_path, inputs, tmp_path):
    from xray_core.maps.inference import CLASS_COLOURS
    maps = tmp_path / "maps"
    assert main(["classify", "--model", model_path, str(inputs / "film.png"), "--map-dir", str(maps),
                 "--stride", "8"]) == 0
    labels = np.asarray(Image.open(maps / "film.png"))
    with Image.open(maps / "film.overlay.png") as im:
        assert im.mode == "RGB" and im.size == (300, 240)
        rgb = np.asarray(im).astype(int)
    grey = np.asarray(Image.open(inputs / "film.png").convert("L")).astype(int)
    bg = labels == 0
    # background stays the grey film; every painted class leans towards its own colour
    assert np.all(rgb[bg][:, 0] == rgb[bg][:, 1]) and np.all(rgb[bg][:, 1] == rgb[bg][:, 2])
    painted = [c for c in range(1, 4) if (labels == c).sum() > 50]
    assert painted, "the toy model painted no anatomy at all"
    for c in painted:
        m = labels == c
        shift = (rgb[m] - grey[m][:, None]).mean(axis=0)
        want = np.asarray(CLASS_COLOURS[c]) - grey[m].mean()
        assert np.corrcoef(shift, want)[0, 1] > 0.9, (c, shift, want)


def test_overlay_names_never_overwrite_inputs(model_path, inputs, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "film.png").write_bytes((inputs / "film.png").read_bytes())
    (d / "film.overlay.png").write_bytes((inputs / "film.png").read_bytes())   # an input by that name
    out = tmp_path / "o.json"
    assert main(["classify", "--model", model_path, str(d / "film.png"), str(d / "film.overlay.png"),
                 "--map-dir", str(d), "--stride", "16", "--json", str(out)]) == 0
    recs = json.loads(out.read_text())
    written = {r["map"] for r in recs} | {r["overlay"] for r in recs}
    assert len(written) == 4 and not written & {str(d / "film.png"), str(d / "film.overlay.png")}


def test_exits_non_zero_when_no_file_could_be_classified(model_path, inputs, tmp_path, capsys):
    out = tmp_path / "o.json"
    code = main(["classify", "--model", model_path, str(inputs / "notes.png"), str(inputs / "empty.png"),
                 "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "none of the 2 file(s)" in err
    assert all(not r["ok"] for r in json.loads(out.read_text()))   # the records are still written
    assert main(["classify", "--model", model_path, str(inputs / "notes.png"), str(inputs / "patch.png")]) == 0
