"""`stma weights`: download, list, inspect and convert model weights.

`stma_cli.hub`, `stma_cli.train.export` and rich are imported inside the commands that use them, so that
`stma --help` stays fast.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from stma_cli.cli.common import REVISION_HELP, reporting_errors

weights_app = typer.Typer(help="Download, list, inspect and convert model weights.", no_args_is_help=True)

_REVISION = typer.Option(None, "--revision", metavar="REV", help=REVISION_HELP)
_JSON = typer.Option(False, "--json", help="Print JSON instead of text.")


def register(app: typer.Typer) -> None:
    """Add `stma weights` to the application."""
    app.add_typer(weights_app, name="weights")


@weights_app.command()
@reporting_errors()
def download(
    repo: str = typer.Argument(..., metavar="REPO", hidden=True),  # described in the docstring
    revision: str | None = _REVISION,
    as_json: bool = _JSON,
) -> None:
    """Fetch weights from the Hub into the shared cache and check them.

    Prints the folder they are in.

    REPO is a Hub repo id, owner/name.
    """
    from stma_cli import hub

    weights = hub.download(repo, revision)
    hub.load_weights_folder(weights.path)
    typer.echo(_json(weights.to_dict()) if as_json else str(weights.path))


@weights_app.command("list")
@reporting_errors()
def list_models(as_json: bool = _JSON) -> None:
    """List the shipped models and the STMA models in the Hub cache.

    Each with its source, revision, size and folder.
    """
    from rich.console import Console
    from rich.table import Table

    from stma_cli import hub

    entries = hub.list_models()
    if as_json:
        typer.echo(_json([entry.to_dict() for entry in entries]))
        return
    if not entries:
        typer.echo(f"No models: none shipped in {hub.shipped_dir()} and none in the Hub cache.")
        return
    table = Table("Model", "Source", "Revision", "Refs", "Size", "Path")
    table.columns[-1].overflow = "fold"
    for entry in entries:
        revision = entry.revision[:12] if entry.revision else "-"
        refs = ", ".join(entry.refs) or "-"
        table.add_row(entry.model_id, entry.source, revision, refs, _size(entry.size), str(entry.path))
    Console().print(table)


@weights_app.command()
@reporting_errors()
def info(
    weights: str | None = typer.Argument(None, metavar="ID|PATH", hidden=True),  # described in the docstring
    revision: str | None = _REVISION,
    as_json: bool = _JSON,
) -> None:
    """Show the config, parameters, file hashes and origin of weights.

    Works offline from the Hub cache.

    ID|PATH is tried in this order: a local folder (config.json + model.safetensors), a model shipped
    in weights/ (default: stma-tiny), a Hub repo id owner/name.
    """
    from stma_cli import hub

    details = hub.model_info(weights, revision)
    if as_json:
        typer.echo(_json(details.to_dict()))
        return
    where = details.weights
    lines = [
        f"model       {where.model_id}",
        f"source      {where.source}",
        f"revision    {where.revision or '-'}",
        f"path        {where.path}",
        f"parameters  {details.parameters:,}",
        "config",
        *(f"  {key}: {json.dumps(value)}" for key, value in details.config.items()),
        "files",
        *(f"  {f.name:<18} {_size(f.size):>9}  sha256 {f.sha256}" for f in details.files),
    ]
    typer.echo("\n".join(lines))


@weights_app.command()
@reporting_errors()
def convert(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", hidden=True),  # described in the docstring
    out: Path = typer.Argument(..., metavar="OUT", hidden=True),
) -> None:
    """Turn a training checkpoint into a Hub-ready weights folder.

    The folder holds config.json, model.safetensors and a model card (README.md) with the metrics.

    CHECKPOINT is a checkpoint folder written by `stma train`; OUT is the new folder (it must not exist).
    """
    from stma_cli.train.export import convert_checkpoint

    written = convert_checkpoint(checkpoint, out)
    typer.echo(f"Wrote {written}; publish it with: hf upload OWNER/NAME {written}")


def _json(data: Any) -> str:
    return json.dumps(data, indent=2)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
