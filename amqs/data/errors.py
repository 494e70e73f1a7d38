"""The one error of amqs.data."""


class DataError(ValueError):
    """Missing or malformed data; the message names the file, line or setting to fix."""
