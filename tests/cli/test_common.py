"""`reporting_errors`: one line on stderr and an exit code, never a traceback."""
from __future__ import annotations

import typer
from typer.testing import CliRunner

from stma_cli.cli.common import reporting_errors
from stma_cli.errors import StmaError, Terminated

runner = CliRunner()


def _app(error: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @reporting_errors()
    def run(name: str = typer.Option("x", "--name")) -> None:
        typer.echo(f"hello {name}")
        raise error

    return app


def test_stma_error_is_one_line_and_exit_1() -> None:
    result = runner.invoke(_app(StmaError("clip.mp4: no video stream\n(second line)")), ["--name", "y"])
    assert result.exit_code == 1
    assert result.stdout == "hello y\n"
    assert result.stderr == "stma: error: clip.mp4: no video stream (second line)\n"


def test_os_error_names_the_file() -> None:
    result = runner.invoke(_app(PermissionError(13, "Permission denied", "/out/masks")), [])
    assert result.exit_code == 1
    assert result.stderr == "stma: error: /out/masks: Permission denied\n"


def test_interrupt_exits_130() -> None:
    result = runner.invoke(_app(KeyboardInterrupt()), [])
    assert result.exit_code == 130
    assert result.stderr == "stma: interrupted\n"


def test_other_exceptions_are_bugs_and_propagate() -> None:
    result = runner.invoke(_app(ZeroDivisionError("bug")), [])
    assert isinstance(result.exception, ZeroDivisionError)


def test_sigterm_exits_143() -> None:
    result = runner.invoke(_app(Terminated()), [])
    assert result.exit_code == 143
    assert result.stderr == "stma: terminated (SIGTERM)\n"
