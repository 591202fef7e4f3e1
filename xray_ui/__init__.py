"""Streamlit views over xray_core. charts.py is pure plotly; session.py and
controls.py hold the per-browser-session state and the sidebar.

Importing this package also stops Streamlit from resetting Keras after every
script run. Streamlit's ScriptRunner calls `keras.backend.clear_session()` at the
end of each run (script_runner._clean_problem_modules, 1.67), which also clears
TensorFlow's process-wide kernel cache. With the live charts rerunning twice a
second, that made background training ~100x slower (measured: 3 batches/s
instead of ~300), and clear_session while other threads build models breaks
them (README: "How live training works"). This app keeps no per-run Keras state,
so there is nothing for Streamlit to clean.
"""
import streamlit as _st
from streamlit.runtime.scriptrunner import script_runner as _script_runner

PATCHED = "_clean_problem_modules"


def _no_keras_reset() -> None:
    """Replacement for Streamlit's per-run cleanup (we do not use matplotlib either)."""


def disable_keras_reset(module=_script_runner) -> None:
    """Patch Streamlit's private cleanup; refuse to start if it moved, rather than
    silently training ~100x slower."""
    if not callable(getattr(module, PATCHED, None)):
        raise RuntimeError(
            f"X-ray Lab cannot start: streamlit {_st.__version__} has no script_runner.{PATCHED}, which "
            f"xray_ui/__init__.py disables (it resets Keras after every rerun). Install the streamlit "
            f"version pinned in requirements.txt, or find the new name and update xray_ui/__init__.py.")
    setattr(module, PATCHED, _no_keras_reset)


disable_keras_reset()
