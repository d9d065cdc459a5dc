"""Render a finished output folder's overlay again from its masks and the source video, without the model.

    style = OverlayStyle(opacity=0.3, colors={1: (255, 0, 0)}, contour_only=False, ids=True)
    render_folder("out/video1", style)                      # writes out/video1/overlay.mp4
    render_folder("out/video1", style, video="moved.mp4")   # the source has moved since

The masks are the palette PNGs in masks/ that `stma segment` wrote; the frames, frame rate, range and
source come from manifest.json. The overlay is written under a temporary name and renamed when complete,
while the folder's lock is held; the manifest then lists it among the folder's files.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stma_cli.errors import StmaError
from stma_cli.io.atomic import atomic_write_text
from stma_cli.io.claim import claim_folder
from stma_cli.io.output import MANIFEST, MASKS, OVERLAY
from stma_cli.io.overlay import draw_ids, overlay, palette_colors
from stma_cli.io.results import FinishedFolder
from stma_cli.io.video import open_video
from stma_cli.io.video_writer import VideoWriter

_COLOR = re.compile(r"#?([0-9a-fA-F]{6})")


@dataclass
class OverlayStyle:
    """How objects are drawn: fill opacity, colours by object id (else the masks' palette), outlines, labels."""

    opacity: float = 0.5
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    contour_only: bool = False
    ids: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.opacity <= 1.0:
            raise StmaError(f"--opacity {self.opacity}: expected a number from 0 to 1")

    def palette(self, palette: list[int] | None) -> list[int]:
        """The masks' palette (None: DAVIS) with this style's colours put in."""
        table = palette_colors(palette).copy()
        for object_id, rgb in self.colors.items():
            table[object_id] = rgb
        return table.flatten().tolist()


def parse_colors(text: str) -> dict[int, tuple[int, int, int]]:
    """'1=#ff0000,2=00ff00' -> {1: (255, 0, 0), 2: (0, 255, 0)}; StmaError naming the part at fault."""
    colors = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        key, sep, value = part.partition("=")
        key, match = key.strip(), _COLOR.fullmatch(value.strip())
        if not sep or not key.isascii() or not key.isdecimal() or len(key) > 3 or match is None:
            raise StmaError(f"--colors {part!r}: expected ID=#RRGGBB, e.g. 1=#ff0000")
        object_id = int(key)
        if not 1 <= object_id <= 254:
            raise StmaError(f"--colors {part!r}: object ids run from 1 to 254")
        hex_value = match.group(1)
        colors[object_id] = (int(hex_value[0:2], 16), int(hex_value[2:4], 16), int(hex_value[4:6], 16))
    return colors


@dataclass
class RenderReport:
    """What `render_folder` did: the overlay written, from which video, over how many frames."""

    folder: str
    overlay: str
    video: str
    frames: int

    def to_dict(self) -> dict[str, Any]:
        return {"status": "ok", "folder": self.folder, "overlay": self.overlay, "video": self.video,
                "frames": self.frames}


def render_folder(folder: str | Path, style: OverlayStyle, video: str | Path | None = None) -> RenderReport:
    """Write `folder`/overlay.mp4 from the folder's masks and its source video (or `video`)."""
    results = FinishedFolder.open(folder)
    source = results.source(video)
    with claim_folder(results.folder) as claim:
        try:
            written = _render(results, source, style)
            _list_overlay(results.folder, results.manifest)
        finally:
            claim.leave()
    return RenderReport(str(results.folder), str(results.folder / OVERLAY), str(source), written)


def _render(results: FinishedFolder, source: Path, style: OverlayStyle) -> int:
    """Encode the overlay of the folder's frames; returns the number of frames written."""
    width, height = results.size
    with open_video(source) as frames:
        if (frames.width, frames.height) != (width, height):
            raise StmaError(f"{source}: the video is {frames.width}x{frames.height}, but the masks in "
                            f"{results.folder} are {width}x{height}; pass the source video with --video")
        written = 0
        with VideoWriter(results.folder / OVERLAY, frames.fps, width, height) as writer:
            for index, frame in frames.read(results.frames.start, results.frames.stop):
                labels, palette = results.labels(index)
                colors = style.palette(palette)
                drawn = overlay(frame, labels, colors, alpha=0.0 if style.contour_only else style.opacity)
                writer.write(draw_ids(drawn, labels, colors) if style.ids else drawn)
                written += 1
            if written != len(results.frames):
                raise StmaError(f"{source}: the video ends at frame {results.frames.start + written}, but "
                                f"{results.folder} has masks up to frame {results.frames.stop - 1}; pass the "
                                "source video with --video")
    return written


def _list_overlay(folder: Path, manifest: dict[str, Any]) -> None:
    """Record the overlay among the folder's files (and outputs), so that a later run sees it as stma's."""
    files = manifest.get("files") if isinstance(manifest.get("files"), list) else [MASKS]
    manifest["files"] = files + ([OVERLAY] if OVERLAY not in files else [])
    outputs = (manifest.get("provenance") or {}).get("outputs")
    if isinstance(outputs, list) and OVERLAY not in outputs:
        outputs.append(OVERLAY)
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")
