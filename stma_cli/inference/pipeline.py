"""One video end to end, and many videos: masks in, output folders out.

`segment_video` reads a video and its masks, drives a `Segmenter` through the frames and writes the
output folder (masks, overlay, logits, manifest). `run_batch` does that for many videos with one
model, skipping finished folders and going on past a bad video.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch.profiler import record_function

from stma_cli.device import PRECISION_NAMES
from stma_cli.errors import StmaError
from stma_cli.inference.jobs import VideoJob
from stma_cli.inference.segmenter import FrameResult, Segmenter, frame_result, keep_given_mask, processing_size
from stma_cli.io.atomic import temporary_path
from stma_cli.io.background import BackgroundWorker
from stma_cli.io.masks import Numbering, palette_keeping_colours, read_mask
from stma_cli.io.claim import LOCK_FILE, claim_folder
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
from stma_cli.io.exports import COCO_FILE
from stma_cli.io.provenance import differences, input_identity, mask_identity
from stma_cli.io.video import VideoSource, frame_files, open_video
from stma_cli.model import LOGIT_STRIDE

DIRECTIONS = ("forward", "backward", "both")
ABSENT = -1e4  # logit of an object on frames before it appears


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
            return verdict
    started = time.perf_counter()
    with open_video(job.source) as video:
        masks, palette, legends = _read_masks(job, video)
        object_ids = _objects_in_order(masks)
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
            if verdict is not None:
                claim.leave()
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
    logits_shape = _logits_shape(video.height, video.width, config.max_side)
    attrs = {"model_id": options.model_id, "model_revision": options.model_revision or "", "first_frame": first}
    expected = None if video.frame_names is None else len(video.frame_names[first:stop])
    with VideoOutput(job.output, frame_names=video.frame_names, fps=video.fps, size=(video.width, video.height),
                     palette=palette, object_ids=object_ids, overlay=options.overlay, logits=options.logits,
                     logits_shape=logits_shape, attrs=attrs, first_frame=first, frame_count=expected,
                     mask_formats=options.mask_formats) as output:
        end = first
        # Encoding the outputs overlaps the model: a background thread writes each frame, in order.
        with BackgroundWorker.sink(_labelled_writer(output), depth=4, name="stma-writer") as writer:
            for index, frame, result in _propagate(video, job.frames, masks, job.ends, object_ids, segmenter,
                                                   options.direction, job.output):
                labels = result.labels if result is not None else np.zeros(frame.shape[:2], np.uint8)
                writer.put((index, frame, labels, _presence_for(result, object_ids),
                            _logits_for(result, object_ids, logits_shape)))
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
                              "mem_size": config.mem_size, "mem_every": config.mem_every, **extra, **record})


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


def _read_masks(job: VideoJob, video: VideoSource) -> tuple[dict[int, np.ndarray], list[int] | None,
                                                               dict[str, dict[str, int]]]:
    """Masks by frame index (checked against the frame size), the palette to reuse, and how stma numbered
    the objects of colour and JSON masks (by mask file; the masks are read in frame order, see Numbering)."""
    if not job.masks:
        raise StmaError(f"{job.source}: no mask given (use --mask or --mask-template)")
    masks: dict[int, np.ndarray] = {}
    palette = None
    numbering, legends = Numbering(), {}
    start, stop = job.frames
    for frame, path in sorted(job.masks, key=lambda given: given[0]):
        if frame < start or (stop is not None and frame >= stop):
            raise StmaError(f"{path}: mask for frame {frame}, outside --frames {start}:{'' if stop is None else stop}")
        if video.num_frames is not None and frame >= video.num_frames:
            raise StmaError(f"{path}: mask for frame {frame}, but the video has {video.num_frames} frames")
        names = video.frame_names
        mask = read_mask(path, size=(video.width, video.height), numbering=numbering, frame_index=frame,
                         frame_name=names[frame] if names is not None and frame < len(names) else None,
                         coco_image_id=job.coco_image_id)
        if mask.legend:
            legends[str(path)] = mask.legend
        if frame in masks:
            merged = masks[frame].copy()
            merged[mask.labels != 0] = mask.labels[mask.labels != 0]
            masks[frame] = merged
        else:
            masks[frame] = mask.labels
        palette = palette or mask.palette
    return masks, palette_keeping_colours(palette, legends.values()), legends


def _objects_in_order(masks: dict[int, np.ndarray]) -> list[int]:
    """Object ids in order of first appearance (frame, then id)."""
    ids: list[int] = []
    for frame in sorted(masks):
        ids += [int(i) for i in np.unique(masks[frame]) if i != 0 and int(i) not in ids]
    return ids


def _logits_for(result: FrameResult | None, object_ids: list[int], shape: tuple[int, int]) -> np.ndarray:
    """Logits (1+K, H', W') in the output's object order; objects not yet seen get ABSENT."""
    out = np.full((len(object_ids) + 1, *shape), ABSENT, dtype=np.float32)
    if result is None:
        out[0] = 0
        return out
    logits = result.logits.numpy()
    out[0] = logits[0]
    for channel, object_id in enumerate(result.object_ids, start=1):
        out[object_ids.index(object_id) + 1] = logits[channel]
    return out


