"""`stma eval`: score predictions on DAVIS-2017, or pack them for the YouTube-VOS server."""
from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from stma_cli.cli.common import REVISION_HELP, WEIGHTS_HELP, reporting_errors
from stma_cli.device import autocast_dtype, resolve_device
from stma_cli.evaluation.datasets import DavisDataset, YouTubeVOSDataset
from stma_cli.evaluation.davis import GLOBAL_COLUMNS, EvaluationResults, evaluate_folder, global_csv_name, sequence_csv_name
from stma_cli.evaluation.submission import write_submission
from stma_cli.hub import load_model
from stma_cli.inference.dataset import predict_dataset
from stma_cli.inference.segmenter import SegmenterConfig


class DatasetFormat(str, enum.Enum):
    """Folder layouts `stma eval` reads."""

    davis = "davis"
    youtube = "youtube"


_DEFAULT_SPLIT = {DatasetFormat.davis: "val", DatasetFormat.youtube: "valid"}


def register(app: typer.Typer) -> None:
    """Add `stma eval` to the application."""
    app.command("eval")(evaluate)


@reporting_errors()
def evaluate(
    root: Path = typer.Argument(..., help="Dataset root (DAVIS: holds JPEGImages, Annotations, ImageSets; YouTube-VOS: holds SPLIT/)."),
    results: Path | None = typer.Option(None, "--results", help="Folder of predicted PNGs to score (DAVIS: SEQ/FRAME.png; YouTube-VOS: Annotations/VID/FRAME.png)."),
    output: Path | None = typer.Option(None, "--output", help="Segment the split with the model first, writing the predictions here, then score them (instead of --results)."),
    dataset_format: DatasetFormat = typer.Option(DatasetFormat.davis, "--format", help="Dataset layout."),
    split: str | None = typer.Option(None, "--split", help="Split to evaluate (default: val for DAVIS, valid for YouTube-VOS)."),
    resolution: str = typer.Option("480p", "--resolution", help="DAVIS resolution folder."),
    sequences: str | None = typer.Option(None, "--sequences", help="Comma-separated sequences to evaluate (default: the whole split)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Processes scoring sequences in parallel (default: one per CPU)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of tables."),
    weights: str | None = typer.Option(None, "--weights", help=f"{WEIGHTS_HELP} With --output."),
    revision: str | None = typer.Option(None, "--revision", help=f"{REVISION_HELP} With --output."),
    mem_size: int = typer.Option(SegmenterConfig.mem_size, "--mem-size", min=2, help="With --output: most memory frames kept."),
    mem_every: int = typer.Option(SegmenterConfig.mem_every, "--mem-every", min=1, help="With --output: a new memory frame every K frames."),
    max_side: int = typer.Option(SegmenterConfig.max_side, "--max-side", min=0, help="With --output: longest side the model sees; 0 keeps the input size."),
    device: str = typer.Option("auto", "--device", help="With --output: auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option(SegmenterConfig.precision, "--precision", help="With --output: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16."),
) -> None:
    """Score predictions with the DAVIS-2017 J&F metrics, or zip them as a YouTube-VOS submission.

    DAVIS: the global and per-sequence CSV tables are written into the results folder, as the official toolkit does.

    YouTube-VOS: RESULTS/submission.zip is written; its scores come from the evaluation server.

    With --output DIR instead of --results, the model first segments the split into DIR from each sequence's given masks, with the settings of `stma segment`.
    """
    if (results is None) == (output is None):
        typer.echo("stma: error: give either --results DIR (existing predictions) or --output DIR (predict, then score)", err=True)
        raise typer.Exit(2)
    split = split or _DEFAULT_SPLIT[dataset_format]
    names = [name.strip() for name in sequences.split(",") if name.strip()] if sequences else None
    if dataset_format is DatasetFormat.youtube:
        dataset: DavisDataset | YouTubeVOSDataset = YouTubeVOSDataset(root, split, names)
    else:
        dataset = DavisDataset(root, split, resolution, names)
    if output is not None:
        config = SegmenterConfig(mem_size=mem_size, mem_every=mem_every, max_side=max_side, precision=precision)
        _predict(dataset, output, weights, revision, device, config)
        results = output
    if isinstance(dataset, YouTubeVOSDataset):
        _pack(dataset, results, as_json)
    else:
        _score(dataset, results, workers, as_json)


def _predict(dataset: DavisDataset | YouTubeVOSDataset, output: Path, weights: str | None, revision: str | None,
             device: str, config: SegmenterConfig) -> None:
    torch_device = resolve_device(device)
    autocast_dtype(torch_device, config.precision)  # a bad precision fails before the model loads
    model, _ = load_model(weights, revision, device=torch_device)
    with _progress("Predicting", len(dataset.sequence_names)) as advance:
        predict_dataset(dataset, output, model, config, progress=advance)


def _score(dataset: DavisDataset, results: Path, workers: int | None, as_json: bool) -> None:
    with _progress("Scoring", len(dataset.sequence_names)) as advance:
        scores = evaluate_folder(dataset, results, workers, on_sequence_done=advance)
    if as_json:
        typer.echo(json.dumps(scores.to_dict(), indent=2))
    else:
        _print_tables(scores, results)


def _pack(dataset: YouTubeVOSDataset, results: Path, as_json: bool) -> None:
    with _progress("Packing", len(dataset.sequence_names)) as advance:
        submission = write_submission(dataset, results, on_video_done=advance)
    if as_json:
        typer.echo(json.dumps({"submission": str(submission.path), "videos": submission.videos, "frames": submission.frames}, indent=2))
    else:
        typer.echo(
            f"Wrote {submission.path} ({submission.videos} videos, {submission.frames} frames). "
            "YouTube-VOS scores are computed by its evaluation server."
        )


@contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr; yields the callback that advances it by one sequence.

    It redraws only when advanced (no refresh thread), so worker processes start from a
    single-threaded parent.
    """
    progress = Progress(
        TextColumn(f"{label} {{task.fields[last]}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        auto_refresh=False,
        transient=True,
    )
    with progress:
        task = progress.add_task(label, total=total, last="")

        def advance(name: str) -> None:
            progress.update(task, advance=1, last=name)
            progress.refresh()

        yield advance


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _number_columns(names: tuple[str, ...]) -> list[Column]:
    return [Column(name, justify="right") for name in names]


def _print_tables(scores: EvaluationResults, results: Path) -> None:
    console = Console()
    overall = Table(*_number_columns(GLOBAL_COLUMNS), title=f"Global results for {scores.split}")
    overall.add_row(*(_cell(v) for v in scores.global_scores().values()))
    per_object = Table("Sequence", *_number_columns(GLOBAL_COLUMNS[1:]), title=f"Per-sequence results for {scores.split}")
    for o in scores.objects:
        per_object.add_row(o.name, *(_cell(v) for v in (o.j.mean, o.j.recall, o.j.decay, o.f.mean, o.f.recall, o.f.decay)))
    console.print(per_object)
    console.print(overall)
    console.print(f"Wrote {results / global_csv_name(scores.split)} and {results / sequence_csv_name(scores.split)}")
