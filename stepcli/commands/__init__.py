"""One module per subcommand; each defines a click command, listed here in help order."""

from stepcli.commands.extract import extract
from stepcli.commands.inspect import inspect_cache
from stepcli.commands.pairs import pairs_command
from stepcli.commands.predict import predict_command
from stepcli.commands.train_probe import train_probe_command

COMMANDS = [extract, inspect_cache, pairs_command, train_probe_command, predict_command]
