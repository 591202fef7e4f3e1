"""The Folder data source: a picker of the datasets under the server's data roots.

Never a free-text server path (see xray_core/roots.py): a browser, or a link's
`?data=NAME`, can only name a dataset the teacher put under a root."""
from __future__ import annotations

import streamlit as st

from xray_core.data import roots
from xray_core.errors import DataError

NOT_AVAILABLE = "The dataset named in the link is not available on this server. Pick one from the list."


def folder_picker(container) -> tuple[str | None, str | None]:
    """Draw the picker (key `data_path` holds the dataset NAME); return (absolute path, error)."""
    names = roots.list_datasets()
    if not names:
        return None, ("No datasets on this server yet: the teacher puts dataset folders under "
                      "the data roots (XRAY_LAB_DATA_ROOTS). Choose the built-in phantom or upload a .zip.")
    error = None
    current = st.session_state.get("data_path")
    if current and current not in names:
        # e.g. ?data=/etc or ?data=../..: not echoed, not looked up on disk
        st.session_state["data_path"] = None
        error = NOT_AVAILABLE
    elif not current:
        st.session_state["data_path"] = None
    name = container.selectbox("Dataset on the server", names, key="data_path",
                               placeholder="Choose a dataset")
    if name is None:
        return None, error or "Choose a dataset from the list, or the built-in phantom."
    try:
        return roots.resolve(name), None
    except DataError as e:
        return None, str(e)


def link_name(data: str) -> str | None:
    """What a link says for a folder source: its dataset name (None: not linkable)."""
    return roots.name_of(data)
