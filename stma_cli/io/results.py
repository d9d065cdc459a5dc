"""Reading a finished output folder back: its frames, masks and source video, as its manifest records them.

    results = FinishedFolder.open("out/video1")
    for index in results.frames:                 # the video's frame numbers, e.g. range(100, 200)
        labels, palette = results.labels(index)  # (H, W) uint8 object ids and the masks' palette
    results.source()                             # the source video's path (StmaError if unknown or gone)

The masks are read from the palette PNGs when the run wrote them, else from the object masks or the COCO
file (see `--mask-format`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.io.exports import COCO_FILE
from stma_cli.io.masks import DAVIS_PALETTE, palette_keeping_colours, rle_region
from stma_cli.io.output import MANIFEST, MASK_FORMATS, MASKS, NUMBERED, read_manifest
from stma_cli.io.safe_fs import read_json

MAX_COCO_BYTES = 1 << 30


@dataclass
class FinishedFolder:
    """A folder that `stma segment` finished, read through its manifest."""

    folder: Path
    manifest: dict[str, Any]
    frames: range  # the video's frame numbers that have masks
    size: tuple[int, int]  # (width, height) of the video and its masks
    object_ids: list[int]
    _coco: dict[int, list[dict]] | None = field(default=None, repr=False)  # frame -> annotations, once read

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

    @property
    def mask_formats(self) -> list[str]:
        """The mask formats the run wrote (folders from before the formats existed hold palette PNGs)."""
        formats = self.manifest.get("mask_formats", ["png"])
        if not (isinstance(formats, list) and formats and all(f in MASK_FORMATS for f in formats)):
            raise StmaError(f"{self.folder / MANIFEST}: no valid mask formats")
        return formats

    def mask_name(self, index: int) -> str:
        """The file stem of frame `index`'s masks."""
        naming = self.manifest.get("mask_names", NUMBERED)
        if naming == NUMBERED:
            return f"{index:05d}"
        if isinstance(naming, list) and 0 <= index < len(naming) and isinstance(naming[index], str):
            return naming[index]
        raise StmaError(f"{self.folder / MANIFEST}: no mask name for frame {index}")

    def mask_path(self, index: int) -> Path:
        """Where the palette PNG of frame `index` is."""
        return self.folder / MASKS / f"{self.mask_name(index)}.png"

    def labels(self, index: int) -> tuple[np.ndarray, list[int] | None]:
        """The object ids (H, W) of frame `index` and the masks' palette."""
        formats = self.mask_formats
        if "png" in formats:
            path = self.mask_path(index)
            labels, palette = _read_png(path, palette=True)
            self._check_size(path, labels)
            return labels, palette
        if "objects" in formats:
            labels = np.zeros(self.size[::-1], np.uint8)
            for object_id in self.object_ids:
                path = self.folder / MASKS / str(object_id) / f"{self.mask_name(index)}.png"
                inside, _ = _read_png(path, palette=False)
                self._check_size(path, inside)
                labels[inside > 127] = object_id
            return labels, self._palette()
        return self._coco_labels(index), self._palette()

    def _check_size(self, path: Path, labels: np.ndarray) -> None:
        width, height = self.size
        if labels.shape != (height, width):
            raise StmaError(f"{path}: the mask is {labels.shape[1]}x{labels.shape[0]}, expected {width}x{height}")

    def _palette(self) -> list[int]:
        """The DAVIS palette with the objects' colours that the manifest records."""
        colors = self.manifest.get("colors")
        legends = [{value: int(key)} for key, value in (colors.items() if isinstance(colors, dict) else ())
                   if key.isdecimal() and 0 < int(key) < 256 and isinstance(value, str)]
        return palette_keeping_colours(None, legends) or list(DAVIS_PALETTE)

    def _coco_labels(self, index: int) -> np.ndarray:
        """Frame `index` drawn from masks.json (read once)."""
        path = self.folder / COCO_FILE
        height, width = self.size[1], self.size[0]
        try:
            if self._coco is None:
                data = read_json(path, "COCO masks file", MAX_COCO_BYTES)
                frame_of = {image["id"]: image["frame_index"] for image in data["images"]}
                self._coco = {}
                for annotation in data["annotations"]:
                    self._coco.setdefault(frame_of[annotation["image_id"]], []).append(annotation)
            labels = np.zeros((height, width), np.uint8)
            for annotation in self._coco.get(index, []):
                object_id = annotation["object_id"]
                if object_id not in self.object_ids:
                    raise StmaError(f"{path}: object {object_id!r} is not one of the manifest's")
                labels[rle_region(annotation["segmentation"], path, (height, width))] = object_id
            return labels
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StmaError(f"{path}: not a COCO masks file as stma writes ({type(exc).__name__}: {exc})") from None


def _read_png(path: Path, palette: bool) -> tuple[np.ndarray, list[int] | None]:
    """The pixels of a mask PNG that stma wrote (a palette PNG if `palette`, else black and white) and its palette."""
    try:
        with Image.open(path) as image:
            if palette and image.mode != "P":
                raise StmaError(f"{path}: not a palette PNG as stma writes (mode {image.mode})")
            if not palette and image.mode != "L":
                raise StmaError(f"{path}: not a black-and-white PNG as stma writes (mode {image.mode})")
            return np.asarray(image), image.getpalette() if palette else None
    except FileNotFoundError:
        raise StmaError(f"{path}: missing: the folder's masks are incomplete") from None
    except (OSError, Image.DecompressionBombError) as exc:
        raise StmaError(f"{path}: unreadable mask ({exc})") from None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
