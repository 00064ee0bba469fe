"""stepcli: order-aware image-to-video probing from a cache of frozen frame tokens."""

from stepcli.errors import StepcliError
from stepcli.version import __version__

__all__ = ["StepcliError", "__version__"]
