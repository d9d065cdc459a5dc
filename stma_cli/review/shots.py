"""Hard cuts in a stream of frames, from how much small thumbnails change from one frame to the next.

A cut is a step: one frame-to-frame change well above the changes just before and after it. Fast motion
(a car crossing the view) changes every frame a lot, and is not a step.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

THUMBNAIL = (64, 36)
MIN_CHANGE = 0.1  # mean absolute change of a thumbnail's pixels, as a share of the full range
STEP = 3.0  # a cut's change is this many times the changes of its neighbours


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """A small float RGB copy of a (H, W, 3) uint8 frame, in [0, 1]."""
    return np.asarray(Image.fromarray(frame).resize(THUMBNAIL, Image.BILINEAR), dtype=np.float32) / 255


def shot_changes(frames: Iterable[np.ndarray]) -> list[int]:
    """The positions (0-based, in the order given) of the frames that start a new shot."""
    changes = []
    previous = None
    for frame in frames:
        small = thumbnail(frame)
        if previous is not None:
            changes.append(float(np.abs(small - previous).mean()))
        previous = small
    return cuts_from_changes(changes)


def cuts_from_changes(changes: list[float]) -> list[int]:
    """Frames that start a shot, from the changes between frames i and i + 1 (`changes[i]`)."""
    cuts = []
    for i, change in enumerate(changes):
        before = changes[i - 1] if i > 0 else 0.0
        after = changes[i + 1] if i + 1 < len(changes) else 0.0
        if change >= MIN_CHANGE and change > STEP * max(before, after):
            cuts.append(i + 1)
    return cuts
