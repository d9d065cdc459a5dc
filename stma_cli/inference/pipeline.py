"""One video end to end, and many videos: masks in, output folders out.

`segment_video` reads a video and its masks, drives a `Segmenter` through the frames and writes the
output folder (masks, overlay, logits, manifest). `run_batch` does that for many videos with one
model, skipping finished folders and going on past a bad video.
"""
from __future__ import annotations

import itertools
import math
import queue
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from stma_cli import __version__
from stma_cli.errors import StmaError
from stma_cli.inference.segmenter import FrameResult, Segmenter, SegmenterConfig, processing_size
from stma_cli.io.masks import read_mask
from stma_cli.io.output import VideoOutput, is_finished, read_manifest
from stma_cli.io.video import VideoSource, open_video
from stma_cli.model import LOGIT_STRIDE, STMA

DIRECTIONS = ("forward", "backward", "both")
ABSENT = -1e4  # logit of an object on frames before it appears


@dataclass
class VideoJob:
    """One video to segment: its source, its masks as (frame, path), and its output folder."""

    source: str
    masks: list[tuple[int, Path]]
    output: Path


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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunOptions:
    """Options of a run that are not the model's or the segmenter's."""

    direction: str = "forward"
    overlay: bool = True
    logits: bool = True
    overwrite: bool = False
    model_id: str = ""
    model_revision: str | None = None


ProgressCallback = Callable[[int, int | None], None]  # (frames done, total frames or None)


def segment_video(job: VideoJob, model: STMA, segmenter_config: SegmenterConfig, options: RunOptions,
                  progress: ProgressCallback | None = None) -> VideoReport:
    """Segment one video into its output folder; raises StmaError for bad input."""
    if not options.overwrite and is_finished(job.output):
        manifest = read_manifest(job.output)
        return VideoReport(job.source, str(job.output), "skipped", manifest.get("frames", 0),
                           manifest.get("objects", []), manifest.get("seconds", 0.0))
    if options.direction not in DIRECTIONS:
        raise StmaError(f"--direction {options.direction!r}: expected one of {', '.join(DIRECTIONS)}")
    started = time.perf_counter()
    with open_video(job.source) as video:
        masks, palette = _read_masks(job, video)
        object_ids = _objects_in_order(masks)
        if len(object_ids) > model.config.num_ids:
            first = job.masks[0][1]
            raise StmaError(f"{first}: {len(object_ids)} objects, but the model's ID table holds at most "
                            f"{model.config.num_ids}")
        ph, pw = processing_size(video.height, video.width, segmenter_config.max_side)
        logits_shape = (math.ceil(ph / LOGIT_STRIDE), math.ceil(pw / LOGIT_STRIDE))
        attrs = {"model_id": options.model_id, "model_revision": options.model_revision or ""}
        with VideoOutput(job.output, frame_names=video.frame_names, fps=video.fps, size=(video.width, video.height),
                         palette=palette, object_ids=object_ids, overlay=options.overlay, logits=options.logits,
                         logits_shape=logits_shape, attrs=attrs) as output:
            frames = 0
            with _BackgroundWriter(output) as writer:
                for index, frame, result in _propagate(video, masks, model, segmenter_config, options.direction):
                    labels = result.labels if result is not None else np.zeros(frame.shape[:2], np.uint8)
                    writer.write(index, frame, labels, _logits_for(result, object_ids, logits_shape))
                    frames = index + 1
                    if progress is not None:
                        progress(frames, video.num_frames)
            last_mask = max(masks)
            if last_mask >= frames:
                raise StmaError(f"{dict(job.masks)[last_mask]}: mask for frame {last_mask}, but the video has "
                                f"{frames} frames")
            seconds = time.perf_counter() - started
            output.finish({"model": options.model_id, "revision": options.model_revision,
                           "seconds": round(seconds, 3), "stma_version": __version__,
                           "direction": options.direction, "max_side": segmenter_config.max_side,
                           "mem_size": segmenter_config.mem_size, "mem_every": segmenter_config.mem_every})
    return VideoReport(job.source, str(job.output), "ok", frames, object_ids, round(seconds, 3),
                       round(frames / seconds, 3) if seconds > 0 else 0.0)


def run_batch(jobs: Iterable[VideoJob], model: STMA, segmenter_config: SegmenterConfig, options: RunOptions,
              on_start: Callable[[VideoJob], None] | None = None,
              on_report: Callable[[VideoReport], None] | None = None,
              progress: ProgressCallback | None = None) -> list[VideoReport]:
    """Segment many videos with one model; a bad video gives an `error` report and the batch goes on."""
    reports = []
    for job in jobs:
        if on_start is not None:
            on_start(job)
        try:
            report = segment_video(job, model, segmenter_config, options, progress)
        except StmaError as exc:
            report = VideoReport(job.source, str(job.output), "error", error=str(exc))
        reports.append(report)
        if on_report is not None:
            on_report(report)
    return reports


