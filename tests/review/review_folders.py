"""Scenes and label maps for the review tests: a source video with an optional cut, boxes per frame."""
from __future__ import annotations

import numpy as np

HEIGHT, WIDTH = 72, 128


def scene(t: int, cut: int | None) -> np.ndarray:
    """Frame t: a smooth gradient that drifts; from frame `cut` on, another shot (other colours, flipped)."""
    ys, xs = np.mgrid[:HEIGHT, :WIDTH]
    if cut is not None and t >= cut:
        return np.stack([200 - ys, 60 + xs // 4, 220 - xs // 2], -1).clip(0, 255).astype(np.uint8)
    return np.stack([40 + (xs + t) % WIDTH, 40 + ys, np.full_like(xs, 90)], -1).astype(np.uint8)


def boxes(frames: int, placements: dict[int, list[tuple[int, int, int, int]]]) -> np.ndarray:
    """Label maps of `frames` frames; placements[id][t] = (top, left, height, width) of that object's box."""
    labels = np.zeros((frames, HEIGHT, WIDTH), np.uint8)
    for object_id, per_frame in placements.items():
        for t, (top, left, height, width) in enumerate(per_frame):
            labels[t, top:top + height, left:left + width] = object_id
    return labels
