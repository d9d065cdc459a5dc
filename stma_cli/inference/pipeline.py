"""One video end to end, and many videos: masks in, output folders out.

`segment_video` reads a video and its masks (`job_masks`), runs the passes of its direction (`passes`)
and writes the output folder (masks, overlay, logits, manifest), with the folder's life cycle: skip a
finished folder, refuse one that holds other results, lock it while it is written. `run_batch` does
that for many videos with one model, going on past a bad video.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from torch.profiler import record_function

from stma_cli.device import PRECISION_NAMES
from stma_cli.errors import StmaError
from stma_cli.inference.job_masks import objects_in_order, read_job_masks
from stma_cli.inference.jobs import VideoJob
from stma_cli.inference.passes import DIRECTIONS, logits_for, logits_shape, presence_for, propagate
from stma_cli.inference.segmenter import Segmenter
from stma_cli.io.background import BackgroundWorker
from stma_cli.io.claim import LOCK_FILE, FolderBusy, claim_folder
from stma_cli.io.exports import COCO_FILE
from stma_cli.io.output import (
    LOGITS,
    MANIFEST,
    MASKS,
    NUMBERED,
    OVERLAY,
    MaskNames,
    VideoOutput,
    clear_for_run,
    inspect_folder,
    is_output_mask,
    mask_outputs,
    read_manifest_or_none,
)
from stma_cli.io.provenance import differences, input_identity, mask_identity
from stma_cli.io.video import VideoSource, frame_files, open_video


@dataclass
class VideoReport:
    """The outcome of one video (one JSON line of `stma segment --json`)."""

    video: str
    output: str
    status: str  # ok, skipped or error
    frames: int = 0
    objects: list[int] = field(default_factory=list)
    seconds: float = 0.0
    fps: float = 0.0
    error: str | None = None
    tracks: dict[str, dict] = field(default_factory=dict)  # per object, as in the manifest (ObjectTracks.summary)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunOptions:
    """Options of a run that are not the model's or the segmenter's.

    `weights_sha256` (of config.json and model.safetensors, `stma_cli.hub.weights_sha256`) goes into the
    manifest's provenance with the model id and revision, so that a folder made by other weights (or
    another config) under the same name is not taken as finished.
    """

    direction: str = "forward"
    overlay: bool = True
    logits: bool = True
    overwrite: bool = False
    mask_formats: tuple[str, ...] = ("png",)  # of MASK_FORMATS (stma_cli.io.output)
    model_id: str = ""
    model_revision: str | None = None
    weights_sha256: str = ""


ProgressCallback = Callable[[int, int | None], None]  # (frames done, total frames or None)


def segment_video(job: VideoJob, segmenter: Segmenter, options: RunOptions,
                  progress: ProgressCallback | None = None) -> VideoReport:
    """Segment one video into its output folder with `segmenter` (reset here); raises StmaError for bad input.

    A folder finished by a run with the same provenance (input, masks, model, settings) is skipped; one
    finished by another run, or holding files stma did not write, is an error unless `options.overwrite`.
    The folder is locked while it is written (StmaError "busy" if another process holds it).
    """
    if options.direction not in DIRECTIONS:
        raise StmaError(f"--direction {options.direction!r}: expected one of {', '.join(DIRECTIONS)}")
    naming = _mask_naming(job.source)
    _check_inputs_are_not_outputs(job, naming)
    provenance = _provenance(job, segmenter, options, input_identity(job.source))
    if provenance is not None:  # known without opening the video: a finished folder is skipped at once
        verdict = _verdict(job, options, provenance, naming)
        if verdict is not None:
            _drop_stale_lock(job.output)
            return verdict
    started = time.perf_counter()
    with open_video(job.source) as video:
        masks, palette, legends = read_job_masks(job, video)
        object_ids = objects_in_order(masks)
        unknown = [(i, frame) for frame, ids in sorted(job.ends.items()) for i in ids if i not in object_ids]
        if unknown:
            raise StmaError(f"--end {unknown[0][0]}:{unknown[0][1]}: no mask has object {unknown[0][0]} (the masks' "
                            f"objects: {', '.join(map(str, object_ids))})")
        num_ids = segmenter.model.config.num_ids
        if not job.ends and len(object_ids) > num_ids:  # without ends, every object is tracked to the end
            first = job.masks[0][1]
            raise StmaError(f"{first}: {len(object_ids)} objects, but the model's ID table holds at most {num_ids}")
        provenance = _provenance(job, segmenter, options, input_identity(job.source, video.content_sha256))
        with claim_folder(job.output) as claim:
            try:  # again, now alone: another process may have finished the folder meanwhile
                verdict = _verdict(job, options, provenance, naming)
            except StmaError:
                claim.leave()
                raise
            if verdict is not None:  # finished: a lock file left by a run killed after its manifest goes too
                claim.finished()
                return verdict
            earlier = [record.get("mask_names") for record in (read_manifest_or_none(job.output), claim.previous)
                       if record]
            claim.record({"provenance": provenance, "mask_names": naming})
            clear_for_run(job.output, [*earlier, naming])
            record = {"provenance": provenance, "mask_names": naming, **({"mask_ids": legends} if legends else {})}
            written = _write(job, video, masks, palette, object_ids, segmenter, options, progress, record, started)
            claim.finished()
    seconds = time.perf_counter() - started
    return VideoReport(job.source, str(job.output), "ok", written["frames"], object_ids, round(seconds, 3),
                       round(written["frames"] / seconds, 3) if seconds > 0 else 0.0, tracks=written["tracks"])


def _write(job: VideoJob, video: VideoSource, masks: dict[int, np.ndarray], palette: list[int] | None,
           object_ids: list[int], segmenter: Segmenter, options: RunOptions,
           progress: ProgressCallback | None, record: dict, started: float) -> dict[str, Any]:
    """Segment the video (or its range of frames) into the claimed folder and finish it; returns the
    manifest written."""
    config = segmenter.config
    first, stop = job.frames
    shape = logits_shape(video.height, video.width, config.max_side)
    attrs = {"model_id": options.model_id, "model_revision": options.model_revision or "", "first_frame": first}
    expected = None if video.frame_names is None else len(video.frame_names[first:stop])
    with VideoOutput(job.output, frame_names=video.frame_names, fps=video.fps, size=(video.width, video.height),
                     palette=palette, object_ids=object_ids, overlay=options.overlay, logits=options.logits,
                     logits_shape=shape, attrs=attrs, first_frame=first, frame_count=expected,
                     mask_formats=options.mask_formats) as output:
        end = first
        # Encoding the outputs overlaps the model: a background thread writes each frame, in order.
        with BackgroundWorker.sink(_labelled_writer(output), depth=4, name="stma-writer") as writer:
            for index, frame, result in propagate(video, job.frames, masks, job.ends, object_ids, segmenter,
                                                   options.direction, job.output):
                labels = result.labels if result is not None else np.zeros(frame.shape[:2], np.uint8)
                given = np.unique(masks[index]) if index in masks else ()
                writer.put((index, frame, labels, presence_for(result, object_ids),
                            logits_for(result, object_ids, shape), [int(i) for i in given if i]))
                end = index + 1
                if progress is not None:
                    progress(end - first, None if video.num_frames is None else min(video.num_frames, stop or
                                                                                    video.num_frames) - first)
        if end == first and job.frames != (0, None):
            raise StmaError(f"{job.source}: --frames {first}:{'' if stop is None else stop} starts after the last "
                            f"frame (the video has {video.num_frames} frames)")
        last_mask = max(masks)
        if last_mask >= end:
            raise StmaError(f"{dict(job.masks)[last_mask]}: mask for frame {last_mask}, but the video has "
                            f"{video.num_frames or end} frames")
        extra = {"frame_range": [first, end]} if job.frames != (0, None) else {}
        extra |= {"ends": {str(frame): ids for frame, ids in sorted(job.ends.items())}} if job.ends else {}
        return output.finish({"model": options.model_id, "revision": options.model_revision,
                              "seconds": round(time.perf_counter() - started, 3),
                              "direction": options.direction, "max_side": config.max_side,
                              "mem_size": config.mem_size, "mem_every": config.mem_every,
                              "mem_full": config.mem_full, **extra, **record})


def _mask_naming(source: str) -> MaskNames:
    """How the output masks of `source` are named: by its frames' stems for a frame folder, else numbered."""
    try:
        return [path.stem for path in frame_files(Path(source))] if Path(source).is_dir() else NUMBERED
    except (OSError, ValueError):
        return NUMBERED


