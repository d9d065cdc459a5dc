"""Reading a finished output folder back: its frames, masks and source video, as its manifest records them.

    results = FinishedFolder.open("out/video1")
    for index in results.frames:                 # the video's frame numbers, e.g. range(100, 200)
        labels, palette = results.labels(index)  # (H, W) uint8 object ids and the PNG's palette
    results.source()                             # the source video's path (StmaError if unknown or gone)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.io.output import MANIFEST, MASKS, NUMBERED, read_manifest


@dataclass
class FinishedFolder:
    """A folder that `stma segment` finished, read through its manifest."""

    folder: Path
    manifest: dict[str, Any]
    frames: range  # the video's frame numbers that have masks
    size: tuple[int, int]  # (width, height) of the video and its masks
    object_ids: list[int]

    @classmethod
    def open(cls, folder: str | Path) -> "FinishedFolder":
        """Read `folder`'s manifest; StmaError if the folder is not finished or the manifest is not stma's."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        frames, span = manifest.get("frames"), manifest.get("frame_range")
        first, end = span if isinstance(span, list) and len(span) == 2 else (0, frames)
        size, ids = manifest.get("size"), manifest.get("objects")
        if not all(_count(v) for v in (first, end)) or end <= first:
            raise StmaError(f"{folder / MANIFEST}: no valid frame count or range")
        if not (isinstance(size, list) and len(size) == 2 and all(_count(v) and v > 0 for v in size)):
            raise StmaError(f"{folder / MANIFEST}: no valid frame size")
        if not (isinstance(ids, list) and all(_count(v) and 1 <= v <= 254 for v in ids)):
            raise StmaError(f"{folder / MANIFEST}: no valid object ids")
        return cls(folder, manifest, range(first, end), (size[0], size[1]), list(ids))

    def source(self, video: str | Path | None = None) -> Path:
        """The source video: `video` if given, else the path the manifest records."""
        if video is not None:
            return Path(video)
        recorded = (self.manifest.get("provenance") or {}).get("input") or {}
        path = recorded.get("path") if isinstance(recorded, dict) else None
        if not isinstance(path, str):
            raise StmaError(f"{self.folder / MANIFEST}: no source video is recorded (it was read from standard "
                            "input); pass it with --video")
        if not Path(path).exists():
            raise StmaError(f"{path}: the source video of {self.folder} is gone; pass it with --video")
        return Path(path)

    def mask_path(self, index: int) -> Path:
        """Where the mask of frame `index` is."""
        naming = self.manifest.get("mask_names", NUMBERED)
        if naming == NUMBERED:
            return self.folder / MASKS / f"{index:05d}.png"
        if isinstance(naming, list) and 0 <= index < len(naming) and isinstance(naming[index], str):
            return self.folder / MASKS / f"{naming[index]}.png"
        raise StmaError(f"{self.folder / MANIFEST}: no mask name for frame {index}")

    def labels(self, index: int) -> tuple[np.ndarray, list[int] | None]:
        """The object ids (H, W) and palette of frame `index`'s palette PNG."""
        path = self.mask_path(index)
        try:
            with Image.open(path) as image:
                if image.mode != "P":
                    raise StmaError(f"{path}: not a palette PNG as stma writes (mode {image.mode})")
                labels, palette = np.asarray(image), image.getpalette()
        except FileNotFoundError:
            raise StmaError(f"{path}: missing: the folder's masks are incomplete") from None
        except (OSError, Image.DecompressionBombError) as exc:
            raise StmaError(f"{path}: unreadable mask ({exc})") from None
        width, height = self.size
        if labels.shape != (height, width):
            raise StmaError(f"{path}: the mask is {labels.shape[1]}x{labels.shape[0]}, expected {width}x{height}")
        return labels, palette


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