# -- internals -----------------------------------------------------------------------------------


class _BackgroundWriter:
    """Runs `VideoOutput.write` in a thread, so that encoding the outputs overlaps the model.

    Frames are written in the order given; the first write error is raised in the caller, at its
    next `write` or when the block ends.
    """

    def __init__(self, output: VideoOutput, depth: int = 4) -> None:
        self._output = output
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="stma-writer", daemon=True)

    def __enter__(self) -> "_BackgroundWriter":
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc_type is None:
            self._raise_error()

    def write(self, *frame_outputs) -> None:
        self._raise_error()
        self._queue.put(frame_outputs)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._output.write(*item)
                except BaseException as error:  # re-raised in the caller's thread
                    self._error = error

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error


def _read_masks(job: VideoJob, video: VideoSource) -> tuple[dict[int, np.ndarray], list[int] | None]:
    """Masks by frame index (checked against the frame size) and the palette to reuse."""
    if not job.masks:
        raise StmaError(f"{job.source}: no mask given (use --mask or --mask-template)")
    masks: dict[int, np.ndarray] = {}
    palette = None
    for frame, path in job.masks:
        if video.num_frames is not None and frame >= video.num_frames:
            raise StmaError(f"{path}: mask for frame {frame}, but the video has {video.num_frames} frames")
        mask = read_mask(path, size=(video.width, video.height))
        if frame in masks:
            merged = masks[frame].copy()
            merged[mask.labels != 0] = mask.labels[mask.labels != 0]
            masks[frame] = merged
        else:
            masks[frame] = mask.labels
        palette = palette or mask.palette
    return masks, palette


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


class _FrameBuffer:
    """Frames and their labels kept on disk (memory-mapped files), so a long prefix does not fill the RAM."""

    def __init__(self, folder: Path, count: int, height: int, width: int) -> None:
        self.count = count
        self.frames = np.lib.format.open_memmap(folder / "frames.npy", mode="w+", dtype=np.uint8,
                                                shape=(count, height, width, 3))
        self.labels = np.lib.format.open_memmap(folder / "labels.npy", mode="w+", dtype=np.uint8,
                                                shape=(count, height, width))

    def put(self, index: int, frame: np.ndarray) -> None:
        self.frames[index] = frame

    def get(self, index: int) -> np.ndarray:
        return np.asarray(self.frames[index])


def _propagate(video: VideoSource, masks: dict[int, np.ndarray], model: STMA, config: SegmenterConfig,
               direction: str) -> Iterator[tuple[int, np.ndarray, FrameResult | None]]:
    """(index, frame, result) for every frame in order; result None where no object is tracked.

    forward: each object from its mask on. backward: from the first mask back to frame 0 only.
    both: backward from the first mask, then forward from it. The frames before the first mask are
    kept in a disk buffer for the backward pass, so a long prefix does not fill the memory.
    """
    first = min(masks)
    frames: Iterator[tuple[int, np.ndarray]] = enumerate(video)
    with tempfile.TemporaryDirectory(prefix="stma-") as tmp:
        if direction != "forward" and first > 0:
            buffer = _FrameBuffer(Path(tmp), first, video.height, video.width)
            for index, frame in frames:
                buffer.put(index, frame)
                if index == first - 1:
                    break
            anchor = next(frames, None)
            if anchor is None:
                return
            results = _backward(buffer, anchor[1], masks[first], model, config)
            for index in range(first):
                yield index, buffer.get(index), results[index]
            frames = itertools.chain([anchor], frames)
        forward_masks = {first: masks[first]} if direction == "backward" else masks
        yield from _forward(frames, forward_masks, model, config, last=first if direction == "backward" else None)


def _forward(frames: Iterable[tuple[int, np.ndarray]], masks: dict[int, np.ndarray], model: STMA,
             config: SegmenterConfig, last: int | None = None) -> Iterator[tuple[int, np.ndarray, FrameResult | None]]:
    """Track forward from each mask; frames after `last` (if given) are not segmented."""
    segmenter = Segmenter(model, config)
    for index, frame in frames:
        mask = masks.get(index)
        active = (mask is not None or segmenter.object_ids) and (last is None or index <= last)
        yield index, frame, segmenter.step(frame, mask) if active else None


def _backward(buffer: _FrameBuffer, anchor: np.ndarray, mask: np.ndarray, model: STMA,
              config: SegmenterConfig) -> list[FrameResult]:
    """Results of the buffered frames, segmented from the anchor frame back to frame 0."""
    segmenter = Segmenter(model, config)
    segmenter.step(anchor, mask)
    results: dict[int, FrameResult] = {}
    for index in range(buffer.count - 1, -1, -1):
        result = segmenter.step(buffer.get(index))
        buffer.labels[index] = result.labels
        result.labels = buffer.labels[index]  # the full-size labels wait on disk; the small logits in memory
        results[index] = result
    return [results[index] for index in range(buffer.count)]