def _presence_for(result: FrameResult | None, object_ids: list[int]) -> np.ndarray:
    """Presence probabilities (K,) in the output's object order; objects not yet seen (or no result) get 0."""
    out = np.zeros(len(object_ids), dtype=np.float32)
    if result is not None:
        for position, object_id in enumerate(result.object_ids):
            out[object_ids.index(object_id)] = result.presence[position]
    return out


@dataclass(frozen=True)
class Pass:
    """One run of a Segmenter through the video: from frame `start`, forward to the last frame or
    backward (`reverse`) to the first, taking up the masks given on the frames it crosses and ending
    the objects of `ends` (frame: ids) at the cut just before that frame."""

    start: int
    reverse: bool
    masks: dict[int, np.ndarray]
    ends: dict[int, list[int]] = field(default_factory=dict)

    def ending(self, index: int) -> list[int]:
        """The objects to remove before frame `index`: forward, those that end at it; backward, those
        that end at the next frame (the cut lies between the two)."""
        return self.ends.get(index + 1 if self.reverse else index, [])


def plan_passes(direction: str, masks: dict[int, np.ndarray], ends: dict[int, list[int]] | None = None) -> list[Pass]:
    """The passes of a direction, in the order they run.

    forward: one pass from the first mask to the end. backward: one pass from the last mask to frame 0.
    both: the backward pass, then the forward pass; on the frames both cross, each object is taken from
    the pass whose latest mask of that object is nearest (the forward pass on a tie), of those that follow
    the object there (an end between a mask and the frame stops a pass following it).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}: expected one of {', '.join(DIRECTIONS)}")
    passes = []
    if direction in ("backward", "both"):
        passes.append(Pass(max(masks), True, masks, ends or {}))
    if direction in ("forward", "both"):
        passes.append(Pass(min(masks), False, masks, ends or {}))
    return passes


def run_pass(plan: Pass, frames: Iterable[tuple[int, np.ndarray]], segmenter: Segmenter,
             name: str) -> Iterator[tuple[int, np.ndarray, FrameResult]]:
    """Segment `frames`, (index, frame) pairs from `plan.start` in the pass's order, with `segmenter`
    (reset first); errors name the video `name` and the frame."""
    segmenter.reset()
    for index, frame in frames:
        segmenter.remove(plan.ending(index))
        try:
            result = segmenter.step(frame, plan.masks.get(index))
        except StmaError as error:
            raise StmaError(f"{name}: frame {index}: {error}") from None
        yield index, frame, result


class _DiskArray:
    """Equal-sized arrays kept in a new scratch file, so that a long stretch of frames does not fill the RAM;
    appended one by one, or written at any index once `allocate`d.

    Plain reads and writes, no memory map: a full disk is a StmaError where it happens (a page of a map
    that cannot be written kills the process with SIGBUS), and `allocate` reserves its space at once.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: type) -> None:
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)
        self.item_bytes = self.dtype.itemsize * math.prod(shape)
        self.count = 0
        with self._reporting("create"):
            self._file = open(path, "x+b", buffering=0)  # "x": a new file, never a link stma did not make

    def append(self, item: np.ndarray) -> None:
        self[self.count] = item
        self.count += 1

    def allocate(self, count: int) -> None:
        """Make room for `count` items, their space reserved on disk now: a full disk fails here, not midway."""
        if hasattr(os, "posix_fallocate"):  # where there is none (macOS), a full disk fails the writes
            with self._reporting("reserve space for"):
                os.posix_fallocate(self._file.fileno(), 0, count * self.item_bytes)
        self.count = count

    def __getitem__(self, index: int) -> np.ndarray:
        item = np.empty(self.shape, self.dtype)
        with self._reporting("read"):
            self._file.seek(index * self.item_bytes)
            if self._file.readinto(item) != self.item_bytes:
                raise OSError(f"item {index} is cut short")
        return item

    def __setitem__(self, index: int, item: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(item, self.dtype)).cast("B")
        with self._reporting("write"):
            self._file.seek(index * self.item_bytes)
            while data:
                data = data[self._file.write(data):]

    @contextlib.contextmanager
    def _reporting(self, doing: str) -> Iterator[None]:
        """OSError (a full disk: ENOSPC) as a StmaError naming the file."""
        try:
            yield
        except OSError as exc:
            raise StmaError(f"{self.path}: cannot {doing} the scratch file of the backward pass "
                            f"({exc.strerror or exc})") from None

    def close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def _propagate(video: VideoSource, frame_range: tuple[int, int | None], masks: dict[int, np.ndarray],
               ends: dict[int, list[int]], object_ids: list[int], segmenter: Segmenter, direction: str,
               scratch: Path) -> Iterator[tuple[int, np.ndarray, FrameResult | None]]:
    """(index, frame, result) for every frame of `frame_range` in order; result None where no object is tracked.

    Runs the passes of `plan_passes`. A backward pass needs the frames up to its start at once: they are
    kept in a scratch file in `scratch` (removed at the end), with the backward results, so that a long
    stretch does not fill the memory.
    """
    config = segmenter.config
    passes = plan_passes(direction, masks, ends)
    backward = next((p for p in passes if p.reverse), None)
    forward = next((p for p in passes if not p.reverse), None)
    first = frame_range[0]
    frames: Iterator[tuple[int, np.ndarray]] = video.read(*frame_range)
    if backward is None:
        assert forward is not None
        for index, frame in frames:
            if index == forward.start:
                yield from run_pass(forward, itertools.chain([(index, frame)], frames), segmenter, video.name)
                return
            yield index, frame, None
        return
    with contextlib.ExitStack() as stack:
        buffer = _scratch_array(stack, scratch, "frames", (video.height, video.width, 3), np.uint8)
        for index, frame in frames:
            buffer.append(frame)
            if index == backward.start:
                break
        if first + buffer.count <= backward.start:
            return  # the video ends before the last mask: the caller reports it
        labels = _scratch_array(stack, scratch, "labels", (video.height, video.width), np.uint8)
        labels.allocate(buffer.count)
        shape = _logits_shape(video.height, video.width, config.max_side)
        logits = _scratch_array(stack, scratch, "logits", (len(object_ids) + 1, *shape), np.float32)
        logits.allocate(buffer.count)
        presence: dict[int, np.ndarray] = {}  # frames x objects: small enough to keep in memory
        for index, _, result in run_pass(backward, ((i, buffer[i - first]) for i in range(backward.start, first - 1, -1)),
                                         segmenter, video.name):
            labels[index - first] = result.labels
            logits[index - first] = _logits_for(result, object_ids, shape)
            presence[index] = _presence_for(result, object_ids)

        def behind(index: int) -> FrameResult:
            return FrameResult(labels[index - first], torch.from_numpy(logits[index - first]), object_ids,
                               presence[index])

        buffered = range(first, first + buffer.count)
        if forward is None:
            for index in buffered:
                yield index, buffer[index - first], behind(index)
            yield from ((index, frame, None) for index, frame in frames)
            return
        for index in range(first, forward.start):
            yield index, buffer[index - first], behind(index)
        ahead = itertools.chain(((i, buffer[i - first]) for i in range(forward.start, buffered.stop)), frames)
        choose = _NearestMask(masks, ends, object_ids)
        for index, frame, result in run_pass(forward, ahead, segmenter, video.name):
            if index <= backward.start:
                result = _merge(result, behind(index), choose.backward_objects(index), masks.get(index),
                                (video.height, video.width), config.max_side)
            yield index, frame, result


