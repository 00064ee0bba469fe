"""The ``stepcli`` console script: one click group, one module per subcommand in ``commands/``.

The CLI is thin: each command parses options, calls one library function and prints. A
``StepcliError`` (bad input) becomes one line on stderr and exit status 2, never a traceback; so
does a click usage error (an option outside its range, see ``commands/checks.py``).
``-q``/``-v`` set how much of the ``stepcli`` logger is shown, before or after the command name.
"""

from __future__ import annotations

import sys

import click

from stepcli.commands import COMMANDS
from stepcli.commands.configfile import with_config
from stepcli.errors import StepcliError
from stepcli.log import set_verbosity
from stepcli.version import __version__

_HELP_ERRORS = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2

#: what Ctrl-C leaves, per command that resumes; every other command starts again when rerun
RESUMES = "interrupted: complete shards and finished runs are kept; rerun the same command to resume"
RESTARTS = "interrupted: nothing unfinished is kept as finished; rerunning the same command starts it again"
INTERRUPTED = {
    "extract": RESUMES,
    "demo": RESUMES,
    "compare": RESUMES,
    "train-probe": "interrupted: the run is not finished and is not resumed; rerunning the same command trains it "
    "again from epoch 1 (with --seeds, finished seed runs are trained again too)",
}


class _Group(click.Group):
    def main(self, *args, standalone_mode: bool = True, **kwargs):
        """Click's usage errors (a bad option value, a missing option) as one line too."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _HELP_ERRORS as err:  # `stepcli` alone: the help, as click shows it
            err.show()
            sys.exit(err.exit_code)
        except click.ClickException as err:
            click.echo("error: " + " ".join(err.format_message().split()), err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StepcliError as err:
            # one line even when a message quotes a user's value that holds a newline
            click.echo("error: " + " ".join(str(err).splitlines()), err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo(INTERRUPTED.get(ctx.invoked_subcommand or "", RESTARTS), err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="stepcli")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors (no progress, no per-epoch lines).")
@click.option("-v", "--verbose", count=True, help="Also show debug output.")
def cli(quiet: bool, verbose: int) -> None:
    """Order-aware image-to-video probing: cache frozen frame tokens once, then train, compare and
    shuffle-test probes (STEP and the order-blind baselines) from the cache."""
    set_verbosity(-1 if quiet else min(verbose, 1))


for _command in COMMANDS:
    cli.add_command(with_config(_command))


def main(argv: list[str] | None = None) -> None:
    """Entry point; tests call ``main([...])`` the way open_clip's tests call its ``main(argv)``."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="stepcli")
