"""`stma eval`: score predictions on DAVIS-2017, or pack them for the YouTube-VOS server."""
from __future__ import annotations

import enum
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from typing import TYPE_CHECKING

import typer

from stma_cli.cli.common import EXIT_USAGE, REVISION_HELP, WEIGHTS_HELP, PlainUsage, reporting_errors
from stma_cli.errors import StmaError
from stma_cli.inference.config import SegmenterConfig
from stma_cli.io.safe_fs import is_within, overlaps

if TYPE_CHECKING:
    from stma_cli.evaluation.datasets import DavisDataset, YouTubeVOSDataset
    from stma_cli.evaluation.davis import EvaluationResults

# The evaluation code (numpy, PyAV, and torch for --output) is imported inside the functions that run it,
# so that `stma --help` and `stma eval --help` do not load it.


class DatasetFormat(str, enum.Enum):
    """Folder layouts `stma eval` reads."""

    davis = "davis"
    youtube = "youtube"


_DEFAULT_SPLIT = {DatasetFormat.davis: "val", DatasetFormat.youtube: "valid"}


def register(app: typer.Typer) -> None:
    """Add `stma eval` to the application."""
    app.command("eval", cls=PlainUsage)(evaluate)


@reporting_errors()
def evaluate(
    root: Path = typer.Argument(..., metavar="ROOT", hidden=True),  # described in the docstring
    results: Path | None = typer.Option(None, "--results", metavar="DIR", help="Folder of predicted PNGs to score (DAVIS: SEQ/FRAME.png; YouTube-VOS: Annotations/VID/FRAME.png)."),
    output: Path | None = typer.Option(None, "--output", metavar="DIR", help="Segment the split with the model first, writing the predictions here, then score them (instead of --results)."),
    dataset_format: DatasetFormat = typer.Option(DatasetFormat.davis, "--format", metavar="davis|youtube", help="Dataset layout."),
    split: str | None = typer.Option(None, "--split", metavar="SPLIT", help="Split to evaluate (default: val for DAVIS, valid for YouTube-VOS)."),
    resolution: str = typer.Option("480p", "--resolution", metavar="RES", help="DAVIS resolution folder."),
    sequences: str | None = typer.Option(None, "--sequences", metavar="A,B,...", help="Comma-separated sequences to evaluate (default: the whole split)."),
    workers: int | None = typer.Option(None, "--workers", min=1, metavar="N", help="Processes scoring sequences in parallel (default: --threads, else one per CPU this process may use)."),
    threads: int | None = typer.Option(None, "--threads", min=1, metavar="N", help="CPU threads of the model with --output (default: OMP_NUM_THREADS, else the CPUs this process may use)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of tables."),
    weights: str | None = typer.Option(None, "--weights", metavar="ID|PATH", help=f"{WEIGHTS_HELP} With --output."),
    revision: str | None = typer.Option(None, "--revision", metavar="REV", help=f"{REVISION_HELP} With --output."),
    mem_size: int = typer.Option(SegmenterConfig.mem_size, "--mem-size", min=2, metavar="N", help="With --output: most memory frames kept."),
    mem_every: int = typer.Option(SegmenterConfig.mem_every, "--mem-every", min=1, metavar="K", help="With --output: a new memory frame every K frames."),
    mem_full: int = typer.Option(SegmenterConfig.mem_full, "--mem-full", min=0, metavar="K", help="With --output: the newest K working memory frames at full resolution, older ones pooled 2x2."),
    max_side: int = typer.Option(SegmenterConfig.max_side, "--max-side", min=0, metavar="PX", help="With --output: longest side the model sees; 0 keeps the input size."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="With --output: auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option(SegmenterConfig.precision, "--precision", metavar="P", help="With --output: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16."),
    mask_format: str = typer.Option("png", "--mask-format", metavar="FORMATS", help="With --output: masks written beside each sequence's palette PNGs (which are always written, to be scored), one or a comma list: coco (masks.json), objects (ID/FRAME.png)."),
) -> None:
    """Score DAVIS-2017 predictions, or pack YouTube-VOS ones.

    ROOT is the dataset folder. DAVIS: it holds JPEGImages, Annotations and ImageSets. YouTube-VOS: it holds SPLIT/.

    DAVIS: the global and per-sequence CSV tables are written into the results folder, as the official toolkit does.

    YouTube-VOS: RESULTS/submission.zip is written; its scores come from the evaluation server.

    With --output DIR instead of --results, the model first segments the split into DIR from each sequence's given masks, with the settings of `stma segment`.
    """
    from stma_cli.evaluation.datasets import DavisDataset, YouTubeVOSDataset, plain_name
    from stma_cli.io.output import parse_mask_formats
    from stma_cli.threads import available_cpus, use_threads

    if (results is None) == (output is None):
        typer.echo("stma: error: give either --results DIR (existing predictions) or --output DIR (predict, then score)", err=True)
        raise typer.Exit(EXIT_USAGE)
    split = plain_name(split or _DEFAULT_SPLIT[dataset_format], Path("--split"), "split")
    names = [name.strip() for name in sequences.split(",") if name.strip()] if sequences else None
    if dataset_format is DatasetFormat.youtube:
        dataset: DavisDataset | YouTubeVOSDataset = YouTubeVOSDataset(root, split, names)
    else:
        dataset = DavisDataset(root, split, resolution, names)
    if output is not None:
        config = SegmenterConfig(mem_size=mem_size, mem_every=mem_every, mem_full=mem_full, max_side=max_side,
                                 precision=precision)
        formats = parse_mask_formats(mask_format)
        use_threads(threads)
        _predict(dataset, output, weights, revision, device, config, formats)
        results = output
    if isinstance(dataset, YouTubeVOSDataset):
        _pack(dataset, results, as_json)
    else:
        _score(dataset, results, workers or threads or available_cpus(), as_json)


def _predict(dataset: DavisDataset | YouTubeVOSDataset, output: Path, weights: str | None, revision: str | None,
             device: str, config: SegmenterConfig, mask_formats: tuple[str, ...]) -> None:
    from stma_cli.device import autocast_dtype, resolve_device
    from stma_cli.hub import load_model
    from stma_cli.inference.dataset import predict_dataset

    _check_output(dataset, output)
    torch_device = resolve_device(device)
    autocast_dtype(torch_device, config.precision)  # a bad precision fails before the model loads
    model, _ = load_model(weights, revision, device=torch_device)
    with _progress("Predicting", len(dataset.sequence_names)) as advance:
        predict_dataset(dataset, output, model, config, progress=advance, mask_formats=mask_formats,
                        copy_model=False)  # the one copy of the weights in memory


def _check_output(dataset: DavisDataset | YouTubeVOSDataset, output: Path) -> None:
    """StmaError unless the predictions of `dataset` can be written under `output` without touching the dataset.

    Real paths are compared: neither `output` nor the folder of a sequence in it may overlap the dataset (its
    annotation, image and root folders, each sequence's folders), even through a link, and no sequence's folder
    may lead out of `output`.
    """
    dataset_folders = [dataset.annotation_dir, dataset.image_dir, dataset.root]
    for folder in dataset_folders:
        if overlaps(output, folder):
            raise StmaError(f"--output {output}: overlaps the dataset's {folder}; the predictions would overwrite "
                            "its files")
    for name in dataset.sequence_names:
        target = dataset.prediction_path(output, name, "frame").parent
        for folder in (dataset.annotation_dir / name, dataset.image_dir / name, *dataset_folders):
            if overlaps(target, folder):
                raise StmaError(f"{target}: leads to {os.path.realpath(target)}, which overlaps the dataset's "
                                f"{folder}; the predictions would overwrite its files")
        if not is_within(target, output):
            raise StmaError(f"{target}: leads to {os.path.realpath(target)}, outside --output {output}; "
                            "stma does not write through links")


def _score(dataset: DavisDataset, results: Path, workers: int | None, as_json: bool) -> None:
    from stma_cli.evaluation.davis import evaluate_folder

    with _progress("Scoring", len(dataset.sequence_names)) as advance:
        scores = evaluate_folder(dataset, results, workers, on_sequence_done=advance)
    if as_json:
        typer.echo(json.dumps(scores.to_dict(), indent=2))
    else:
        _print_tables(scores, results)


def _pack(dataset: YouTubeVOSDataset, results: Path, as_json: bool) -> None:
    from stma_cli.evaluation.submission import write_submission

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
    """A progress bar on stderr when it is a terminal; yields the callback that advances it by one sequence.

    It redraws only when advanced (no refresh thread), so worker processes start from a
    single-threaded parent.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    shown = console.is_terminal  # a log or a pipe gets no bar
    progress = Progress(
        TextColumn(f"{label} {{task.fields[last]}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        auto_refresh=False,
        transient=True,
        disable=not shown,
    )
    with progress if shown else nullcontext():  # started only when shown: rich before 14.3 printed a blank line
        task = progress.add_task(label, total=total, last="")

        def advance(name: str) -> None:
            progress.update(task, advance=1, last=name)
            progress.refresh()

        yield advance


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _number_columns(names: tuple[str, ...]) -> list:
    from rich.table import Column

    return [Column(name, justify="right") for name in names]


def _print_tables(scores: EvaluationResults, results: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from stma_cli.evaluation.davis import GLOBAL_COLUMNS, global_csv_name, sequence_csv_name

    console = Console()
    overall = Table(*_number_columns(GLOBAL_COLUMNS), title=f"Global results for {scores.split}")
    overall.add_row(*(_cell(v) for v in scores.global_scores().values()))
    per_object = Table("Sequence", *_number_columns(GLOBAL_COLUMNS[1:]), title=f"Per-sequence results for {scores.split}")
    for o in scores.objects:
        per_object.add_row(o.name, *(_cell(v) for v in (o.j.mean, o.j.recall, o.j.decay, o.f.mean, o.f.recall, o.f.decay)))
    console.print(per_object)
    console.print(overall)
    console.print(f"Wrote {results / global_csv_name(scores.split)} and {results / sequence_csv_name(scores.split)}")
