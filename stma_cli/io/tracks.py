"""Each object over time: where it is present, how sure the model is, and the frames worth a look.

`ObjectTracks` collects per frame each object's area and presence while a video is written; its
`summary()` goes into the manifest and the `--json` record. `stma review` flags frames by the same
rules (`presence_fell`, `area_jumped`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

PRESENT = 0.5  # presence at or above this: the model says the object is in the frame
LARGE = 0.02  # share of the frame above which losing an object is worth a look
JUMP = 3.0  # an area change of more than this factor between two frames
JUMP_FLOOR = 0.005  # area changes among masks smaller than this share of the frame do not count
MAX_LISTED = 100  # frames listed per object and kind in a summary


def presence_fell(before: float, after: float, area_before: float) -> bool:
    """Whether presence dropped below PRESENT while the object covered LARGE of the frame or more."""
    return before >= PRESENT > after and area_before >= LARGE


def area_jumped(before: float, after: float) -> bool:
    """Whether an object's area (shares of the frame) changed more than JUMP-fold between two frames."""
    low, high = sorted((before, after))
    return high >= JUMP_FLOOR and high > JUMP * max(low, JUMP_FLOOR / 5)


class ObjectTracks:
    """Per object: frames with a mask, mean presence, and the frames where presence fell or the area jumped."""

    def __init__(self, object_ids: list[int], first_frame: int = 0) -> None:
        self.object_ids = list(object_ids)
        self.first_frame = first_frame
        self._areas: list[np.ndarray] = []
        self._presence: list[np.ndarray] = []
        self._given: list[np.ndarray] = []

    def add(self, labels: np.ndarray, presence: np.ndarray, given: Sequence[int] = ()) -> None:
        """The next frame: its labels (H, W), each object's presence (K,; NaN where the model does not follow
        the object yet) and the objects whose mask the user gave on this frame."""
        counts = np.bincount(labels.ravel(), minlength=256)
        self._areas.append(counts[self.object_ids] / labels.size)
        self._presence.append(np.asarray(presence, dtype=np.float32))
        self._given.append(np.isin(self.object_ids, list(given)))

    def summary(self) -> dict[str, dict[str, Any]]:
        """{object id: {"frames": [[first, last], ...] with a mask, "mean_presence", "presence_falls",
        "area_jumps"}}; frames are the video's frame numbers.

        Only the frames where the model follows the object count: its mean presence leaves out the frames
        before it appears, and the frame where it appears, like any frame whose mask the user gave, is no
        area jump.
        """
        if not self._areas:
            return {}
        areas, presence, given = np.stack(self._areas), np.stack(self._presence), np.stack(self._given)
        summary = {}
        for k, object_id in enumerate(self.object_ids):
            area, present = areas[:, k], presence[:, k]
            followed = ~np.isnan(present)
            falls = [t for t in range(1, len(area)) if followed[t - 1] and followed[t]
                     and presence_fell(present[t - 1], present[t], area[t - 1])]
            jumps = [t for t in range(1, len(area)) if followed[t - 1] and not given[t, k]
                     and area_jumped(area[t - 1], area[t])]
            summary[str(object_id)] = {
                "frames": self._runs(area > 0),
                "mean_presence": round(float(present[followed].mean()), 4) if followed.any() else 0.0,
                "presence_falls": [self.first_frame + t for t in falls[:MAX_LISTED]],
                "area_jumps": [self.first_frame + t for t in jumps[:MAX_LISTED]],
            }
        return summary

    def _runs(self, present: np.ndarray) -> list[list[int]]:
        """[first, last] frame numbers of each run of frames where `present` holds."""
        edges = np.flatnonzero(np.diff(np.concatenate([[0], present.astype(np.int8), [0]])))
        return [[self.first_frame + int(a), self.first_frame + int(b) - 1] for a, b in zip(edges[::2], edges[1::2])]
