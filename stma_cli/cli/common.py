"""Helpers shared by the subcommands."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from stma_cli.errors import StmaError

WEIGHTS_HELP = (
    "Model weights, tried in this order: a local folder (config.json + model.safetensors), "
    "a model shipped in weights/ (default: stma-tiny), a Hub repo id owner/name."
)
REVISION_HELP = "Branch, tag or commit of a Hub repo (default: main)."


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Report errors as one line `stma: error: ...` on stderr and exit 1; Ctrl-C exits 130.

    Works as a context manager or as a decorator under `@app.command()`. Catches StmaError and
    OSError (a file that cannot be read or written); anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except StmaError as error:
        _fail(str(error))
    except OSError as error:
        _fail(f"{error.filename}: {error.strerror}" if error.filename and error.strerror else str(error))
    except KeyboardInterrupt:
        typer.echo("stma: interrupted", err=True)
        raise typer.Exit(130) from None


def _fail(message: str) -> None:
    typer.echo(f"stma: error: {' '.join(message.splitlines())}", err=True)
    raise typer.Exit(1) from None
