"""Helpers shared by the subcommands."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from stma_cli.errors import StmaError, Terminated

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
  2    usage error
  130  interrupted by Ctrl-C (finished videos are kept)
  143  stopped by SIGTERM (finished videos are kept)"""


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Report errors as one line `stma: error: ...` on stderr and exit 1; Ctrl-C exits 130, SIGTERM 143.

    Works as a context manager or as a decorator under `@app.command()`. Catches StmaError and
    OSError (a file that cannot be read or written); anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except StmaError as error:
        _fail(str(error))
    except OSError as error:
        _fail(f"{error.filename}: {error.strerror}" if error.filename and error.strerror else str(error))
    except KeyboardInterrupt as interrupt:
        stop(interrupt)


def stop(interrupt: KeyboardInterrupt, doing: str | None = None) -> None:
    """Exit after Ctrl-C (130) or SIGTERM (143) with one line saying what was interrupted."""
    terminated = isinstance(interrupt, Terminated)
    what = "terminated (SIGTERM)" if terminated else "interrupted"
    typer.echo(f"stma: {what}" + (f" while {doing}" if doing else ""), err=True)
    raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None


def _fail(message: str) -> None:
    typer.echo(f"stma: error: {' '.join(message.splitlines())}", err=True)
    raise typer.Exit(1) from None
