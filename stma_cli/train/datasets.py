"""Training clips from real annotated video datasets: DAVIS-2017 and YouTube-VOS layouts, read by the same
layout classes, frame reader and label reader as `stma eval`.

A clip is num_frames ordered frames with random gaps (1..max_gap), one random crop (with zoom and
horizontal flip) resized to `size`, and up to max_objects of the objects present in its first frame,
relabelled 1..n in random order; every other pixel (other objects, void 255) is background 0.
Item i of seed s is a pure function of (s, i).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.evaluation.datasets import DavisDataset, YouTubeVOSDataset, image_size
from stma_cli.io.masks import read_label_map
from stma_cli.io.video import frame_files, read_frame
from stma_cli.train.synthetic import check_clip_args
from stma_cli.train.seeded import ClipKey, SeededClips

_ATTEMPTS = 20
_CROP_TRIES = 4


@dataclass(frozen=True)
class Sequence:
    """Frames and their annotations, in temporal order."""

    name: str
    frames: tuple[Path, ...]
    masks: tuple[Path, ...]


def _paired_sequence(name: str, image_dir: Path, mask_dir: Path) -> Sequence | None:
    """Frames that have an annotation of the same stem; None if there are none."""
    if not image_dir.is_dir() or not mask_dir.is_dir():
        return None
    masks = {path.stem: path for path in mask_dir.iterdir() if path.suffix.lower() == ".png"}
    frames = [path for path in frame_files(image_dir) if path.stem in masks]
    if not frames:
        return None
    return Sequence(name, tuple(frames), tuple(masks[path.stem] for path in frames))


def sample_frame_indices(rng: np.random.Generator, count: int, num_frames: int, max_gap: int) -> np.ndarray:
    """Ordered indices into `count` frames with gaps of 1..max_gap (repeats only if count < num_frames)."""
    if count < num_frames:
        return np.sort(rng.integers(count, size=num_frames))
    gaps = rng.integers(1, max_gap + 1, size=num_frames - 1)
    while gaps.sum() > count - 1:
        gaps[int(np.argmax(gaps))] -= 1
    start = int(rng.integers(count - int(gaps.sum())))
    return start + np.concatenate([[0], np.cumsum(gaps)])


def _crop_box(rng: np.random.Generator, image_hw: tuple[int, int], size: tuple[int, int]) -> tuple[float, ...]:
    """A random (left, top, right, bottom) crop with the aspect of `size`, zoomed in by up to 1.3x."""
    h, w = image_hw
    aspect = size[1] / size[0]
    crop_h = min(h, w / aspect) / rng.uniform(1.0, 1.3)
    crop_w = min(w, crop_h * aspect * rng.uniform(0.9, 1.1))
    left, top = rng.uniform(0, w - crop_w), rng.uniform(0, h - crop_h)
    return left, top, left + crop_w, top + crop_h


def _read_labels(path: Path, box: tuple[float, ...], size: tuple[int, int], flip: bool) -> np.ndarray:
    labels = read_label_map(path)
    if labels.max(initial=0) > 255:
        raise StmaError(f"{path}: object ids above 255 (a 16-bit annotation?); expected ids 0-255")
    cropped = np.asarray(Image.fromarray(labels.astype(np.uint8)).resize((size[1], size[0]), Image.Resampling.NEAREST,
                                                                        box=box))
    return cropped[:, ::-1] if flip else cropped


def _read_frame(path: Path, box: tuple[float, ...], size: tuple[int, int], flip: bool) -> np.ndarray:
    rgb = np.asarray(Image.fromarray(read_frame(path)).resize((size[1], size[0]), Image.Resampling.BILINEAR, box=box))
    return rgb[:, ::-1] if flip else rgb


class VosTrainClips(SeededClips):
    """Clips sampled from annotated sequences (the shared part of the DAVIS and YouTube-VOS loaders)."""

    STREAM = 2

    def __init__(self, root: Path, sequences: list[Sequence], num_frames: int, size: tuple[int, int],
                 max_objects: int, seed: int, length: int | None, max_gap: int, min_area: float) -> None:
        if not sequences:
            raise StmaError(f"{root}: no sequence with annotated frames found")
        length = len(sequences) if length is None else length
        check_clip_args(num_frames, size, max_objects, seed, length)
        if max_gap < 1:
            raise StmaError(f"max_gap={max_gap}: need at least 1")
        self.root, self.sequences = Path(root), sequences
        self.num_frames, self.size = num_frames, (int(size[0]), int(size[1]))
        self.max_objects, self.seed, self.length = max_objects, seed, length
        self.max_gap, self.min_area = max_gap, min_area

    def __getitem__(self, key: int | ClipKey) -> dict:
        index, max_gap = self.unpack(key, self.max_gap)
        rng = self.rng(index)
        min_pixels = self.min_area * self.size[0] * self.size[1]
        for attempt in range(_ATTEMPTS):
            number = index if attempt == 0 else int(rng.integers(len(self.sequences)))
            sequence = self.sequences[number % len(self.sequences)]
            indices = sample_frame_indices(rng, len(sequence.frames), self.num_frames, max_gap)
            image_hw = image_size(sequence.frames[indices[0]])
            for _ in range(_CROP_TRIES):
                box, flip = _crop_box(rng, image_hw, self.size), bool(rng.random() < 0.5)
                first = _read_labels(sequence.masks[indices[0]], box, self.size, flip)
                areas = np.bincount(first.ravel(), minlength=256)
                present = [label for label in range(1, 255) if areas[label] >= min_pixels]
                if present:
                    return self._clip(rng, sequence, indices, box, flip, present)
        raise StmaError(f"{self.root}: found no object of at least {self.min_area:.2%} of the frame "
                        f"in {_ATTEMPTS} sampled clips; check the annotations")

    def _clip(self, rng: np.random.Generator, sequence: Sequence, indices: np.ndarray, box: tuple[float, ...],
              flip: bool, present: list[int]) -> dict:
        chosen = rng.permutation(present)[: self.max_objects]
        relabel = np.zeros(256, dtype=np.int64)
        relabel[chosen] = np.arange(1, len(chosen) + 1)
        frames = np.stack([_read_frame(sequence.frames[i], box, self.size, flip) for i in indices])
        masks = np.stack([relabel[_read_labels(sequence.masks[i], box, self.size, flip)] for i in indices])
        return {
            "frames": torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0),
            "masks": torch.from_numpy(masks),
            "num_objects": len(chosen),
        }


class DavisTrainSet(VosTrainClips):
    """DAVIS-2017 layout (read by `DavisDataset`): ROOT/JPEGImages/480p/SEQ/*.jpg, ROOT/Annotations/480p/SEQ/*.png
    (palette), ROOT/ImageSets/2017/SPLIT.txt."""

    def __init__(self, root: str | Path, split: str = "train", num_frames: int = 5,
                 size: tuple[int, int] = (384, 384), max_objects: int = 3, seed: int = 0,
                 length: int | None = None, max_gap: int = 8, min_area: float = 0.002,
                 resolution: str = "480p") -> None:
        layout = DavisDataset(Path(root), split, resolution)
        sequences = []
        for name in layout.sequence_names:
            sequence = _paired_sequence(name, layout.image_dir / name, layout.annotation_dir / name)
            if sequence is None:
                raise StmaError(f"{layout.image_dir / name}: sequence '{name}' of split '{split}' has no frames "
                                "with annotations")
            sequences.append(sequence)
        super().__init__(layout.root, sequences, num_frames, size, max_objects, seed, length, max_gap, min_area)


class YouTubeVOSTrainSet(VosTrainClips):
    """YouTube-VOS layout (read by `YouTubeVOSDataset`): ROOT/SPLIT/JPEGImages/VID/*.jpg,
    ROOT/SPLIT/Annotations/VID/*.png (palette), ROOT/SPLIT/meta.json. Its training frames are already every
    5th frame, hence the smaller default gap."""

    def __init__(self, root: str | Path, split: str = "train", num_frames: int = 5,
                 size: tuple[int, int] = (384, 384), max_objects: int = 3, seed: int = 0,
                 length: int | None = None, max_gap: int = 2, min_area: float = 0.002) -> None:
        layout = YouTubeVOSDataset(Path(root), split)
        sequences = [
            sequence for name in layout.sequence_names
            if (sequence := _paired_sequence(name, layout.image_dir / name, layout.annotation_dir / name)) is not None
        ]
        super().__init__(layout.root, sequences, num_frames, size, max_objects, seed, length, max_gap, min_area)
