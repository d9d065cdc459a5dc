"""Training data entry points: `make_dataset` for `stma train --data`, and writers of held-out material.

Specs: "synthetic", "pseudo", "events", a DAVIS-2017 or YouTube-VOS folder, or a mixture of these joined
by "+", each with an optional ":WEIGHT" (e.g. "events:2+synthetic:1+pseudo:1"; weights default to 1).
"""
from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from stma_cli.errors import StmaError
from stma_cli.io.atomic import atomic_path, atomic_write_text
from stma_cli.io.masks import write_mask
from stma_cli.io.video_writer import VideoWriter
from stma_cli.train.datasets import DavisTrainSet, YouTubeVOSTrainSet
from stma_cli.train.events import CUT_EVENTS, LONG_EVENTS, EventVideos
from stma_cli.train.pseudo import PseudoVideos
from stma_cli.train.seeded import ClipKey, SeededClips
from stma_cli.train.synthetic import SyntheticVideos

HELDOUT_SEED = 10_000_019
"""Seed of the held-out test sequences, the ones a model is reported on (training uses small seeds, and
other assets, see HELD_OUT_ASSETS). Never used to choose a checkpoint or a setting."""
VALIDATION_SEED = 10_000_079
"""Seed of the validation sequences that choose checkpoints (`stma train` keeps best/ by them): held-out
imagery like the test sequences, other scenes."""
LONG_TEST_SEED = 10_000_103
"""Seed of the long test sequences (`benchmarks/long.py`): only reported."""
LONG_VALIDATION_SEED = 10_000_141
"""Seed of the long validation sequences, which choose checkpoints and defaults with the short ones."""
CUTS_TEST_SEED = 10_000_189
"""Seed of the cut test sequences (`benchmarks/long.py --kind cuts`): only reported."""
CUTS_VALIDATION_SEED = 10_000_223
"""Seed of the cut validation sequences."""
GENERATED = ("synthetic", "pseudo", "events")
HELD_OUT_KINDS = ("synthetic", "pseudo", "long", "cuts")


class MixtureDataset(SeededClips):
    """Item i comes from part k with probability weight_k, chosen from (seed, i); the part's item is random too."""

    STREAM = 3

    def __init__(self, parts: list[tuple[Dataset, float]], seed: int, length: int) -> None:
        weights = np.array([weight for _, weight in parts], dtype=np.float64)
        if not parts or (weights <= 0).any():
            raise StmaError("data mixture: every part needs a positive weight")
        self.parts = [dataset for dataset, _ in parts]
        self.probabilities = weights / weights.sum()
        self.seed, self.length = seed, length

    def __getitem__(self, key: int | ClipKey) -> dict:
        index, max_skip = self.unpack(key, 0)
        rng = self.rng(index)
        part = self.parts[int(rng.choice(len(self.parts), p=self.probabilities))]
        inner = int(rng.integers(len(part)))
        return part[ClipKey(inner, max_skip) if isinstance(key, ClipKey) else inner]


def real_dataset(path: Path, **options) -> Dataset:
    """A DAVIS-2017 or YouTube-VOS training set, recognised from the folder layout."""
    if (path / "JPEGImages" / "480p").is_dir() and (path / "ImageSets" / "2017").is_dir():
        return DavisTrainSet(path, **options)
    if (path / "train" / "JPEGImages").is_dir():
        return YouTubeVOSTrainSet(path, **options)
    if (path / "JPEGImages").is_dir() and (path / "Annotations").is_dir() and (path / "meta.json").is_file():
        return YouTubeVOSTrainSet(path.parent, split=path.name, **options)
    if not path.exists():
        raise StmaError(f"{path}: no such dataset folder (and not one of: {', '.join(GENERATED)})")
    raise StmaError(f"{path}: not a DAVIS-2017 (JPEGImages/480p, ImageSets/2017) "
                    "or YouTube-VOS (train/JPEGImages, train/Annotations) folder")


def _single(spec: str, seed: int, length: int, num_frames: int, size: tuple[int, int], max_objects: int,
            assets: str) -> Dataset:
    if spec == "synthetic":
        return SyntheticVideos(seed, length, num_frames, size, max_objects, assets)
    if spec == "pseudo":
        return PseudoVideos(seed, length, num_frames, size, max_objects, assets)
    if spec == "events":
        return EventVideos(seed, length, num_frames, size, max_objects, assets)
    return real_dataset(Path(spec), num_frames=num_frames, size=size, max_objects=max_objects, seed=seed,
                        length=length)


