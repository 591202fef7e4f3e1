"""X-ray Lab engine: data, phantom, models, training, inference, presets.

UI-free on purpose (never imports streamlit) so the CLI, tests and benchmarks
drive exactly what the app drives.
"""
import os

# Keep TensorFlow's C++ logs to real errors (see tf_quiet.py for the rest).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CLASSES = ("background", "clavicle", "lung", "heart")
LETTERS = "bclh"  # course file names end in _<letter>.png; index = class id
PATCH = 32        # patch side in pixels
FILM = 256        # radiographs are resized to this many pixels on their long side

__all__ = ["CLASSES", "LETTERS", "PATCH", "FILM"]
