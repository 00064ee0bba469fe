"""One module per subcommand; each defines a click command, listed here in help order."""

from stepcli.commands.extract import extract
from stepcli.commands.inspect import inspect_cache

COMMANDS = [extract, inspect_cache]
