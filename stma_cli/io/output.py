"""The output folder of one video: masks, overlay video, logits and the manifest that marks it finished.

    <folder>/masks/<name>.png   palette PNG per frame (frame-folder stems, else 00000, 00001, ...)
    <folder>/masks.json         COCO RLE masks (mask format "coco", see stma_cli.io.exports)
    <folder>/masks/<id>/<name>.png  one binary PNG per object and frame (mask format "objects")
    <folder>/overlay.mp4        H.264 overlay (optional)
    <folder>/logits.h5          per-frame logits (optional, see stma_cli.io.logits)
    <folder>/manifest.json      written last: its presence means the folder is complete; it records the
                                provenance of the results (see stma_cli.io.provenance)
    <folder>/.stma.lock         while a run writes the folder, and after a run that did not finish it
                                (see stma_cli.io.claim)

The mask formats are "png" (the default), "coco" and "objects", any of them together. Every file is
written under a temporary name and renamed when complete. `inspect_folder` tells what a
folder holds before a run, `clear_for_run` removes stma's own earlier results and nothing else. Each of
them, and `VideoOutput`, first refuses a symbolic link (or a FIFO, a device, a folder at a file's name) at
any of the paths above: stma neither writes through nor deletes what it did not make.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from stma_cli import __version__
from stma_cli.errors import StmaError, UsageError
from stma_cli.io.atomic import atomic_write_text, is_temporary
from stma_cli.io.exports import COCO_FILE, CocoWriter, write_object_masks
from stma_cli.io.claim import LOCK_FILE, read_record
from stma_cli.io.logits import LogitsWriter
from stma_cli.io.masks import full_palette, write_mask
from stma_cli.io.overlay import overlay as draw_overlay
from stma_cli.io.tracks import ObjectTracks
from stma_cli.io.safe_fs import check_output_path, read_json
from stma_cli.io.video_writer import VideoWriter

MANIFEST = "manifest.json"
MASKS = "masks"
OVERLAY = "overlay.mp4"
LOGITS = "logits.h5"
NUMBERED = "numbered"  # masks named 00000.png, 00001.png, ... (else: a list of frame stems)
_NUMBERED_MASK = re.compile(r"\d{5,}\.png")
_OBJECT_FOLDER = re.compile(r"[1-9][0-9]{0,2}")  # masks/<id>/ of the "objects" format
MASK_FORMATS = ("png", "coco", "objects")

MaskNames = str | list[str]  # NUMBERED, or the stems of a frame folder's frames


def parse_mask_formats(text: str) -> tuple[str, ...]:
    """The formats of `--mask-format`: one of MASK_FORMATS or a comma list, e.g. "png,coco"; UsageError otherwise."""
    formats = tuple(dict.fromkeys(part.strip() for part in text.split(",")))
    unknown = [name for name in formats if name not in MASK_FORMATS]
    if unknown or not formats:
        raise UsageError(f"--mask-format {text!r}: expected {', '.join(MASK_FORMATS)} or a comma list of them")
    return formats


def mask_outputs(formats: Sequence[str], object_ids: Sequence[int | str] = ("<id>",)) -> list[str]:
    """The names in an output folder that hold the masks of `formats`, as the manifest lists them (objects:
    masks/<id> for each of `object_ids`)."""
    names = [MASKS] if "png" in formats else []
    names += [COCO_FILE] if "coco" in formats else []
    return names + ([f"{MASKS}/{object_id}" for object_id in object_ids] if "objects" in formats else [])


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
        first_frame: int = 0,
        frame_count: int | None = None,
        mask_formats: Sequence[str] = ("png",),
    ) -> None:
        self.folder = Path(folder)
        self.frame_names = list(frame_names) if frame_names is not None else None
        self.first_frame = first_frame  # a range of the video: masks keep the video's frame numbers
        self.frame_count = len(self.frame_names) if frame_count is None and self.frame_names else frame_count
        self.fps = Fraction(fps)
        self.size = (int(size[0]), int(size[1]))
        self.palette = full_palette(palette)
        self.object_ids = [int(i) for i in object_ids]
        self.frames_written = 0
        self.tracks = ObjectTracks(self.object_ids, first_frame)
        self.mask_formats = tuple(mask_formats)
        if logits and logits_shape is None:
            raise ValueError("logits_shape is required when writing logits")
        if not self.mask_formats or set(self.mask_formats) - set(MASK_FORMATS):
            raise ValueError(f"mask formats {self.mask_formats}: expected some of {MASK_FORMATS}")
        _check_paths(self.folder)
        if "objects" in self.mask_formats:
            for object_id in self.object_ids:
                check_output_path(self.folder / MASKS / str(object_id), "object's mask folder", folder=True)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if {"png", "objects"} & set(self.mask_formats):
                (self.folder / MASKS).mkdir(exist_ok=True)
            (self.folder / MANIFEST).unlink(missing_ok=True)
        except OSError as exc:
            raise StmaError(f"{self.folder}: cannot create the output folder ({exc.strerror or exc})") from None
        width, height = self.size
        self._coco = CocoWriter(self.folder / COCO_FILE, self.size, self.object_ids) if "coco" in mask_formats else None
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

    def mask_name(self, index: int) -> str:
        """The file stem of frame `index`'s masks: the frame's own stem for a frame folder, else 00000, ..."""
        return self.frame_names[index] if self.frame_names is not None else f"{index:05d}"

    def mask_path(self, index: int) -> Path:
        """Where the palette PNG of frame `index` goes."""
        return self.folder / MASKS / f"{self.mask_name(index)}.png"

    def write(self, index: int, frame_rgb: np.ndarray, labels: np.ndarray, presence: np.ndarray,
              logits: np.ndarray | None = None, given: Sequence[int] = ()) -> None:
        """Write frame `index` (frames come in order): its mask, overlay frame, each object's presence (K,;
        NaN where the model does not follow the object, stored as 0), logits (K+1, H', W'), and which
        objects' masks the user gave on this frame (see `ObjectTracks`)."""
        if index != self.first_frame + self.frames_written:
            raise ValueError(f"frames must be written in order: expected frame {self.first_frame + self.frames_written}, "
                             f"got {index}")
        if labels.shape != (self.size[1], self.size[0]):
            raise ValueError(f"labels {labels.shape} do not match the video size {self.size[0]}x{self.size[1]}")
        if "png" in self.mask_formats:
            write_mask(self.mask_path(index), labels, self.palette)
        if "objects" in self.mask_formats:
            write_object_masks(self.folder / MASKS, self.mask_name(index), labels, self.object_ids)
        if self._coco is not None:
            self._coco.write(index, self.mask_name(index), labels)
        if self._overlay is not None:
            self._overlay.write(draw_overlay(frame_rgb, labels, self.palette))
        if self._logits is not None:
            if logits is None:
                raise ValueError("this output writes logits: pass them for every frame")
            self._logits.append(logits, np.nan_to_num(presence, nan=0.0))
        self.tracks.add(labels, presence, given)
        self.frames_written += 1

    def finish(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Close the overlay and logits, then write manifest.json last; return the manifest written.

        The manifest holds `frames`, `objects`, `mask_formats`, `colors` (each object's palette colour),
        `tracks` (per object: see `ObjectTracks.summary`), `fps`, `size`, `files`, `stma_version`, updated
        with the caller's entries (model, seconds, provenance, ...).
        """
        if self.frame_count is not None and self.frames_written != self.frame_count:
            raise ValueError(f"wrote {self.frames_written} frames of {self.frame_count}")
        try:
            for writer in (self._coco, self._overlay, self._logits):
                if writer is not None:
                    writer.close()
        except BaseException:
            self.abort()
            raise
        self._open = False
        files = mask_outputs(self.mask_formats, self.object_ids)
        files += [name for name, on in ((OVERLAY, self._overlay), (LOGITS, self._logits)) if on is not None]
        record: dict[str, Any] = {
            "frames": self.frames_written,
            "objects": self.object_ids,
            "mask_formats": list(self.mask_formats),
            "colors": {str(i): "#{:02x}{:02x}{:02x}".format(*self.palette[3 * i:3 * i + 3]) for i in self.object_ids},
            "tracks": self.tracks.summary(),
            "fps": float(self.fps),
            "size": list(self.size),
            "files": files,
            "stma_version": __version__,
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
    if not os.path.lexists(path):
        raise StmaError(f"{path}: no manifest (the output is not finished)")
    data = read_json(path, "manifest")
    if not isinstance(data, dict) or "stma_version" not in data:
        raise StmaError(f"{path}: not a manifest written by stma")
    return data


def read_manifest_or_none(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of a finished output folder, or None (no manifest, or not one written by stma)."""
    try:
        return read_manifest(folder)
    except StmaError:
        return None


def is_finished(folder: str | Path) -> bool:
    """Whether the folder holds a manifest written by stma, i.e. a previous run completed it."""
    return read_manifest_or_none(folder) is not None


@dataclass
class FolderState:
    """What an output folder holds before a run writes it."""

    manifest: dict[str, Any] | None = None  # a finished folder's manifest
    unfinished: dict[str, Any] | None = None  # the record of an earlier run that did not finish ({} if unreadable)
    foreign: list[str] = field(default_factory=list)  # files at stma's names that no stma record covers


def inspect_folder(folder: str | Path, mask_names: MaskNames) -> FolderState:
    """What `folder` holds at the names a run writes (`mask_names` being this run's masks)."""
    folder = Path(folder)
    state = FolderState()
    if not folder.is_dir():
        return state
    _check_paths(folder)
    if (folder / MANIFEST).exists():
        state.manifest = read_manifest_or_none(folder)
        if state.manifest is None:
            state.foreign.append(MANIFEST)
    if (folder / LOCK_FILE).exists():
        state.unfinished = read_record(folder) or {}
    if state.manifest is None and state.unfinished is None:
        state.foreign += [name for name in (OVERLAY, LOGITS, COCO_FILE) if (folder / name).exists()]
        masks = _named_masks(folder, [mask_names])
        state.foreign += [path.relative_to(folder).as_posix() for path in masks[:2]]
        if len(masks) > 2:
            state.foreign.append(f"{len(masks) - 2} more masks")
    return state


def clear_for_run(folder: str | Path, earlier: list[MaskNames]) -> None:
    """Remove what stma wrote into `folder` before: temporary files left by killed runs, the manifest,
    overlay, logits, COCO masks, and the masks named as in `earlier` (the namings of earlier runs and of this
    one), in masks/ and in its object folders masks/<id>/ (removed when that leaves them empty).

    Nothing else is touched. A link, or anything but a file where stma writes a file, is an error.
    """
    folder = Path(folder)
    _check_paths(folder)
    masks = _named_masks(folder, earlier)
    object_folders = _object_folders(folder)
    for place in (folder, folder / MASKS, *object_folders):
        if place.is_dir():
            for path in place.iterdir():
                if is_temporary(path.name) and path.is_file() and not path.is_symlink():
                    path.unlink(missing_ok=True)
    for name in (MANIFEST, OVERLAY, LOGITS, COCO_FILE):
        (folder / name).unlink(missing_ok=True)
    for path in masks:
        path.unlink(missing_ok=True)
    for place in object_folders:
        if not any(place.iterdir()):
            place.rmdir()


def is_output_mask(name: str, naming: Any) -> bool:
    """Whether a file name in masks/ is one that `naming` (NUMBERED or a list of stems) gives."""
    if naming == NUMBERED:
        return _NUMBERED_MASK.fullmatch(name) is not None
    return isinstance(naming, (list, set)) and name.endswith(".png") and name[:-4] in naming


def _check_paths(folder: Path) -> None:
    """StmaError if a path where stma writes in `folder` is a symbolic link, or not a file (a folder for masks/)."""
    check_output_path(folder / LOCK_FILE, "lock file")
    check_output_path(folder / MASKS, "masks folder", folder=True)
    for name, what in ((MANIFEST, "manifest"), (OVERLAY, "overlay video"), (LOGITS, "logits file"),
                       (COCO_FILE, "COCO masks file")):
        check_output_path(folder / name, what)


def _object_folders(folder: Path) -> list[Path]:
    """The folders masks/<id>/ of the "objects" format; StmaError if one of them is a link."""
    masks = folder / MASKS
    if not masks.is_dir():
        return []
    found = sorted(path for path in masks.iterdir() if _OBJECT_FOLDER.fullmatch(path.name) and
                   (path.is_symlink() or path.is_dir()))
    for path in found:
        check_output_path(path, "object's mask folder", folder=True)
    return found


def _named_masks(folder: Path, namings: list[Any]) -> list[Path]:
    """The files in folder/masks/ and its object folders that the given namings produce; StmaError if one is a
    link or not a file."""
    lookups = [{stem for stem in naming if isinstance(stem, str)} if isinstance(naming, list) else naming
               for naming in namings]
    places = [folder / MASKS, *_object_folders(folder)] if (folder / MASKS).is_dir() else []
    named = sorted(path for place in places for path in place.iterdir()
                   if any(is_output_mask(path.name, naming) for naming in lookups))
    for path in named:
        check_output_path(path, "mask")
    return named
