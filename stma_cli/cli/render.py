"""`stma render`: write a finished output folder's overlay again, in other colours, without the model."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from stma_cli.cli.common import EXIT_CODES_HELP, EXIT_SOME_FAILED, EXIT_USAGE, PlainUsage, stop
from stma_cli.errors import StmaError


def render(
    folders: list[Path] = typer.Argument(..., metavar="OUTPUT_DIR", show_default=False,
                                         help="Output folders that stma segment finished."),
    opacity: float = typer.Option(0.5, metavar="A", help="Opacity of the objects' fill, 0 to 1."),
    colors: Optional[str] = typer.Option(
        None, metavar="ID=#RRGGBB,...",
        help="Colours by object id, e.g. '1=#ff0000,2=#00ff00' (others keep the masks' palette)."),
    contour: bool = typer.Option(False, "--contour", help="Outlines only, no fill."),
    ids: bool = typer.Option(False, "--ids", help="Write each object's id on it."),
    video: Optional[Path] = typer.Option(
        None, metavar="PATH", help="The source video, when it has moved since (one OUTPUT_DIR only)."),
    json_lines: bool = typer.Option(False, "--json", help="One JSON line per folder on stdout, nothing else there."),
) -> None:
    """Render overlay.mp4 again, without the model.

    Each folder's overlay is drawn from its masks over its source video (named in its manifest)."""
    from stma_cli.io.render import OverlayStyle, parse_colors, render_folder

    try:
        style = OverlayStyle(opacity=opacity, colors=parse_colors(colors or ""), contour_only=contour, ids=ids)
        if video is not None and len(folders) > 1:
            raise StmaError("--video names the source of one folder: give one OUTPUT_DIR with it")
    except StmaError as error:
        typer.echo(f"stma: error: {error}", err=True)
        raise typer.Exit(EXIT_USAGE) from None

    failed = []
    for folder in folders:
        try:
            report = render_folder(folder, style, video)
        except StmaError as error:
            failed.append(str(error))
            if json_lines:
                _emit({"status": "error", "folder": str(folder), "error": str(error)})
            continue
        except KeyboardInterrupt as interrupt:
            stop(interrupt, f"rendering {folder} (its earlier overlay is kept)")
        if json_lines:
            _emit(report.to_dict())
        else:
            typer.echo(f"{folder}: {report.frames} frames -> {report.overlay}", err=True)
    typer.echo(f"stma: {len(folders) - len(failed)} rendered, {len(failed)} failed", err=True)
    for message in failed:
        typer.echo(f"stma: error: {message}", err=True)
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("render", epilog=EXIT_CODES_HELP, cls=PlainUsage)(render)
