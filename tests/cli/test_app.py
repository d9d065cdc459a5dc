"""The command line as a whole: help text, exit codes in it, and what `--help` imports."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from stma_cli.cli.app import app

runner = CliRunner()
README = Path(__file__).resolve().parents[2] / "README.md"
COMMANDS = [[], ["segment"], ["eval"], ["train"], ["weights"], ["weights", "download"], ["weights", "list"],
            ["weights", "info"], ["weights", "convert"]]
HEAVY = ("torch", "av", "huggingface_hub", "numpy", "h5py", "PIL", "rich")


def _help(command: list[str]) -> str:
    result = runner.invoke(app, [*command, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "stma")
def test_help_has_no_type_placeholders_or_stray_spaces(command: list[str]) -> None:
    text = _help(command)
    assert not re.search(r"<(bool|str|int|float|path|list\[.*?\]|\w+ range|[\w|]+\|[\w|]+)>", text), text
    assert not re.search(r"\w \.(\s|$)", text), text  # "repo id ." left by a swallowed [default: ...]
    if "Commands:" in text:  # each command's summary is a whole sentence, not cut short
        assert not re.search(r"\.\.\.$", text.split("Commands:")[1].split("Exit codes:")[0], re.M), text


def _options(command) -> list:  # noqa: ANN001 (click's classes, which newer typer releases vendor)
    """Every option of `command` and of the commands under it."""
    options = [p for p in command.params if p.param_type_name == "option"]
    if hasattr(command, "list_commands"):
        context = command.context_class(command)
        for name in command.list_commands(context):
            options += _options(command.get_command(context, name))
    return options


def test_every_option_has_a_lowercase_name() -> None:
    """Some typer releases (0.27) named an option after its metavar when the two differ only in case
    (`--DEVICE` for `device` with metavar DEVICE), so `--device` was refused; each such option declares its
    name."""
    options = _options(typer.main.get_command(app))
    assert len(options) > 50
    for option in options:
        for name in option.opts + option.secondary_opts:
            assert re.fullmatch(r"--?[a-z0-9][a-z0-9-]*", name), f"{option.name}: {name}"


def _exit_codes(text: str) -> dict[int, str]:
    return {int(code): meaning for code, meaning in re.findall(r"^\s*(\d{1,3})\s{2,}(.+)$", text, re.M)}


@pytest.mark.parametrize("command", [[], ["segment"]], ids=["stma", "segment"])
def test_exit_codes_in_help_match_the_readme(command: list[str]) -> None:
    in_help = _exit_codes(_help(command).split("Exit codes:")[1])
    assert sorted(in_help) == [0, 1, 2, 130, 143]
    readme = README.read_text()
    in_readme = re.search(r"\*\*Exit codes\*\*[^:]*: (.+?)\n- ", readme, re.S)[1]
    assert sorted(int(code) for code in re.findall(r"\b(\d{1,3}) ", in_readme)) == [0, 1, 2, 130, 143]
    assert "SIGTERM" in in_help[143] and "SIGTERM" in in_readme


@pytest.mark.parametrize("args", [["--help"], ["segment", "--help"], ["eval", "--help"], ["train", "--help"],
                                  ["weights", "list", "--help"]])
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    code = ("import sys\nfrom stma_cli.cli.app import main\nsys.argv = ['stma', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert run.stdout.startswith("Usage: stma")
    assert run.stderr.strip() == ""


def test_weights_list_loads_neither_torch_nor_pyav(tmp_path: Path) -> None:
    code = ("import sys\nfrom stma_cli.cli.app import main\nsys.argv = ['stma', 'weights', 'list']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(' '.join(m for m in ('torch', 'av') if m in sys.modules), file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PATH": "", "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert "stma-tiny" in run.stdout
    assert run.stderr.strip() == ""
