"""One pass over a finished output folder: each object's area (and presence) per frame, and the frames
that a person should look at.

Flags, per object:

    presence_drop  the model's presence falls below 0.5 while the object covered 2% of the frame or more
    area_jump      the area changes more than 3x from one frame to the next (above 0.5% of the frame), on a
                   frame without a given mask
    swap           two objects' masks trade places between two frames
    after_cut      the object has a mask on the first frame of a new shot (is it the same object?)
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.io.output import LOGITS, OVERLAY
from stma_cli.io.overlay import overlay
from stma_cli.io.results import FinishedFolder
from stma_cli.io.tracks import area_jumped, presence_fell
from stma_cli.io.video import open_video
from stma_cli.review.shots import MIN_CHANGE, cuts_from_changes, thumbnail

SWAP_IOU = 0.2
WEIGHTS = {"swap": 3, "presence_drop": 2, "after_cut": 2, "area_jump": 1}
THUMBNAIL_WIDTH = 240
MAX_THUMBNAILS = 12
SWAP_SIDE = 128  # masks are compared for swaps at this longest side


@dataclass
class Flag:
    """A frame of one object that a person should look at."""

    kind: str
    object_id: int
    frame: int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "object": self.object_id, "frame": self.frame, "detail": self.detail}


@dataclass
class VideoReview:
    """What one folder's results look like over time, and its flags."""

    folder: Path
    frames: range
    object_ids: list[int]
    area: np.ndarray  # (T, n) share of the frame each object covers
    presence: np.ndarray | None  # (T, n) the model's presence probability, when logits.h5 holds it
    cuts: list[int]  # frames that start a new shot
    flags: list[Flag]
    thumbnails: dict[int, bytes] = field(default_factory=dict)  # JPEG of flagged frames, mask drawn
    source: Path | None = None
    note: str = ""
    palette: list[int] | None = None  # the masks' palette (None: DAVIS's)  # why there are no cuts or thumbnails (no source video)

    @property
    def score(self) -> int:
        """How much there is to look at: flags weighted by kind."""
        return sum(WEIGHTS[flag.kind] for flag in self.flags)

    @property
    def overlay(self) -> Path | None:
        path = self.folder / OVERLAY
        return path if path.is_file() else None

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "score": self.score, "frames": [self.frames.start, self.frames.stop],
                "cuts": self.cuts, "flags": [flag.to_dict() for flag in self.flags],
                "objects": {str(i): {"max_area": round(float(self.area[:, k].max(initial=0)), 5),
                                     "frames_present": int((self.area[:, k] > 0).sum())}
                            for k, i in enumerate(self.object_ids)}}


