"""One module per subcommand; each defines a click command, listed here in help order."""

from stepcli.commands.backbones import backbones_command
from stepcli.commands.compare import compare_command
from stepcli.commands.demo import demo_command
from stepcli.commands.evaluate import evaluate_command
from stepcli.commands.extract import extract
from stepcli.commands.frames import frames_command
from stepcli.commands.inspect import inspect_cache
from stepcli.commands.pairs import pairs_command
from stepcli.commands.predict import predict_command
from stepcli.commands.report import report_command
from stepcli.commands.shuffle_test import shuffle_test_command
from stepcli.commands.train_probe import train_probe_command
from stepcli.commands.verify import verify_command

COMMANDS = [
    extract,
    inspect_cache,
    verify_command,
    pairs_command,
    train_probe_command,
    predict_command,
    shuffle_test_command,
    evaluate_command,
    compare_command,
    report_command,
    frames_command,
    demo_command,
    backbones_command,
]