def _scratch_array(stack: contextlib.ExitStack, folder: Path, name: str, shape: tuple[int, ...],
                   dtype: type) -> _DiskArray:
    array = _DiskArray(temporary_path(folder / f"{name}.npy"), shape, dtype)
    stack.callback(array.close)
    return array


def _logits_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(H', W') of the stride-4 logits of a frame."""
    ph, pw = processing_size(height, width, max_side)
    return math.ceil(ph / LOGIT_STRIDE), math.ceil(pw / LOGIT_STRIDE)


class _NearestMask:
    """For a frame crossed by both passes, which objects the backward pass gives: those it follows there
    (no end of the object between the frame and its next mask) and, if the forward pass follows them too,
    whose next mask (at or after the frame) is nearer than their last mask (at or before it)."""

    def __init__(self, masks: dict[int, np.ndarray], ends: dict[int, list[int]], object_ids: list[int]) -> None:
        self.given = {i: sorted(f for f, m in masks.items() if (m == i).any()) for i in object_ids}
        self.cuts = {i: [frame for frame, ids in ends.items() if i in ids] for i in object_ids}

    def backward_objects(self, index: int) -> list[int]:
        chosen = []
        for object_id, frames in self.given.items():
            before = max((f for f in frames if f <= index), default=None)
            after = min((f for f in frames if f >= index), default=None)
            cuts = self.cuts[object_id]
            ahead_follows = before is not None and not any(before < cut <= index for cut in cuts)
            behind_follows = after is not None and not any(index < cut <= after for cut in cuts)
            if behind_follows and (not ahead_follows or after - index < index - before):
                chosen.append(object_id)
        return chosen


def _merge(ahead: FrameResult, behind: FrameResult, from_behind: list[int], mask: np.ndarray | None,
           size: tuple[int, int], max_side: int) -> FrameResult:
    """One frame from the two passes: the objects `from_behind` from the backward pass, the others from
    the forward pass, combined as probabilities (renormalised where they overlap)."""
    if not from_behind:
        return ahead
    object_ids = behind.object_ids
    own = _logits_for(ahead, object_ids, tuple(behind.logits.shape[1:]))
    probs_ahead = torch.from_numpy(own).softmax(0)
    probs_behind = behind.logits.softmax(0)
    take = torch.tensor([0] + [int(i in from_behind) for i in object_ids], dtype=torch.bool)[:, None, None]
    probs = torch.where(take, probs_behind, probs_ahead)
    objects = probs[1:].sum(0, keepdim=True)
    probs[1:] /= objects.clamp(min=1)
    probs[0] = (1 - probs[1:].sum(0)).clamp(min=0)
    own_presence = _presence_for(ahead, object_ids)
    presence = np.where(take[1:, 0, 0].numpy(), behind.presence, own_presence)
    merged = frame_result(torch.log(probs.clamp(min=1e-4))[None], object_ids,
                          processing_size(*size, max_side), size, torch.from_numpy(presence))
    if mask is not None:  # as on every frame that holds one
        keep_given_mask(merged.labels, mask)
    return merged
