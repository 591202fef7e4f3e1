"""One exception family so the CLI and the UI can show a one-line message
instead of a traceback for anything a user can get wrong; and `log_once`, for the
errors a user need not see but an operator must (logged with their cause, once, not on
every page rerun)."""
import logging
import threading


class XrayLabError(Exception):
    """A problem with user input: config, data, image or archive. str() is the one-liner."""


class ConfigError(XrayLabError, ValueError):
    """An invalid hyper-parameter or config field."""


class DataError(XrayLabError):
    """A dataset folder, zip or file that cannot be used."""


class StoreError(XrayLabError):
    """A bad run id, workspace or store location: str() is the one-line message."""


class ImageError(XrayLabError):
    """An uploaded image that cannot be classified."""


_NOISE = ("Graph execution error", "Detected at node", "File ", "[[", "Traceback", "Stack trace")


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The most informative single line of an exception, prefixed with its type.

    TensorFlow's errors start with 'Graph execution error:' and a Python stack;
    the sentence that says what went wrong comes later, so skip the noise."""
    if isinstance(exc, XrayLabError):
        return str(exc).strip().splitlines()[0][:limit] if str(exc).strip() else type(exc).__name__
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    useful = [l for l in lines if not l.startswith(_NOISE) and not l.startswith("/")]
    text = (useful or lines or [""])[0]
    text = text.split("[[")[0].strip().rstrip(".")
    return f"{type(exc).__name__}: {text}"[:limit] if text else type(exc).__name__


_logged: set = set()
_logged_lock = threading.Lock()
MAX_LOGGED = 1000     # distinct problems remembered; beyond that they are logged again


def log_once(logger: logging.Logger, what: str, exc: BaseException, *, key=None) -> bool:
    """Log `what` with `exc` (its type, message and traceback) as a warning, once per
    (what, key or one_line(exc)): a page that reruns twice a second, or a retry on every
    tick, says a lasting problem once, and a different problem again. True if logged now."""
    k = (what, one_line(exc) if key is None else key)
    with _logged_lock:
        if k in _logged:
            return False
        if len(_logged) >= MAX_LOGGED:
            _logged.clear()
        _logged.add(k)
    logger.warning("%s: %s", what, one_line(exc), exc_info=(type(exc), exc, exc.__traceback__))
    return True
