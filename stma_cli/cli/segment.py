"""`stma segment`: follow objects through one video or thousands.

The library (and with it torch and PyAV) is imported when the command runs, not when its help is shown.
"""
from __future__ import annotations

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer

from stma_cli.cli.common import (EXIT_CODES_HELP, EXIT_SOME_FAILED, EXIT_USAGE, WEIGHTS_HELP, reporting_errors,
                               sigterm_held, stop)
from stma_cli.errors import StmaError
from stma_cli.inference.config import SegmenterConfig


def segment(
    videos: Optional[list[str]] = typer.Argument(
        None, metavar="VIDEO", hidden=True, show_default=False),  # described in the docstring
    mask: Optional[list[str]] = typer.Option(
        None, "--mask", "-m", metavar="[FRAME:]PATH", show_default=False,
        help="Mask of the first frame, or FRAME:PATH for objects that appear later (repeatable): a palette, "
             "grayscale or colour image, or a LabelMe or COCO JSON file."),
    mask_template: Optional[str] = typer.Option(
        None, metavar="TEMPLATE",
        help="Each video's masks from its name (relative to the video's folder; fields {stem}, {name}, "
             "{parent}, {frame}): a file for the first frame, e.g. '{stem}.png'; a folder of masks named by "
             "frame, e.g. '../Annotations/{stem}' (DAVIS, YouTube-VOS: objects start where they first "
             "appear); '{stem}_{frame}.png'; or a COCO file with one image per frame."),
    recursive: bool = typer.Option(False, "--recursive", "-r",
                                   help="Find videos and frame folders in folders at any depth, not only one "
                                        "level down."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", metavar="DIR",
        help="Output folder: for one video named on the command line, its own folder; otherwise (a folder of "
             "videos, several videos, paths on standard input) the parent of one folder per video "
             "(default: stma_output/, one folder per video)."),
    name_template: Optional[str] = typer.Option(
        None, metavar="TEMPLATE",
        help="Each video's folder under --output, e.g. '{parent}/{stem}' for videos with the same name in "
             "different folders (fields {stem}, {name}, {parent}, {index}; default '{stem}')."),
    frames: Optional[str] = typer.Option(
        None, metavar="START:END",
        help="Segment only frames START to END-1 (0-based; either may be left out, e.g. 100: or :200). Masks "
             "keep the video's frame numbers; a mask without FRAME: is for START."),
    coco_image_id: Optional[int] = typer.Option(
        None, metavar="ID",
        help="The image of COCO mask files to use, when a file holds several and none is named after the "
             "mask's frame."),
    end: Optional[list[str]] = typer.Option(
        None, "--end", metavar="ID:FRAME", show_default=False,
        help="Object ID ends at a cut just before FRAME, e.g. a scene cut: it is not followed onto FRAME and "
             "later frames (nor, going backward, before FRAME). A later mask may give the id again, for a new "
             "object (repeatable)."),
    weights: Optional[str] = typer.Option(None, metavar="ID|PATH", help=WEIGHTS_HELP),
    revision: Optional[str] = typer.Option(None, metavar="REV", help="Hub branch, tag or commit (default: main)."),
    mem_size: int = typer.Option(SegmenterConfig.mem_size, min=2, metavar="N",
                                 help="Most memory frames kept: the annotated frame, the previous frame and every "
                                      "K-th frame in between (bounds memory use)."),
    mem_every: int = typer.Option(SegmenterConfig.mem_every, min=1, metavar="K",
                                  help="A new memory frame every K frames."),
    mem_full: int = typer.Option(SegmenterConfig.mem_full, min=0, metavar="K",
                                 help="The newest K working memory frames are kept at full resolution; older ones "
                                      "are pooled 2x2, at a quarter of the cost."),
    max_side: int = typer.Option(SegmenterConfig.max_side, min=0, metavar="PX",
                                 help="Longest side the model sees; 0 keeps the input size."),
    direction: str = typer.Option("forward", metavar="DIR",
                                  help="forward: from the first mask to the end; backward: from the last mask "
                                       "back to frame 0; both: the two."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N."),
    threads: Optional[int] = typer.Option(
        None, min=1, metavar="N",
        help="CPU threads (default: OMP_NUM_THREADS, else the CPUs this process may use: its affinity and "
             "CPU quota). Under xargs -P K, give each process its share."),
    precision: str = typer.Option(SegmenterConfig.precision, metavar="P",
                                  help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16."),
    overlay: bool = typer.Option(True, "--overlay/--no-overlay", help="Write overlay.mp4."),
    logits: bool = typer.Option(True, "--logits/--no-logits", help="Write logits.h5."),
    mask_format: str = typer.Option(
        "png", metavar="FORMATS",
        help="How masks are written, one or a comma list: png (masks/NAME.png, a palette PNG per frame), coco "
             "(masks.json, COCO RLE per frame and object), objects (masks/ID/NAME.png, a black-and-white PNG "
             "per object and frame)."),
    json_lines: bool = typer.Option(False, "--json", help="One JSON line per video on stdout, nothing else there."),
    shard: Optional[str] = typer.Option(
        None, metavar="K/N",
        help="Process every N-th video from the K-th (0-based). Default: from torchrun (RANK, WORLD_SIZE) or a "
             "SLURM array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT), else all."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Redo videos whose output folder is finished, or holds the results of "
                                        "another run or files stma did not write (only stma's own file names are "
                                        "replaced)."),
) -> None:
    """Segment videos from the masks of their objects.

    Each video gets a folder with masks/ (a palette PNG per frame; see --mask-format), overlay.mp4,
    logits.h5 and manifest.json.

    Each VIDEO is a video file, a folder of frames, a folder of videos or frame folders, or '-' for
    a video on standard input. With no VIDEO, paths are read from standard input, one per line.
    """
    from rich.console import Console

    with sigterm_held():
        from stma_cli.device import PRECISIONS, autocast_dtype, resolve_device
        from stma_cli.hub import load_model, weights_sha256
        from stma_cli.inference.jobs import Shard, build_jobs, expand_inputs, local_device, parse_ends, parse_frames
        from stma_cli.inference.passes import DIRECTIONS
        from stma_cli.inference.pipeline import RunOptions
        from stma_cli.inference.segmenter import Segmenter
        from stma_cli.io.output import parse_mask_formats
        from stma_cli.threads import use_threads

    err = Console(stderr=True, soft_wrap=True)  # one message, one line, whatever the terminal width
    try:
        inputs = list(videos or [])
        listed = not inputs and not sys.stdin.isatty()
        if listed:
            inputs = _paths_on_stdin()
        expanded = expand_inputs(inputs, recursive)
        jobs = build_jobs(expanded, list(mask or []), mask_template, output,
                          own_folder=not listed and expanded == inputs, name_template=name_template,
                          frames=parse_frames(frames), ends=parse_ends(end or []), coco_image_id=coco_image_id)
        selected = (Shard.parse(shard) if shard else Shard.from_environment()).select(jobs)
        if direction not in DIRECTIONS:
            raise StmaError(f"--direction {direction!r}: expected one of {', '.join(DIRECTIONS)}")
        if precision not in PRECISIONS:
            raise StmaError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        mask_formats = parse_mask_formats(mask_format)
    except StmaError as error:
        err.print(f"stma: error: {error}", markup=False, highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt as interrupt:
        stop(interrupt)

    with reporting_errors():
        use_threads(threads)
        torch_device = resolve_device(local_device(device))
        autocast_dtype(torch_device, precision)  # fp16 without CUDA fails here, before any video
        model, resolved = load_model(weights, revision, device=torch_device)
        config = SegmenterConfig(mem_size=mem_size, mem_every=mem_every, mem_full=mem_full, max_side=max_side,
                                 precision=precision)
        segmenter = Segmenter(model, config, copy_model=False)  # the one model in memory, reset for each video
        options = RunOptions(direction=direction, overlay=overlay, logits=logits, overwrite=overwrite,
                             mask_formats=mask_formats, model_id=resolved.model_id, model_revision=resolved.revision,
                             weights_sha256=weights_sha256(resolved.path))
        current: list[str] = []
        try:
            reports = _run(selected, segmenter, options, json_lines, err, current)
        except KeyboardInterrupt as interrupt:
            stop(interrupt, f"segmenting {current[-1]} (finished videos are kept)" if current else None)
    failed = [r for r in reports if r.status == "error"]
    done = sum(r.status == "ok" for r in reports)
    skipped = sum(r.status == "skipped" for r in reports)
    err.print(f"stma: {done} done, {skipped} skipped, {len(failed)} failed", markup=False, highlight=False)
    for report in failed:
        err.print(f"stma: error: {report.error}", markup=False, highlight=False)
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _paths_on_stdin() -> list[str]:
    """Paths on standard input, one per line, as the bytes the file system uses (any encoding)."""
    return [os.fsdecode(line.strip()) for line in sys.stdin.buffer if line.strip()]


def _run(jobs, segmenter, options, json_lines: bool, err, current: list[str]) -> list:  # noqa: ANN001
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from stma_cli.inference.pipeline import VideoReport, run_batch

    def emit(report: VideoReport) -> None:
        if json_lines:
            sys.stdout.write(json.dumps(report.to_dict()) + "\n")
            sys.stdout.flush()
        elif report.status == "ok":
            err.print(f"{report.video}: {report.frames} frames, {report.fps:.2f} fps -> {report.output}",
                      markup=False, highlight=False)

    show = err.is_terminal and not json_lines
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=err, disable=not show, transient=True)
    with progress if show else nullcontext():  # started only when shown: rich before 14.3 printed a blank line
        videos = progress.add_task("videos", total=len(jobs))
        frames = progress.add_task("frames", total=None)

        def on_start(job) -> None:
            current.append(job.source)
            progress.reset(frames, total=None, description=Path(job.source).name or "stdin")

        def on_report(report: VideoReport) -> None:
            progress.advance(videos)
            emit(report)

        def on_frame(done: int, total: int | None) -> None:
            progress.update(frames, completed=done, total=total)

        return run_batch(jobs, segmenter, options, on_start=on_start, on_report=on_report, progress=on_frame)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("segment", epilog=EXIT_CODES_HELP)(segment)
