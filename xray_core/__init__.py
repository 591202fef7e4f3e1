"""X-ray Lab engine: data, phantom, models, training, inference, presets.

UI-free on purpose (never imports streamlit) so the CLI, tests and benchmarks
drive exactly what the app drives.
"""

CLASSES = ("background", "clavicle", "lung", "heart")
LETTERS = "bclh"  # course file names end in _<letter>.png; index = class id
PATCH = 32        # patch side in pixels
FILM = 256        # radiographs are resized to this many pixels on their long side

__all__ = ["CLASSES", "LETTERS", "PATCH", "FILM"]