def _check_inputs_are_not_outputs(job: VideoJob, naming: MaskNames) -> None:
    """No input (the video or its frames, a mask) may be a file this run replaces: it would be written over,
    or deleted by --overwrite before it is read. Real paths are compared, so a link to such a file counts too."""
    folder, masks = (Path(os.path.realpath(path)) for path in (job.output, job.output / MASKS))
    replaced = {folder / name for name in (MANIFEST, OVERLAY, LOGITS, LOCK_FILE, COCO_FILE)}
    inputs = [("mask", path) for _, path in job.masks]
    if job.source != "-":
        source = Path(job.source)
        frames = isinstance(naming, list)  # a frame folder: its frames are the input
        inputs += [("frame", path) for path in frame_files(source)] if frames else [("input", source)]
    for what, path in inputs:
        real = Path(os.path.realpath(path))
        in_object_folder = real.parent.parent == masks and real.parent.name.isdecimal()
        if (real.parent == masks or in_object_folder) and is_output_mask(real.name, naming):
            raise StmaError(f"{path}: this {what} is where stma writes its output masks ({job.output / MASKS}); "
                            "move it, or choose another --output")
        if real in replaced:
            raise StmaError(f"{path}: this {what} is where stma writes its output ({job.output / real.name}); "
                            "move it, or choose another --output")


