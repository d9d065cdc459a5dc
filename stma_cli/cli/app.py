"""The `stma` Typer application: one module per subcommand registers itself here.

Nothing heavy is imported here or at the top of the subcommand modules: torch, PyAV and the Hub
client are imported by the commands that use them, so that `stma --help` answers at once.
"""
from __future__ import annotations

import signal
import warnings
from typing import NoReturn

import typer

from stma_cli import __version__
from stma_cli.cli import evaluate, render, review, segment, train, weights
from stma_cli.cli.common import EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_TERMINATED
from stma_cli.errors import Terminated

app = typer.Typer(
    name="stma",
    help="Semi-supervised video object segmentation with STMA.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help text: brackets are not markup, and rich is not imported for --help
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stma {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Follow objects through videos from their first-frame masks."""


weights.register(app)
segment.register(app)
train.register(app)
evaluate.register(app)
render.register(app)
review.register(app)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"stma: warning: {message}\n"


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the clean-up runs once, whatever follows
    raise Terminated


def main() -> None:
    """Console-script entry point: warnings (e.g. a video shorter than its header says) as one line, and
    SIGTERM handled as Ctrl-C is (temporary files removed, finished work kept), exiting 143."""
    warnings.formatwarning = _one_line_warning
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except KeyboardInterrupt as interrupt:  # at start-up, before Typer's own handling (it builds the commands first)
        _exit_interrupted(isinstance(interrupt, Terminated))
    except SystemExit as end:
        # Typer exits 130, silently, for an interrupt that no command caught (one during a command's imports);
        # after a SIGTERM (`_terminate` has run: SIGTERM is now ignored) the exit is 143.
        if end.code == EXIT_INTERRUPTED and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
            _exit_interrupted(terminated=True)
        raise


def _exit_interrupted(terminated: bool) -> NoReturn:
    """Exit as `common.stop` does, outside Typer: one line, then 143 after SIGTERM, 130 after Ctrl-C."""
    typer.echo(f"stma: {'terminated (SIGTERM)' if terminated else 'interrupted'}", err=True)
    raise SystemExit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
