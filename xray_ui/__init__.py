"""Streamlit views over xray_core. charts.py is pure plotly; session.py and
controls.py hold the per-browser-session state and the sidebar.

Importing this package also stops Streamlit from resetting Keras after every
script run. Streamlit's ScriptRunner calls `keras.backend.clear_session()` at the
end of each run (script_runner._clean_problem_modules, 1.67), which also clears
TensorFlow's process-wide kernel cache. With the live charts rerunning twice a
second, that made background training ~100x slower (measured: 3 batches/s
instead of ~300), and clear_session while other threads build models breaks
them (../shared/notes/live-training.md). This app keeps no per-run Keras state,
so there is nothing for Streamlit to clean.
"""
from streamlit.runtime.scriptrunner import script_runner as _script_runner


def _no_keras_reset() -> None:
    """Replacement for Streamlit's per-run cleanup (we do not use matplotlib either)."""


_script_runner._clean_problem_modules = _no_keras_reset
