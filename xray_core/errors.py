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
