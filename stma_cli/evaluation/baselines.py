"""Baselines without learning, written in the layout `predict_dataset` writes and `evaluate_folder` scores.

* `copy_first_mask`: every frame repeats each object's given mask, from the frame that introduces it.
* `motion_propagation`: each object's mask moves from frame to frame by the translation that best
  matches its pixels, found by block matching on grayscale frames, coarse to fine.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.evaluation.datasets import VideoSequence, VosDataset
from stma_cli.io.masks import read_label_map, write_mask

Progress = Callable[[str], None] | None


@dataclass(frozen=True)
class MotionConfig:
    """Block-matching settings of `motion_propagation`."""

    factor: int = 4
    """Downsampling of the coarse search (box average)."""
    radius: int = 6
    """Coarse search radius in coarse pixels, around the object's previous displacement."""
    refine: int = 4
    """Search radius in full-resolution pixels around the coarse match (a coarse match may be a coarse
    pixel off where the texture is as fine as the coarse grid)."""
    min_pixels: int = 16
    """Fewest visible full-resolution pixels an object needs to be matched; fewer: it keeps its velocity."""


def copy_first_mask(dataset: VosDataset, output_dir: Path, progress: Progress = None) -> None:
    """Predict each object's given mask on every output frame from the one that introduces it.

    Objects introduced later are drawn over earlier ones where their given masks overlap.
    """
    for name in dataset.sequence_names:
        sequence = dataset.sequence(name)
        writer = _Writer(dataset, sequence, Path(output_dir))
        labels: np.ndarray | None = None
        for frame, path in zip(sequence.frames, sequence.frame_paths):
            given = _given_objects(sequence, frame, path)
            if given is not None:
                labels = given if labels is None else np.where(given > 0, given, labels)
            writer.write(frame, labels, path)
        if progress is not None:
            progress(name)


def motion_propagation(dataset: VosDataset, output_dir: Path, config: MotionConfig = MotionConfig(),
                       progress: Progress = None) -> None:
    """Track each object by block matching and shift its previous mask onto the next frame.

    The match uses the object's visible pixels of the previous prediction. Where objects overlap, the
    one that matched best is in front. An object that leaves the frame entirely is lost.
    """
    for name in dataset.sequence_names:
        sequence = dataset.sequence(name)
        writer = _Writer(dataset, sequence, Path(output_dir))
        tracks: dict[int, _Track] = {}
        previous: _Frame | None = None
        labels: np.ndarray | None = None
        for frame, path in zip(sequence.frames, sequence.frame_paths):
            if not tracks and frame not in sequence.given_masks:
                writer.write(frame, None, path)
                continue
            gray = _read_gray(path, config.factor)
            if previous is not None and labels is not None:
                for object_id, track in tracks.items():
                    track.step(previous, gray, labels == object_id, config)
            given = _given_objects(sequence, frame, path)
            if given is not None:
                for object_id in np.unique(given[given > 0]).tolist():
                    tracks[object_id] = _Track(given == object_id)
            labels = _compose(tracks, gray.full.shape)
            writer.write(frame, labels, path)
            previous = gray
        if progress is not None:
            progress(name)


# -- motion propagation ----------------------------------------------------------------------------


@dataclass
class _Track:
    """One object's mask (its whole extent, occluded parts included) and its last displacement."""

    mask: np.ndarray
    velocity: tuple[int, int] = (0, 0)
    cost: float = 0.0

    def step(self, previous: _Frame, current: _Frame, visible: np.ndarray, config: MotionConfig) -> None:
        """Move the mask from the `previous` frame onto the `current` one; `visible` is the object's
        part of the previous prediction."""
        box = _box(self.mask)
        if box is None:
            return
        points = np.argwhere(visible[box]) + (box[0].start, box[1].start)
        if len(points) < config.min_pixels:
            self.cost = np.inf
        else:
            self.velocity, self.cost = _match(previous, current, points, self.velocity, config)
        self.mask = _shift(self.mask, box, self.velocity)


@dataclass(frozen=True)
class _Frame:
    """A grayscale frame in [0, 1] at full resolution and box-averaged by the coarse factor."""

    full: np.ndarray
    coarse: np.ndarray


def _read_gray(path: Path, factor: int) -> _Frame:
    try:
        with Image.open(path) as image:
            gray = image.convert("L")
    except OSError as error:
        raise StmaError(f"{path}: cannot read the frame ({error})") from None
    full = np.asarray(gray, dtype=np.float32) / 255.0
    coarse = np.asarray(gray.reduce(factor), dtype=np.float32) / 255.0
    return _Frame(full, coarse)


