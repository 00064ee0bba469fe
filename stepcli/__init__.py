"""stepcli: order-aware image-to-video probing from a cache of frozen frame tokens."""

__version__ = "0.1.0"


class StepcliError(ValueError):
    """A problem with the user's input: the CLI prints it as one line, without a traceback.

    A `ValueError`, so that library callers can catch bad arguments the way they catch Python's own.
    """
