"""`stma review`: one HTML page over many results, worst first, to check thousands without opening each."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from stma_cli.cli.common import EXIT_CODES_HELP, EXIT_SOME_FAILED, EXIT_USAGE, PlainUsage, stop


def review(
    folders: list[Path] = typer.Argument(..., metavar="OUTPUT_DIR", show_default=False,
                                         help="Output folders that stma segment finished."),
    page: Path = typer.Option(Path("review.html"), "--output", "-o", metavar="FILE",
                              help="The review page to write."),
    video: Optional[Path] = typer.Option(
        None, metavar="PATH", help="The source video, when it has moved since (one OUTPUT_DIR only)."),
    json_lines: bool = typer.Option(False, "--json",
                                    help="One JSON line of flags per folder on stdout, worst first; no page."),
) -> None:
    """Flag frames to check; one page, worst first.

    Flags: presence dropping on a large object, area jumping 3x, two objects trading places, masks on
    the first frame of a new shot. The page is self-contained: plots over time, thumbnails of flagged
    frames, links to the overlays."""
    from stma_cli.errors import StmaError
    from stma_cli.io.atomic import atomic_write_text
    from stma_cli.review.page import write_page
    from stma_cli.review.scan import review_folder

    if video is not None and len(folders) > 1:
        typer.echo("stma: error: --video names the source of one folder: give one OUTPUT_DIR with it", err=True)
        raise typer.Exit(EXIT_USAGE)
    reviews, failed = [], []
    for folder in folders:
        try:
            reviews.append(review_folder(folder, video))
        except StmaError as error:
            failed.append(str(error))
        except KeyboardInterrupt as interrupt:
            stop(interrupt, f"reviewing {folder}")
    if json_lines:
        for item in sorted(reviews, key=lambda r: (-r.score, str(r.folder))):
            sys.stdout.write(json.dumps(item.to_dict()) + "\n")
        sys.stdout.flush()
    else:
        try:
            atomic_write_text(page, write_page(reviews, page))
        except OSError as exc:
            typer.echo(f"stma: error: {page}: cannot write the review page ({exc.strerror or exc})", err=True)
            raise typer.Exit(EXIT_SOME_FAILED) from None
        flags = sum(len(r.flags) for r in reviews)
        typer.echo(f"stma: {len(reviews)} reviewed, {flags} flags -> {page}", err=True)
    if failed:
        typer.echo(f"stma: {len(failed)} failed", err=True)
        for message in failed:
            typer.echo(f"stma: error: {message}", err=True)
        raise typer.Exit(EXIT_SOME_FAILED)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("review", epilog=EXIT_CODES_HELP, cls=PlainUsage)(review)