def _box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of a mask's pixels, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _match(previous: _Frame, current: _Frame, points: np.ndarray, velocity: tuple[int, int],
           config: MotionConfig) -> tuple[tuple[int, int], float]:
    """The (dy, dx) shift that best carries the pixels `points` of `previous` onto `current`, and its cost.

    Coarse: every shift within `radius` of the previous velocity, on the coarse pixels the object
    covers at least half of; fine: shifts within `refine` of the coarse one at full resolution.
    """
    f = config.factor
    width = current.coarse.shape[1]
    blocks, counts = np.unique((points // f) @ np.array([width, 1]), return_counts=True)
    coarse_points = _sample(np.stack(np.divmod(blocks[counts * 2 >= f * f], width), axis=1), 600)
    offset = np.rint(np.asarray(velocity) / f).astype(int)
    if len(coarse_points):  # else the object is too thin for the coarse frame: fine search only
        _, offset = _best_offset(previous.coarse, current.coarse, coarse_points, _grid(config.radius) + offset)
    cost, shift = _best_offset(previous.full, current.full, _sample(points, 2000), _grid(config.refine) + offset * f)
    return (int(shift[0]), int(shift[1])), cost


def _sample(points: np.ndarray, most: int) -> np.ndarray:
    """At most about `most` of the points, evenly spread over the list."""
    return points[:: max(1, len(points) // most)]


def _grid(radius: int) -> np.ndarray:
    """All (dy, dx) with |dy|, |dx| <= radius, as an (N, 2) array, shortest first (so ties keep still)."""
    steps = np.arange(-radius, radius + 1)
    grid = np.stack(np.meshgrid(steps, steps, indexing="ij"), axis=-1).reshape(-1, 2)
    return grid[np.argsort((grid**2).sum(axis=1), kind="stable")]


def _best_offset(previous: np.ndarray, current: np.ndarray, points: np.ndarray,
                 offsets: np.ndarray) -> tuple[float, np.ndarray]:
    """The offset that best carries `previous` at `points` onto `current`, and its cost: the mean squared
    difference over the moved points inside the frame. Offsets that leave more than half the points
    outside are not considered."""
    points, offsets = points.astype(np.int32), offsets.astype(np.int32)
    source = previous[points[:, 0], points[:, 1]]
    height, width = current.shape
    rows = points[None, :, 0] + offsets[:, 0, None]
    cols = points[None, :, 1] + offsets[:, 1, None]
    inside = (rows.astype(np.uint32) < height) & (cols.astype(np.uint32) < width)  # negatives wrap around
    difference = np.take(current, rows * width + cols, mode="clip") - source
    difference *= inside
    count = inside.sum(axis=1)
    cost = np.einsum("ij,ij->i", difference, difference) / np.maximum(count, 1)
    cost = np.where(count * 2 >= len(points), cost, np.inf)
    best = int(np.argmin(cost))
    return float(cost[best]), offsets[best]


def _shift(mask: np.ndarray, box: tuple[slice, slice], shift: tuple[int, int]) -> np.ndarray:
    """The mask (its pixels lie in `box`) moved by `shift` = (dy, dx); what leaves the frame is lost."""
    height, width = mask.shape
    (dy, dx), rows, cols = shift, box[0], box[1]
    top, bottom = max(rows.start + dy, 0), min(rows.stop + dy, height)
    left, right = max(cols.start + dx, 0), min(cols.stop + dx, width)
    out = np.zeros_like(mask)
    if top < bottom and left < right:
        out[top:bottom, left:right] = mask[top - dy : bottom - dy, left - dx : right - dx]
    return out


def _compose(tracks: dict[int, _Track], shape: tuple[int, int]) -> np.ndarray:
    """Label map of the tracks, the best-matched object in front where masks overlap."""
    labels = np.zeros(shape, np.uint8)
    for object_id, track in sorted(tracks.items(), key=lambda item: -item[1].cost):
        labels[track.mask] = object_id
    return labels


# -- shared ------------------------------------------------------------------------------------------


def _given_objects(sequence: VideoSequence, frame: str, frame_path: Path) -> np.ndarray | None:
    """The objects that the given mask of `frame` introduces (other ids become 0), or None."""
    path = sequence.given_masks.get(frame)
    if path is None:
        return None
    labels = read_label_map(path)
    with Image.open(frame_path) as image:
        width, height = image.size
    if labels.shape != (height, width):
        raise StmaError(f"{path}: mask is {labels.shape[1]}x{labels.shape[0]}, the frame {frame_path.name} is "
                        f"{width}x{height}")
    introduced = [obj for obj, first in sequence.first_appearance.items() if first == frame]
    return np.where(np.isin(labels, introduced), labels, 0).astype(np.uint8)


class _Writer:
    """Writes a sequence's output frames with the palette of its first given mask."""

    def __init__(self, dataset: VosDataset, sequence: VideoSequence, output_dir: Path) -> None:
        self.dataset, self.sequence, self.output_dir = dataset, sequence, output_dir
        self.outputs = set(sequence.output_frames)
        first = sequence.given_masks[min(sequence.given_masks, key=sequence.frames.index)]
        with Image.open(first) as image:
            self.palette = image.getpalette() if image.mode == "P" else None

    def write(self, frame: str, labels: np.ndarray | None, frame_path: Path) -> None:
        """Write `labels` for `frame` if it is an output frame; None means an empty mask."""
        if frame not in self.outputs:
            return
        if labels is None:
            with Image.open(frame_path) as image:
                width, height = image.size
            labels = np.zeros((height, width), np.uint8)
        target = self.dataset.prediction_path(self.output_dir, self.sequence.name, frame)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_mask(target, labels, self.palette)