def make_dataset(spec: str, *, seed: int = 0, length: int = 10**9, num_frames: int = 5,
                 size: tuple[int, int] = (384, 384), max_objects: int = 3, assets: str = "train") -> Dataset:
    """The training dataset of `spec` (see the module docstring); items are deterministic in (seed, index).

    `length` is how many indices the dataset offers; the default is large enough that a training run
    never wraps around to repeat a generated clip.
    """
    options = dict(seed=seed, length=length, num_frames=num_frames, size=size, max_objects=max_objects,
                   assets=assets)
    if spec in GENERATED or Path(spec).exists():
        return _single(spec, **options)
    parts = []
    for term in spec.split("+"):
        match = re.fullmatch(r"(.+?)(?::(\d+(?:\.\d*)?))?", term.strip())
        if not term.strip() or match is None:
            raise StmaError(f"--data {spec}: empty part; expected e.g. synthetic+pseudo or synthetic:3+PATH:1")
        weight = float(match[2]) if match[2] is not None else 1.0
        if weight <= 0:
            raise StmaError(f"--data {spec}: weight of '{match[1]}' must be positive")
        parts.append((_single(match[1], **options), weight))
    return parts[0][0] if len(parts) == 1 else MixtureDataset(parts, seed, length)


def _save_jpeg(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="JPEG", quality=95)


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) float tensor in [0, 1] -> (T, H, W, 3) uint8 array."""
    return frames.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def heldout_dataset(kind: str = "synthetic", seed: int = HELDOUT_SEED, num_sequences: int = 20,
                    frames: int = 40, size: tuple[int, int] = (480, 854), max_objects: int = 3) -> Dataset:
    """Held-out sequences from held-out assets only.

    "synthetic" and "pseudo": milder per-frame changes, 2-3 objects. "long": consecutive frames of event
    clips (`stma_cli.train.events.LONG_EVENTS`: occlusion, exit and re-entry, twins, fast motion, scale
    change, some crowds), 2-4 objects. "cuts": the same clips with a cut to another shot and back
    instead of the occlusion and the exit (`CUT_EVENTS`).
    """
    if kind not in HELD_OUT_KINDS:
        raise StmaError(f"held-out data '{kind}': expected one of {', '.join(HELD_OUT_KINDS)}")
    if kind in ("long", "cuts"):
        events = LONG_EVENTS if kind == "long" else CUT_EVENTS
        return EventVideos(seed, num_sequences, frames, size, max(max_objects, 4), "heldout", events)
    make = SyntheticVideos if kind == "synthetic" else PseudoVideos
    return make(seed, num_sequences, frames, size, max_objects, "heldout")


def write_davis_layout(root: str | Path, dataset: str = "synthetic", num_sequences: int = 20,
                       seed: int = HELDOUT_SEED, frames: int = 40, size: tuple[int, int] = (480, 854)) -> list[str]:
    """Render held-out sequences into a DAVIS-2017 layout under `root`, for `stma eval`; returns their names.

    Writes JPEGImages/480p/SEQ/00000.jpg (quality 95), Annotations/480p/SEQ/00000.png (palette PNG of
    object ids, DAVIS palette) for every frame, events.json (each sequence's planned events, for the
    kinds that plan them), and ImageSets/2017/val.txt last, so that the list only names complete
    sequences. `dataset` is one of HELD_OUT_KINDS.
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise StmaError(f"{root}: already exists and is not an empty folder")
    source = heldout_dataset(dataset, seed, num_sequences, frames, size)
    names, events = [], {}
    for index in range(num_sequences):
        name = f"{dataset}-{seed}-{index:04d}"
        item = source[index]
        images, annotations = root / "JPEGImages" / "480p" / name, root / "Annotations" / "480p" / name
        images.mkdir(parents=True)
        annotations.mkdir(parents=True)
        for t, (rgb, labels) in enumerate(zip(_to_uint8(item["frames"]), item["masks"].numpy())):
            _save_jpeg(images / f"{t:05d}.jpg", rgb)
            write_mask(annotations / f"{t:05d}.png", labels.astype(np.uint8))
        names.append(name)
        if "events" in item:
            events[name] = item["events"]
    if events:
        atomic_write_text(root / "events.json", json.dumps(events, indent=1))
    listing = root / "ImageSets" / "2017"
    listing.mkdir(parents=True, exist_ok=True)
    atomic_write_text(listing / "val.txt", "".join(f"{name}\n" for name in names))
    return names


def write_video_example(path_mp4: str | Path, path_mask: str | Path, seed: int = 0, frames: int = 30,
                        size: tuple[int, int] = (360, 640), fps: int = 24) -> int:
    """Render one held-out synthetic sequence as an H.264 mp4 (yuv420p) and its frame-0 mask as a palette
    PNG; returns the number of objects."""
    if size[0] % 2 or size[1] % 2:
        raise StmaError(f"size={tuple(size)}: an H.264 video needs an even height and width")
    item = heldout_dataset("synthetic", seed, 1, frames, size)[0]
    with VideoWriter(path_mp4, Fraction(fps), size[1], size[0]) as writer:
        for rgb in _to_uint8(item["frames"]):
            writer.write(rgb)
    write_mask(path_mask, item["masks"][0].numpy().astype(np.uint8))
    return int(item["num_objects"])
