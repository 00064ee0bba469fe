"""The one exception type for a user's mistake, at the bottom of the import order so every layer can raise it."""


class StepcliError(ValueError):
    """A problem with the user's input: the CLI prints it as one line, without a traceback.

    A `ValueError`, so that library callers can catch bad arguments the way they catch Python's own.
    """
