"""Fixtures for the CLI tests: random-weights STMA weights and synthetic videos with known objects."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stma_cli.io.masks import write_mask
from stma_cli.io.video_writer import VideoWriter

HEIGHT, WIDTH = 96, 128
OBJECT_SIZE = 24


@dataclass
class SyntheticVideo:
    """A video of textured squares moving over a gradient, and its true object ids per frame."""

    path: Path  # an .mp4 file, or a folder of PNG frames
    mask: Path  # palette PNG of frame 0
    labels: list[np.ndarray]  # (H, W) uint8 object ids of every frame
    palette: list[int] | None

    @property
    def frames(self) -> int:
        return len(self.labels)

    def write_mask(self, path: Path, frame: int, ids: Sequence[int]) -> Path:
        """Write the true mask of `frame`, keeping only objects `ids`; returns `path`."""
        labels = self.labels[frame]
        write_mask(path, np.where(np.isin(labels, ids), labels, 0).astype(np.uint8), self.palette)
        return path


def render(t: int, ids: Sequence[int], height: int = HEIGHT, width: int = WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """Frame `t`: (RGB, object ids). Object k starts in its own corner and moves 3 px right, 2 px down or up per frame."""
    ys, xs = np.mgrid[:height, :width]
    rgb = np.stack([40 + xs * 100 // width, 40 + ys * 100 // height, np.full_like(xs, 70)], axis=-1).astype(np.uint8)
    labels = np.zeros((height, width), np.uint8)
    for k, object_id in enumerate(ids):
        texture = np.random.default_rng(object_id).integers(0, 256, (OBJECT_SIZE, OBJECT_SIZE, 3), dtype=np.uint8)
        texture[..., k % 3] = 240  # each object has its own dominant colour
        y = (8 + 2 * t) if k % 2 == 0 else (height - OBJECT_SIZE - 8 - 2 * t)
        x = 4 + 36 * k + 3 * t
        y, x = y % (height - OBJECT_SIZE), x % (width - OBJECT_SIZE)
        rgb[y : y + OBJECT_SIZE, x : x + OBJECT_SIZE] = texture
        labels[y : y + OBJECT_SIZE, x : x + OBJECT_SIZE] = object_id
    return rgb, labels


VideoFactory = Callable[..., SyntheticVideo]


@pytest.fixture(scope="session")
def weights(tiny_weights: Callable[[int], Path]) -> str:
    """A folder of random tiny STMA weights, for `--weights`."""
    return str(tiny_weights(0))


@pytest.fixture
def make_video(tmp_path: Path) -> VideoFactory:
    """`make_video(name, frames=8, ids=(1, 2), frame_folder=False, palette=None, folder=tmp_path)`.

    Writes `folder/name.mp4` (H.264, near-lossless) or the frame folder `folder/name/` of PNGs named
    `frame_000.png, frame_010.png, ...`, and the first-frame mask `folder/name.png`.
    """

    def make(name: str = "clip", frames: int = 8, ids: Sequence[int] = (1, 2), frame_folder: bool = False,
             palette: list[int] | None = None, folder: Path = tmp_path) -> SyntheticVideo:
        folder.mkdir(parents=True, exist_ok=True)
        rendered = [render(t, ids) for t in range(frames)]
        if frame_folder:
            path = folder / name
            path.mkdir()
            for t, (rgb, _) in enumerate(rendered):
                Image.fromarray(rgb).save(path / f"frame_{10 * t:03d}.png")
        else:
            path = folder / f"{name}.mp4"
            with VideoWriter(path, Fraction(10), WIDTH, HEIGHT, crf=8) as writer:
                for rgb, _ in rendered:
                    writer.write(rgb)
        video = SyntheticVideo(path, folder / f"{name}.png", [labels for _, labels in rendered], palette)
        video.write_mask(video.mask, 0, ids)
        return video

    return make
