"""The passes of a Segmenter through a video's frames, and how the two directions are merged.

`plan_passes` says which passes a direction runs, `run_pass` runs one, and `propagate` gives every frame
of a range its result: forward from the first mask; backward from the last mask, with the frames kept in
scratch files; or both, each object on each frame taken from the pass whose mask of it is nearest.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from stma_cli.errors import StmaError
from stma_cli.inference.segmenter import (FrameResult, Segmenter, frame_pixels, frame_result, keep_given_mask,
                                         processing_size)
from stma_cli.io.atomic import temporary_path
from stma_cli.io.video import VideoSource
from stma_cli.model import LOGIT_STRIDE

DIRECTIONS = ("forward", "backward", "both")
ABSENT = -1e4  # logit of an object on frames before it appears


def logits_for(result: FrameResult | None, object_ids: list[int], shape: tuple[int, int]) -> np.ndarray:
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


def presence_for(result: FrameResult | None, object_ids: list[int]) -> np.ndarray:
    """Presence probabilities (K,) in the output's object order; NaN for the objects that the pass does not
    follow on this frame (not yet seen, ended, or no result)."""
    out = np.full(len(object_ids), np.nan, dtype=np.float32)
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
        if count and hasattr(os, "posix_fallocate"):  # where there is none (macOS), a full disk fails the writes
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


def propagate(video: VideoSource, frame_range: tuple[int, int | None], masks: dict[int, np.ndarray],
               ends: dict[int, list[int]], object_ids: list[int], segmenter: Segmenter, direction: str,
               scratch: Path) -> Iterator[tuple[int, np.ndarray, FrameResult | None]]:
    """(index, frame, result) for every frame of `frame_range` in order; result None where no object is tracked.

    Runs the passes of `plan_passes`. A backward pass needs the frames up to its start at once: they are
    kept in scratch files in `scratch` (removed at the end), so that a long stretch does not fill the memory,
    with what the backward pass gives each frame: its result where it is the only pass, and where the
    forward pass crosses it too, the objects' probabilities that the merge takes (see `_merge`).
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
    size = (video.height, video.width)
    with contextlib.ExitStack() as stack:
        buffer = _scratch_array(stack, scratch, "frames", (*size, 3), np.uint8)
        for index, frame in frames:
            buffer.append(frame)
            if index == backward.start:
                break
        if first + buffer.count <= backward.start:
            return  # the video ends before the last mask: the caller reports it
        crossed = range(backward.start + 1 if forward is None else forward.start, backward.start + 1)  # merged
        alone = range(first, crossed.start)  # the frames that only the backward pass crosses
        shape = logits_shape(*size, config.max_side)
        labels = _scratch_array(stack, scratch, "labels", size, np.uint8, len(alone))
        logits = _scratch_array(stack, scratch, "logits", (len(object_ids) + 1, *shape), np.float32, len(alone))
        behind = _scratch_array(stack, scratch, "probabilities", (len(object_ids), *shape), np.float32, len(crossed))
        presence: dict[int, np.ndarray] = {}  # frames x objects: small enough to keep in memory
        for index, _, result in run_pass(backward, ((i, buffer[i - first]) for i in range(backward.start, first - 1, -1)),
                                         segmenter, video.name):
            if index in alone:
                labels[index - first] = result.labels
                logits[index - first] = logits_for(result, object_ids, shape)
            else:
                behind[index - crossed.start] = _probabilities(result, object_ids, shape)[1:]
            presence[index] = presence_for(result, object_ids)
        for index in alone:
            result = FrameResult(labels[index - first], torch.from_numpy(logits[index - first]), object_ids,
                                 presence[index])
            yield index, buffer[index - first], result
        if forward is None:
            yield from ((index, frame, None) for index, frame in frames)
            return
        ahead = itertools.chain(((i, buffer[i - first]) for i in crossed), frames)
        choose = _NearestMask(masks, ends, object_ids)
        for index, frame, result in run_pass(forward, ahead, segmenter, video.name):
            if index in crossed:
                result = _merge(result, behind[index - crossed.start], presence[index], choose.backward_objects(index),
                                object_ids, masks.get(index), size, config.max_side, frame,
                                segmenter.model.config.edge_radius)
            yield index, frame, result


def _scratch_array(stack: contextlib.ExitStack, folder: Path, name: str, shape: tuple[int, ...],
                   dtype: type, count: int | None = None) -> _DiskArray:
    """A scratch file in `folder`, removed when `stack` closes; with `count`, that many items allocated.

    Its removal is registered before the file exists: a signal that lands just after the file's creation
    (SIGTERM as a KeyboardInterrupt) still removes it.
    """
    path = temporary_path(folder / f"{name}.npy")
    stack.callback(path.unlink, missing_ok=True)
    array = _DiskArray(path, shape, dtype)
    stack.callback(array.close)
    if count is not None:
        array.allocate(count)
    return array


def logits_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
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


def _probabilities(result: FrameResult, object_ids: list[int], shape: tuple[int, int]) -> torch.Tensor:
    """Probabilities (1+K, H', W') of the background and the objects, in the output's object order."""
    return torch.from_numpy(logits_for(result, object_ids, shape)).softmax(0)


def _merge(ahead: FrameResult, behind: np.ndarray, behind_presence: np.ndarray, from_behind: list[int],
           object_ids: list[int], mask: np.ndarray | None, size: tuple[int, int], max_side: int, image: np.ndarray,
           edge_radius: int) -> FrameResult:
    """One frame (`image`) from the two passes: the objects `from_behind` from the backward pass (`behind`: the
    objects' probabilities (K, H', W'), and `behind_presence` (K,), in the order of `object_ids`), the others from
    the forward pass `ahead`, combined as probabilities (renormalised where they overlap), labelled as `frame_result`
    labels them with `edge_radius`."""
    if not from_behind:
        return ahead
    take = torch.tensor([i in from_behind for i in object_ids])
    probs = _probabilities(ahead, object_ids, behind.shape[1:])
    objects = probs[1:]
    objects[take] = torch.from_numpy(behind)[take]
    objects /= objects.sum(0, keepdim=True).clamp(min=1)
    probs[0] = (1 - objects.sum(0)).clamp(min=0)
    presence = np.where(take.numpy(), behind_presence, presence_for(ahead, object_ids))
    pixels = frame_pixels(image, torch.device("cpu")) if edge_radius else None
    merged = frame_result(probs.clamp_(min=1e-4).log_()[None], object_ids, processing_size(*size, max_side), size,
                          torch.from_numpy(presence), pixels, edge_radius)
    if mask is not None:  # as on every frame that holds one
        keep_given_mask(merged.labels, mask)
    return merged
