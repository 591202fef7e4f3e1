"""scripts/jsrt_to_course.py on synthetic JSRT .IMG files + SCR-style masks made here."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xray_core.data.load import load_dataset

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("jsrt_to_course", REPO / "scripts" / "jsrt_to_course.py")
conv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv)


def _fake_jsrt(root: Path, n: int) -> None:
    """n films 2048x2048 big-endian 12-bit (air = HIGH value, as JSRT stores it) and
    1024x1024 GIF masks: lungs left/right, heart between them, clavicles on top."""
    imgs, masks = root / "JSRT", root / "SCR" / "fold1" / "masks"
    imgs.mkdir(parents=True)
    boxes = {"left lung": (200, 150, 800, 450), "right lung": (200, 574, 800, 874),
             "heart": (550, 400, 850, 700), "left clavicle": (180, 150, 260, 480),
             "right clavicle": (180, 544, 260, 874)}
    for organ in boxes:
        (masks / organ).mkdir(parents=True)
    for i in range(n):
        name = f"JPCLN{i + 1:03d}"
        raw = np.full((2048, 2048), 1000, np.uint16)           # body: mid grey
        for organ, (y0, x0, y1, x1) in boxes.items():
            val = {"left lung": 3500, "right lung": 3500, "heart": 1800}.get(organ, 400)
            raw[2 * y0:2 * y1, 2 * x0:2 * x1] = val           # lungs dark (high), clavicles bright (low)
            m = np.zeros((1024, 1024), np.uint8)
            m[y0:y1, x0:x1] = 255
            Image.fromarray(m).save(masks / organ / f"{name}.gif")
        raw += np.uint16(i)                                    # films differ a little
        raw.astype(">u2").tofile(imgs / f"{name}.IMG")


def test_converts_into_the_course_layout(tmp_path):
    _fake_jsrt(tmp_path, 7)
    out = tmp_path / "out"
    assert conv.main(["--images", str(tmp_path / "JSRT"), "--masks", str(tmp_path / "SCR"),
                      "--out", str(out)]) == 0
    counts = {s: len(list((out / "jsrt_patches" / s).glob("*.png"))) for s in ("train", "validation", "test")}
    assert sum(counts.values()) == 7 * 64 and all(counts.values())
    films = {s: {p.name[:8] for p in (out / "jsrt_patches" / s).glob("*.png")} for s in counts}
    assert not (films["train"] & films["test"]) and not (films["train"] & films["validation"])  # by patient
    names = sorted(p.name for p in (out / "jsrt_patches" / "train").glob(sorted(films["train"])[0] + "_*"))
    assert names[0].endswith("_000_b.png") and names[16].endswith("_016_c.png")
    assert names[32].endswith("_032_l.png") and names[63].endswith("_063_h.png")
    # the test films and their label maps, 256x256, pixel value = class index
    for name in films["test"]:
        film = np.asarray(Image.open(out / "jsrt_radiographs" / f"{name}.png"))
        lab = np.asarray(Image.open(out / "jsrt_radiographs" / f"{name}_labels.png"))
        assert film.shape == lab.shape == (256, 256) and film.dtype == np.uint8
        assert set(np.unique(lab)) == {0, 1, 2, 3}
        # inverted: lungs (raw high) dark, clavicles (raw low) bright; heart over lung, clavicle over lung
        assert film[lab == 2].mean() < film[lab == 0].mean() < film[lab == 1].mean()
        assert lab[120, 60] == 2 and lab[175, 137] == 3 and lab[60, 100] == 1      # (y, x) at 256 scale
        assert lab[150, 105] == 3 and lab[55, 60] == 1           # heart over lung, clavicle over lung
    assert len(list((out / "jsrt_radiographs").glob("*_labels.png"))) == len(films["test"])
    # the app's loader reads it, and every patch's label is the class at its centre
    ds = load_dataset(str(out / "jsrt_patches"))
    assert len(ds.split("train")) == counts["train"]
    assert set(np.bincount(ds.split("train").y)) == {counts["train"] // 4}
    for p in (out / "jsrt_patches" / "train").glob("*_l.png"):
        assert np.asarray(Image.open(p))[16, 16] < 60            # a lung centre is dark
        break


def test_patch_is_the_film_around_its_centre():
    rng = np.random.default_rng(0)
    film = np.arange(256 * 256, dtype=np.uint32).reshape(256, 256) % 251
    film = film.astype(np.uint8)
    labels = np.zeros((256, 256), np.uint8)
    labels[100:140, 100:140] = 2
    labels[20:24, 20:24] = 1           # near the border: only centres >= 16 px in
    labels[200:230, 30:60] = 3
    got = list(conv.patches(film, labels, rng))
    assert len(got) == 64 and [c for _, c, _ in got] == [0] * 16 + [1] * 16 + [2] * 16 + [3] * 16
    for _, cls, p in got:
        assert p.shape == (32, 32)
        ys, xs = np.nonzero(np.all(np.lib.stride_tricks.sliding_window_view(film, (32, 32)) == p, axis=(2, 3)))
        assert any(labels[y + 16, x + 16] == cls for y, x in zip(ys, xs))


def test_bad_inputs_one_line(tmp_path, capsys):
    (tmp_path / "JSRT").mkdir()
    (tmp_path / "JSRT" / "JPCLN001.IMG").write_bytes(b"\0" * 100)
    (tmp_path / "SCR").mkdir()
    assert conv.main(["--images", str(tmp_path / "JSRT"), "--masks", str(tmp_path / "SCR"),
                      "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "masks" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(conv.ConvertError, match="bytes"):
        conv.read_img(str(tmp_path / "JSRT" / "JPCLN001.IMG"))
