"""Helpers shared by the subcommands."""
from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import click
import typer
from typer.core import TyperCommand

from stma_cli.errors import StmaError, Terminated, UsageError

EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM

WEIGHTS_HELP = (
    "Model weights, tried in this order: a local folder (config.json + model.safetensors), "
    "a model shipped in weights/ (default: stma-tiny), a Hub repo id owner/name."
)
REVISION_HELP = "Branch, tag or commit of a Hub repo (default: main)."
EXIT_CODES_HELP = """\b
Exit codes:
  0    done (a batch: every video done or skipped)
  1    failed (a batch: some videos failed, the others are done)
  2    usage error (a bad option, or one this machine or dataset cannot honour)
  130  interrupted by Ctrl-C (finished videos are kept)
  143  stopped by SIGTERM (finished videos are kept)"""


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Report errors as one line `stma: error: ...` on stderr and exit 1 (2 for a UsageError); Ctrl-C exits
    130, SIGTERM 143.

    Works as a context manager or as a decorator under `@app.command()`. Catches StmaError and
    OSError (a file that cannot be read or written); anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except UsageError as error:
        _fail(str(error), EXIT_USAGE)
    except StmaError as error:
        _fail(str(error))
    except OSError as error:
        _fail(f"{error.filename}: {error.strerror}" if error.filename and error.strerror else str(error))
    except KeyboardInterrupt as interrupt:
        stop(interrupt)


@contextmanager
def sigterm_held() -> Iterator[None]:
    """Hold SIGTERM back until the block ends (a command's imports: a second or two), then take it.

    torch's import swallows an exception raised while it imports numpy, and leaves numpy half imported: a
    SIGTERM there would be lost, and the run fail later on numpy. Threads started meanwhile keep it held.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def stop(interrupt: KeyboardInterrupt, doing: str | None = None) -> None:
    """Exit after Ctrl-C (130) or SIGTERM (143) with one line saying what was interrupted."""
    terminated = isinstance(interrupt, Terminated)
    what = "terminated (SIGTERM)" if terminated else "interrupted"
    typer.echo(f"stma: {what}" + (f" while {doing}" if doing else ""), err=True)
    raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None


def _fail(message: str, code: int = EXIT_SOME_FAILED) -> None:
    typer.echo(f"stma: error: {' '.join(message.splitlines())}", err=True)
    raise typer.Exit(code) from None


class PlainUsage(TyperCommand):
    """A command whose usage line names required arguments plainly (`ROOT`, `OUTPUT_DIR...`), without the
    braces Typer puts around them."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [re.sub(r"^\{(.*)\}((?:\.\.\.)?)$", r"\1\2", piece) for piece in super().collect_usage_pieces(ctx)]
