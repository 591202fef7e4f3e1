"""Import TensorFlow/Keras once, without the pages of C++ start-up logs.

TF 2.21 writes CUDA probes and oneDNN notices straight to file descriptor 2 before
any Python logging setting applies, which would bury the one-line errors the CLI
promises. We point fd 2 at /dev/null for the import and the first device probe.
"""
from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_done = False


def load_keras():
    global _done
    with _lock:
        if not _done:
            saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, 2)
                import tensorflow as tf
                tf.config.list_physical_devices()
                tf.get_logger().setLevel("ERROR")
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                os.close(devnull)
            _done = True
    import keras
    return keras


keras = load_keras()
