"""Readers for the DAVIS-2017 and YouTube-VOS folder layouts used by `stma eval`.

DAVIS-2017 (``ROOT/JPEGImages/480p/SEQ/*.jpg``, ``ROOT/Annotations/480p/SEQ/*.png``,
``ROOT/ImageSets/2017/SPLIT.txt``): the first frame's annotation gives every object; the objects are
ids 1 .. max(first annotation), as in the official toolkit. Pixels labelled 255 (void) count as
background. Predictions live in ``RESULTS/SEQ/FRAME.png``.

YouTube-VOS (``ROOT/SPLIT/JPEGImages/VID/*.jpg``, ``ROOT/SPLIT/Annotations/VID/*.png``,
``ROOT/SPLIT/meta.json``): each object's mask is given on the first frame it appears in, as listed
in meta.json, and predictions are needed for the frames meta.json lists. Predictions live in the
submission layout ``RESULTS/Annotations/VID/FRAME.png``.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from stma_cli.errors import StmaError, UsageError
from stma_cli.io.masks import read_label_map

VOID_LABEL = 255


@dataclass(frozen=True)
class VideoSequence:
    """One video to segment: its frames, the masks given as input and the frames to predict."""

    name: str
    frame_paths: tuple[Path, ...]
    given_masks: dict[str, Path]
    """Frame name (file stem) -> annotation file given as input on that frame."""
    first_appearance: dict[int, str]
    """Object id -> name of the frame whose given mask introduces it."""
    output_frames: tuple[str, ...]
    """Names of the frames a prediction must be written for."""

    @property
    def frames(self) -> tuple[str, ...]:
        """Frame names (file stems) in temporal order."""
        return tuple(path.stem for path in self.frame_paths)

    @property
    def object_ids(self) -> tuple[int, ...]:
        """Object ids in increasing order."""
        return tuple(sorted(self.first_appearance))


class VosDataset(Protocol):
    """What `stma eval` needs from a dataset layout."""

    root: Path
    split: str
    sequence_names: list[str]

    def sequence(self, name: str) -> VideoSequence:
        """The video `name` with its frames and given masks."""
        ...

    def prediction_path(self, results_dir: Path, name: str, frame: str) -> Path:
        """Where the predicted mask of `frame` of video `name` lives under `results_dir`."""
        ...


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, Image.DecompressionBombError) as error:
        raise StmaError(f"{path}: cannot read image ({error})") from None
    return height, width


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise StmaError(f"{path}: {what} folder not found")
    return path


def _sorted_files(folder: Path, suffix: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == suffix and p.is_file())


def plain_name(name: str, listing: Path, what: str = "sequence") -> str:
    """`name` if it is one plain path component (it is joined to folders, the output's among them);
    StmaError naming the listing otherwise: an absolute name, '..', a '/' or '\\' could write anywhere."""
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise StmaError(f"{listing}: {what} name {name!r} is not a plain file name (no '/', '\\', '..' or empty)")
    return name


def _select(available: list[str], requested: Sequence[str] | None, listing: Path) -> list[str]:
    if requested is None:
        return available
    known = set(available)
    for name in requested:
        if name not in known:
            raise UsageError(f"{listing}: has no sequence '{name}'")
    return list(requested)


class DavisDataset:
    """A DAVIS-2017 semi-supervised split at one resolution."""

    def __init__(self, root: Path, split: str = "val", resolution: str = "480p", sequences: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.resolution = resolution
        _require_dir(self.root, "dataset")
        self.image_dir = _require_dir(self.root / "JPEGImages" / resolution, "image")
        self.annotation_dir = _require_dir(self.root / "Annotations" / resolution, "annotation")
        listing = self.root / "ImageSets" / "2017" / f"{split}.txt"
        if not listing.is_file():
            raise StmaError(f"{listing}: sequence list for split '{split}' not found")
        try:
            text = listing.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise StmaError(f"{listing}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        except OSError as error:
            raise StmaError(f"{listing}: cannot read the sequence list ({error.strerror or error})") from None
        available = [plain_name(line.strip(), listing) for line in text.splitlines() if line.strip()]
        self.sequence_names = _select(available, sequences, listing)

    def frame_paths(self, name: str) -> list[Path]:
        """The JPEG frames of sequence `name`, in order."""
        frames = _sorted_files(_require_dir(self.image_dir / name, "image"), ".jpg")
        if not frames:
            raise StmaError(f"{self.image_dir / name}: no .jpg frames")
        return frames

    def annotation_paths(self, name: str) -> list[Path]:
        """The ground-truth PNG annotations of sequence `name`, in order."""
        annotations = _sorted_files(_require_dir(self.annotation_dir / name, "annotation"), ".png")
        if not annotations:
            raise StmaError(f"{self.annotation_dir / name}: no .png annotations")
        return annotations

    def num_objects(self, name: str) -> int:
        """Number of objects of sequence `name`: the largest id in its first annotation."""
        first = read_label_map(self.annotation_paths(name)[0])
        first = np.where(first == VOID_LABEL, 0, first)
        return int(first.max())

    def sequence(self, name: str) -> VideoSequence:
        """Sequence `name` with its first-frame annotation as the given mask."""
        frames = self.frame_paths(name)
        first = self.annotation_paths(name)[0]
        if first.stem != frames[0].stem:
            raise StmaError(f"{first}: first annotation does not match the first frame {frames[0].name}")
        return VideoSequence(
            name=name,
            frame_paths=tuple(frames),
            given_masks={first.stem: first},
            first_appearance={obj: first.stem for obj in range(1, self.num_objects(name) + 1)},
            output_frames=tuple(p.stem for p in frames),
        )

    def prediction_path(self, results_dir: Path, name: str, frame: str) -> Path:
        """``RESULTS/SEQ/FRAME.png``."""
        return Path(results_dir) / name / f"{frame}.png"


class YouTubeVOSDataset:
    """A YouTube-VOS split (``valid`` by default) described by its meta.json."""

    def __init__(self, root: Path, split: str = "valid", sequences: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        self.split = split
        split_dir = _require_dir(self.root / split, "split")
        self.image_dir = _require_dir(split_dir / "JPEGImages", "image")
        self.annotation_dir = _require_dir(split_dir / "Annotations", "annotation")
        self.meta_path = split_dir / "meta.json"
        self._videos = self._read_meta(self.meta_path)
        self.sequence_names = _select(sorted(self._videos), sequences, self.meta_path)

    @staticmethod
    def _read_meta(path: Path) -> dict[str, dict[int, list[str]]]:
        """video -> object id -> frame names, from meta.json."""
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StmaError(f"{path}: file not found") from None
        except (OSError, ValueError, RecursionError) as error:  # RecursionError: nested too deeply
            raise StmaError(f"{path}: cannot read JSON ({error})") from None
        try:
            videos = {
                video: {int(obj): [str(f) for f in info["frames"]] for obj, info in entry["objects"].items()}
                for video, entry in meta["videos"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError):
            raise StmaError(f"{path}: expected {{'videos': {{VIDEO: {{'objects': {{ID: {{'frames': [...]}}}}}}}}}}") from None
        for video, objects in videos.items():
            plain_name(video, path, "video")
            for frames in objects.values():
                for frame in frames:
                    plain_name(frame, path, f"video {video!r}: frame")
        return videos

    def frame_paths(self, name: str) -> list[Path]:
        """The JPEG frames of video `name`, in order."""
        frames = _sorted_files(_require_dir(self.image_dir / name, "image"), ".jpg")
        if not frames:
            raise StmaError(f"{self.image_dir / name}: no .jpg frames")
        return frames

    def sequence(self, name: str) -> VideoSequence:
        """Video `name`: each object's mask given on its first listed frame."""
        frames = self.frame_paths(name)
        known = {p.stem for p in frames}
        objects = self._videos[name]
        first_appearance: dict[int, str] = {}
        output: set[str] = set()
        for obj, listed in objects.items():
            if not listed:
                raise StmaError(f"{self.meta_path}: object {obj} of video '{name}' lists no frames")
            missing = [f for f in listed if f not in known]
            if missing:
                raise StmaError(f"{self.meta_path}: video '{name}' lists frame '{missing[0]}' missing from {self.image_dir / name}")
            first_appearance[obj] = min(listed)
            output.update(listed)
        given = {}
        for frame in sorted(set(first_appearance.values())):
            path = self.annotation_dir / name / f"{frame}.png"
            if not path.is_file():
                raise StmaError(f"{path}: annotation of a first appearance not found")
            given[frame] = path
        return VideoSequence(
            name=name,
            frame_paths=tuple(frames),
            given_masks=given,
            first_appearance=first_appearance,
            output_frames=tuple(sorted(output)),
        )

    def prediction_path(self, results_dir: Path, name: str, frame: str) -> Path:
        """``RESULTS/Annotations/VID/FRAME.png`` (the submission layout)."""
        return Path(results_dir) / "Annotations" / name / f"{frame}.png"