def _provenance(job: VideoJob, segmenter: Segmenter, options: RunOptions, source: dict | None) -> dict | None:
    """The provenance of this video's results (see stma_cli.io.provenance), or None if not known yet."""
    masks = mask_identity(job.masks)
    if source is None or masks is None:
        return None
    config = segmenter.config
    settings = {"direction": options.direction, "max_side": config.max_side, "mem_size": config.mem_size,
                "mem_every": config.mem_every, "precision": PRECISION_NAMES[segmenter.dtype]}
    if config.mem_full < config.mem_size - 1:  # older working frames are pooled (never at the defaults)
        settings["mem_full"] = config.mem_full
    if job.frames != (0, None):
        settings["frames"] = list(job.frames)
    if job.ends:
        settings["ends"] = {str(frame): sorted(ids) for frame, ids in sorted(job.ends.items())}
    if job.coco_image_id is not None:
        settings["coco_image_id"] = job.coco_image_id
    return {
        "input": source,
        "masks": masks,
        "model": {"id": options.model_id, "revision": options.model_revision, "sha256": options.weights_sha256},
        "settings": settings,
        "outputs": mask_outputs(options.mask_formats) +
                   [name for name, on in ((OVERLAY, options.overlay), (LOGITS, options.logits)) if on],
    }


def _drop_stale_lock(folder: Path) -> None:
    """Remove the lock file that a run killed between its manifest and the end left in a finished folder.
    One that another process holds stays: that process removes it, or records its own run in it."""
    if not (folder / LOCK_FILE).exists():
        return
    try:
        with claim_folder(folder) as claim:
            if read_manifest_or_none(folder) is not None:
                claim.finished()
            else:  # replaced meanwhile by a run that did not finish: its record stays for the next run
                claim.leave()
    except FolderBusy:
        pass


def _verdict(job: VideoJob, options: RunOptions, provenance: dict, naming: MaskNames) -> VideoReport | None:
    """A report if the folder is not to be written: `skipped` when it holds these very results; StmaError
    when it holds other results or files stma did not write (without --overwrite). None: write it."""
    state = inspect_folder(job.output, naming)
    if state.manifest is not None:
        different = differences(state.manifest.get("provenance"), provenance)
        if not different and not options.overwrite:
            manifest = state.manifest
            return VideoReport(job.source, str(job.output), "skipped", manifest.get("frames", 0),
                               manifest.get("objects", []), manifest.get("seconds", 0.0),
                               tracks=manifest.get("tracks", {}))
        if different and not options.overwrite:
            raise StmaError(f"{job.output}: holds the finished results of another run ({'; '.join(different)}); "
                            "--overwrite replaces them")
    elif state.foreign and not options.overwrite:
        raise StmaError(f"{job.output}: holds {', '.join(state.foreign)}, not written by stma; "
                        "--overwrite replaces them, or choose another --output")
    return None


def run_batch(jobs: Iterable[VideoJob], segmenter: Segmenter, options: RunOptions,
              on_start: Callable[[VideoJob], None] | None = None,
              on_report: Callable[[VideoReport], None] | None = None,
              progress: ProgressCallback | None = None) -> list[VideoReport]:
    """Segment many videos with one Segmenter (one copy of the model), reset for each video and pass.

    Whatever goes wrong with one video (bad input, a full disk, out of memory, even a bug) becomes its
    `error` report, and the batch goes on; only KeyboardInterrupt (Ctrl-C, or SIGTERM in the CLI) stops it.
    """
    reports = []
    for job in jobs:
        if on_start is not None:
            on_start(job)
        try:
            if job.error is not None:
                raise StmaError(job.error)
            report = segment_video(job, segmenter, options, progress)
        except Exception as error:  # noqa: BLE001 - every failure is reported, in one line, as the video's
            report = VideoReport(job.source, str(job.output), "error", error=describe_error(error, job.source))
        reports.append(report)
        if on_report is not None:
            on_report(report)
    return reports


def describe_error(error: Exception, source: str) -> str:
    """One line that names the file at fault: StmaError as it is; other errors are prefixed with `source`
    (or the file an OSError names) and say what they are."""
    if isinstance(error, StmaError):
        text = str(error)
    elif isinstance(error, OSError):
        names = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
        text = f"{names or source}: {error.strerror or error}"
    elif isinstance(error, MemoryError):
        text = f"{source}: out of memory"
    else:
        text = f"{source}: unexpected error: {type(error).__name__}: {error}"
    return " ".join(text.splitlines())


# -- internals -----------------------------------------------------------------------------------


def _labelled_writer(output: VideoOutput) -> Callable[..., None]:
    """`output.write`, labelled as the stage "stma.writing" for the profiler (see benchmarks/segment_speed.py)."""

    def write(*frame_outputs: object) -> None:
        with record_function("stma.writing"):
            output.write(*frame_outputs)

    return write


