"""The output folder of one video: masks, overlay video, logits and the manifest that marks it finished.

    <folder>/masks/<name>.png   palette PNG per frame (frame-folder stems, else 00000, 00001, ...)
    <folder>/overlay.mp4        H.264 overlay (optional)
    <folder>/logits.h5          per-frame logits (optional, see stma_cli.io.logits)
    <folder>/manifest.json      written last: its presence means the folder is complete

Every file is written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from stma_cli import __version__
from stma_cli.errors import StmaError
from stma_cli.io.atomic import atomic_write_text
from stma_cli.io.logits import LogitsWriter
from stma_cli.io.masks import DAVIS_PALETTE, write_mask
from stma_cli.io.overlay import overlay as draw_overlay
from stma_cli.io.video import VideoWriter

MANIFEST = "manifest.json"
MASKS = "masks"
OVERLAY = "overlay.mp4"
LOGITS = "logits.h5"


class VideoOutput:
    """Writes one video's results frame by frame; `finish` completes the folder, `abort` leaves it unfinished.

    An existing manifest is removed on creation, so an interrupted rerun never looks finished. After `abort`
    (or an exception inside a `with` block) the masks already written stay, the overlay and logits are
    discarded, and no manifest is written.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        frame_names: Sequence[str] | None,
        fps: Fraction,
        size: tuple[int, int],
        palette: Sequence[int] | None,
        object_ids: Sequence[int],
        overlay: bool = True,
        logits: bool = True,
        logits_shape: tuple[int, int] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.frame_names = list(frame_names) if frame_names is not None else None
        self.fps = Fraction(fps)
        self.size = (int(size[0]), int(size[1]))
        self.palette = list(palette) if palette is not None else list(DAVIS_PALETTE)
        self.object_ids = [int(i) for i in object_ids]
        self.frames_written = 0
        if logits and logits_shape is None:
            raise ValueError("logits_shape is required when writing logits")
        try:
            (self.folder / MASKS).mkdir(parents=True, exist_ok=True)
            (self.folder / MANIFEST).unlink(missing_ok=True)
        except OSError as exc:
            raise StmaError(f"{self.folder}: cannot create the output folder ({exc.strerror or exc})") from None
        width, height = self.size
        self._overlay = VideoWriter(self.folder / OVERLAY, self.fps, width, height) if overlay else None
        self._logits: LogitsWriter | None = None
        if logits and logits_shape is not None:
            logit_height, logit_width = logits_shape
            logit_attrs = {
                "object_ids": self.object_ids,
                "fps": self.fps,
                "stride": (height / logit_height, width / logit_width),
                "stma_version": __version__,
                **(attrs or {}),
            }
            try:
                self._logits = LogitsWriter(
                    self.folder / LOGITS, len(self.object_ids) + 1, logit_height, logit_width, logit_attrs
                )
            except BaseException:
                self.abort()
                raise
        self._open = True

    def mask_path(self, index: int) -> Path:
        """Where the mask of frame `index` goes."""
        name = self.frame_names[index] if self.frame_names is not None else f"{index:05d}"
        return self.folder / MASKS / f"{name}.png"

    def write(self, index: int, frame_rgb: np.ndarray, labels: np.ndarray, logits: np.ndarray | None = None) -> None:
        """Write frame `index` (frames come in order): its mask, overlay frame and logits (K+1, H', W')."""
        if index != self.frames_written:
            raise ValueError(f"frames must be written in order: expected frame {self.frames_written}, got {index}")
        if labels.shape != (self.size[1], self.size[0]):
            raise ValueError(f"labels {labels.shape} do not match the video size {self.size[0]}x{self.size[1]}")
        write_mask(self.mask_path(index), labels, self.palette)
        if self._overlay is not None:
            self._overlay.write(draw_overlay(frame_rgb, labels, self.palette))
        if self._logits is not None:
            if logits is None:
                raise ValueError("this output writes logits: pass them for every frame")
            self._logits.append(logits)
        self.frames_written += 1

    def finish(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Close the overlay and logits, then write manifest.json last; return the manifest written.

        The manifest holds `frames`, `objects`, `fps`, `size`, `files`, updated with the caller's entries
        (model, seconds, ...).
        """
        if self.frame_names is not None and self.frames_written != len(self.frame_names):
            raise ValueError(f"wrote {self.frames_written} frames of {len(self.frame_names)}")
        try:
            for writer in (self._overlay, self._logits):
                if writer is not None:
                    writer.close()
        except BaseException:
            self.abort()
            raise
        self._open = False
        files = [MASKS] + [name for name, on in ((OVERLAY, self._overlay), (LOGITS, self._logits)) if on is not None]
        record: dict[str, Any] = {
            "frames": self.frames_written,
            "objects": self.object_ids,
            "fps": float(self.fps),
            "size": list(self.size),
            "files": files,
            **manifest,
        }
        try:
            atomic_write_text(self.folder / MANIFEST, json.dumps(record, indent=2, default=str) + "\n")
        except OSError as exc:
            raise StmaError(f"{self.folder / MANIFEST}: cannot write the manifest ({exc.strerror or exc})") from None
        return record

    def abort(self) -> None:
        """Discard the overlay and logits in progress; write no manifest."""
        self._open = False
        for writer in (self._overlay, self._logits):
            if writer is not None:
                writer.abort()

    def __enter__(self) -> VideoOutput:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._open:
            self.abort()


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a finished output folder."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StmaError(f"{path}: no manifest (the output is not finished)") from None
    except (OSError, ValueError) as exc:
        raise StmaError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(data, dict):
        raise StmaError(f"{path}: manifest is not a JSON object")
    return data


def is_finished(folder: str | Path) -> bool:
    """Whether the folder holds a readable manifest, i.e. a previous run completed it."""
    try:
        read_manifest(folder)
    except StmaError:
        return False
    return True
