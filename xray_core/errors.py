"""One exception family so the CLI and the UI can show a one-line message
instead of a traceback for anything a user can get wrong."""


class XrayLabError(Exception):
    """A problem with user input: config, data, image or archive. str() is the one-liner."""


class ConfigError(XrayLabError, ValueError):
    """An invalid hyper-parameter or config field."""


class DataError(XrayLabError):
    """A dataset folder, zip or file that cannot be used."""


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
