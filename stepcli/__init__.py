"""stepcli: order-aware image-to-video probing from a cache of frozen frame tokens."""

__version__ = "0.1.0"


class StepcliError(Exception):
    """A problem with the user's input: the CLI prints it as one line, without a traceback."""
