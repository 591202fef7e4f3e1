"""What a browser may download about a run: its record without server paths.

A run record (RunStore.to_json, what the CLI's `runs show` prints on the machine's own
terminal) holds the model file's absolute path and the data as the server found it: an
upload's `…/home/uploads/<hash>.zip` or a data root's folder. The Train page's JSON
download names them instead: the model by its file name, the data as the page shows it
(`phantom`, the dataset's name under its data root, or "your .zip"). No streamlit here.
"""
from __future__ import annotations

import os

from xray_core.data import roots
from xray_core.data.load import UPLOAD_SHOWN
from xray_core.data.uploads import is_upload


def data_name(data) -> str | None:
    """How the page names a run's data: never a server folder."""
    if not isinstance(data, str) or not data or data == "phantom":
        return data if isinstance(data, str) else None
    if is_upload(data):
        return UPLOAD_SHOWN
    try:
        picked = roots.name_of(data)
    except OSError:
        picked = None
    return picked or os.path.basename(data.rstrip("/\\")) or "dataset"


def _scrub(text, replace: dict[str, str]):
    if not isinstance(text, str):
        return text
    for path, name in sorted(replace.items(), key=lambda kv: -len(kv[0])):   # longest first
        if path:
            text = text.replace(path, name)
    return text


def browser_record(rec) -> dict:
    """rec.to_json() with the model named by its file name and the data by its page name;
    the same names replace those paths (and the server's home) in the error text."""
    out = dict(rec.to_json())
    config = dict(out.get("config") or {})
    data = config.get("data")
    replace: dict[str, str] = {}
    if isinstance(data, str) and data and data != "phantom":
        config["data"] = data_name(data)
        replace[data] = config["data"]
        replace[os.path.realpath(data)] = config["data"]
    out["config"] = config
    model = out.get("model")
    if isinstance(model, str) and model:
        out["model"] = os.path.basename(model)
        replace[model] = out["model"]
        replace[os.path.dirname(model)] = "."
    try:
        from xray_core.runs.store import default_home
        home = str(default_home())
        replace.setdefault(home, "the server's home")
        replace.setdefault(os.path.realpath(home), "the server's home")
    except (OSError, ValueError):
        pass
    out["error"] = _scrub(out.get("error"), replace)
    return out