def review_folder(folder: str | Path, video: str | Path | None = None) -> VideoReview:
    """Scan a finished folder's masks (and its source video, when it can be found) for flags."""
    results = FinishedFolder.open(folder)
    ids = results.object_ids
    presence = _presence(results)
    given = _annotated_frames(results)
    try:
        source: Path | None = results.source(video)
        note = ""
    except StmaError as error:
        source, note = None, f"no shot changes or thumbnails: {error}"
    areas, flags, changes, candidates, palette = [], [], [], {}, None
    previous_small, previous_thumb = None, None
    for index, frame in _frames(results, source):
        labels, frame_palette = results.labels(index)
        palette = palette or frame_palette
        t, flagged = index - results.frames.start, len(flags)
        counts = np.bincount(labels.ravel(), minlength=256)
        areas.append(counts[ids] / labels.size)
        if t > 0 and index not in given:
            flags += _area_flags(ids, areas[-2], areas[-1], index)
            if presence is not None:
                flags += _presence_flags(ids, areas[-2], presence[t - 1], presence[t], index)
        small = labels[:: max(1, max(labels.shape) // SWAP_SIDE), :: max(1, max(labels.shape) // SWAP_SIDE)]
        if previous_small is not None:
            flags += _swap_flags(ids, previous_small, small, index)
        previous_small = small
        if frame is not None:
            thumb = thumbnail(frame)
            if previous_thumb is not None:
                changes.append(float(np.abs(thumb - previous_thumb).mean()))
            previous_thumb = thumb
            if len(flags) > flagged or (changes and changes[-1] >= MIN_CHANGE):  # flagged, or maybe a cut
                candidates[index] = _jpeg(overlay(frame, labels, palette))
    area = np.array(areas).reshape(len(areas), len(ids))
    cuts = [results.frames.start + t for t in cuts_from_changes(changes)] if source is not None else []
    for cut in cuts:
        flags += [Flag("after_cut", i, cut, "has a mask on the first frame of a new shot")
                  for k, i in enumerate(ids) if area[cut - results.frames.start, k] > 0]
    flags.sort(key=lambda f: (f.frame, f.object_id, f.kind))
    weight = {}
    for flag in flags:
        weight[flag.frame] = max(weight.get(flag.frame, 0), WEIGHTS[flag.kind])
    shown = sorted(sorted(weight, key=lambda frame: (-weight[frame], frame))[:MAX_THUMBNAILS])
    thumbnails = {frame: candidates[frame] for frame in shown if frame in candidates}
    return VideoReview(results.folder, results.frames, ids, area, presence, cuts, flags, thumbnails, source, note,
                       palette)


def _frames(results: FinishedFolder, source: Path | None) -> Iterator[tuple[int, np.ndarray | None]]:
    """(frame number, RGB frame or None) for each frame that has a mask."""
    if source is None:
        yield from ((index, None) for index in results.frames)
        return
    with open_video(source) as video:
        if (video.width, video.height) != results.size:
            raise StmaError(f"{source}: the video is {video.width}x{video.height}, but the masks in "
                            f"{results.folder} are {results.size[0]}x{results.size[1]}; pass it with --video")
        yield from video.read(results.frames.start, results.frames.stop)


def _annotated_frames(results: FinishedFolder) -> set[int]:
    """The frames whose masks the user gave (their objects start or are reset there)."""
    masks = (results.manifest.get("provenance") or {}).get("masks")
    return {m["frame"] for m in masks if isinstance(m, dict) and isinstance(m.get("frame"), int)} \
        if isinstance(masks, list) else set()


def _presence(results: FinishedFolder) -> np.ndarray | None:
    """The `presence` dataset of logits.h5 (frames x objects), when there is one of the right shape."""
    path = results.folder / LOGITS
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as file:
            if "presence" not in file:
                return None
            presence = np.asarray(file["presence"][()], dtype=np.float32)
    except OSError as exc:
        raise StmaError(f"{path}: unreadable ({exc})") from None
    if presence.shape != (len(results.frames), len(results.object_ids)):
        raise StmaError(f"{path}: presence has shape {presence.shape}, expected "
                        f"{(len(results.frames), len(results.object_ids))}")
    return presence


def _area_flags(ids: list[int], before: np.ndarray, after: np.ndarray, frame: int) -> list[Flag]:
    return [Flag("area_jump", object_id, frame, f"area {_share(before[k])} -> {_share(after[k])}")
            for k, object_id in enumerate(ids) if area_jumped(before[k], after[k])]


def _presence_flags(ids: list[int], area_before: np.ndarray, before: np.ndarray, after: np.ndarray,
                    frame: int) -> list[Flag]:
    return [Flag("presence_drop", object_id, frame,
                 f"presence {before[k]:.2f} -> {after[k]:.2f} while it covered {_share(area_before[k])}")
            for k, object_id in enumerate(ids) if presence_fell(before[k], after[k], area_before[k])]


def _swap_flags(ids: list[int], before: np.ndarray, after: np.ndarray, frame: int) -> list[Flag]:
    """Pairs of objects whose masks each overlap the other's previous mask more than their own."""
    joint = np.bincount(before.ravel().astype(np.int64) * 256 + after.ravel(), minlength=65536).reshape(256, 256)
    area_before, area_after = joint.sum(1), joint.sum(0)

    def iou(old: int, new: int) -> float:
        union = area_before[old] + area_after[new] - joint[old, new]
        return joint[old, new] / union if union else 0.0

    flags = []
    for a_index, a in enumerate(ids):
        for b in ids[a_index + 1:]:
            crossed = min(iou(a, b), iou(b, a))
            if crossed > SWAP_IOU and crossed > max(iou(a, a), iou(b, b)):
                flags.append(Flag("swap", a, frame, f"objects {a} and {b} traded places"))
    return flags


def _share(value: float) -> str:
    return f"{100 * value:.1f}%"


def _jpeg(rgb: np.ndarray) -> bytes:
    image = Image.fromarray(rgb)
    image = image.resize((THUMBNAIL_WIDTH, max(1, round(image.height * THUMBNAIL_WIDTH / image.width))))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()
