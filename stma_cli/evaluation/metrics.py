"""DAVIS-2017 metrics: region similarity J, boundary F and their per-object statistics.

The definitions follow the official DAVIS 2017 evaluation toolkit:

* J is the intersection over union of two binary masks, 1 when both are empty.
* F compares one-pixel-wide boundary maps. A boundary pixel counts as matched when a boundary
  pixel of the other mask lies within a disk of radius ceil(0.008 * image diagonal). Precision and
  recall are the matched fractions of the predicted and of the annotated boundary; an empty
  boundary on one side only gives precision 1 / recall 0 (or the reverse), both empty gives F = 1.
* Mean, Recall (fraction of frames scoring > 0.5) and Decay (mean of the first quarter of the
  frames minus mean of the last quarter, the quarters overlapping by one frame as in the toolkit).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOUNDARY_THRESHOLD = 0.008
"""Boundary tolerance as a fraction of the image diagonal."""

_DECAY_BINS = 4


def region_similarity(annotation: np.ndarray, prediction: np.ndarray) -> float:
    """J: intersection over union of two binary masks of the same shape (1.0 when both are empty)."""
    annotation = annotation.astype(bool, copy=False)
    prediction = prediction.astype(bool, copy=False)
    union = np.count_nonzero(annotation | prediction)
    if union == 0:
        return 1.0
    return np.count_nonzero(annotation & prediction) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a binary mask, offset half a pixel towards the origin.

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour.
    In the last row only the right neighbour is compared, in the last column only the lower one,
    and the bottom-right corner is never a boundary pixel.
    """
    mask = mask.astype(bool, copy=False)
    right = np.zeros_like(mask)
    right[:, :-1] = mask[:, 1:]
    below = np.zeros_like(mask)
    below[:-1, :] = mask[1:, :]
    below_right = np.zeros_like(mask)
    below_right[:-1, :-1] = mask[1:, 1:]

    boundary = (mask ^ right) | (mask ^ below) | (mask ^ below_right)
    boundary[-1, :] = mask[-1, :] ^ right[-1, :]
    boundary[:, -1] = mask[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def boundary_radius(shape: tuple[int, int], bound_th: float = BOUNDARY_THRESHOLD) -> int:
    """Matching tolerance in pixels: `bound_th` itself when >= 1, else ceil(bound_th * diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    height, width = shape
    return int(math.ceil(bound_th * math.sqrt(height * height + width * width)))


def _within_disk(targets: tuple[np.ndarray, np.ndarray], queries: tuple[np.ndarray, np.ndarray], radius: int) -> np.ndarray:
    """For each query pixel, whether some target pixel lies within the disk of `radius` around it.

    The disk {dx^2 + dy^2 <= r^2} is a stack of horizontal runs, one per row offset dy, of half
    width floor(sqrt(r^2 - dy^2)). Row-wise prefix sums of the target pixels, on a grid covering
    both point sets plus the radius, count the targets in each run with two look-ups, so a query
    costs 2 * (2r + 1) reads instead of a full-image dilation.
    """
    target_ys, target_xs = targets
    query_ys, query_xs = queries
    top = min(target_ys.min(), query_ys.min()) - radius
    left = min(target_xs.min(), query_xs.min()) - radius
    height = max(target_ys.max(), query_ys.max()) + radius + 1 - top
    width = max(target_xs.max(), query_xs.max()) + radius + 1 - left

    grid = np.zeros((height, width), dtype=np.int32)
    grid[target_ys - top, target_xs - left] = 1
    prefix = np.zeros((height, width + 1), dtype=np.int32)
    np.cumsum(grid, axis=1, out=prefix[:, 1:])

    offsets = np.arange(-radius, radius + 1)
    half_widths = np.array([math.isqrt(radius * radius - int(dy) * int(dy)) for dy in offsets])
    rows = (query_ys - top)[None, :] + offsets[:, None]
    centre = (query_xs - left)[None, :]
    counts = prefix[rows, centre + half_widths[:, None] + 1] - prefix[rows, centre - half_widths[:, None]]
    return (counts > 0).any(axis=0)


def boundary_f_measure(annotation: np.ndarray, prediction: np.ndarray, bound_th: float = BOUNDARY_THRESHOLD) -> float:
    """F: boundary F-measure of a binary prediction against a binary annotation of the same shape."""
    annotation = annotation.astype(bool, copy=False)
    prediction = prediction.astype(bool, copy=False)
    radius = boundary_radius(prediction.shape, bound_th)
    # Boundaries only lie on foreground pixels and their upper-left neighbours: a one-pixel margin
    # around the foreground keeps both boundary maps exactly as on the full image.
    foreground = annotation | prediction
    rows = np.flatnonzero(foreground.any(axis=1))
    cols = np.flatnonzero(foreground.any(axis=0))
    if rows.size:
        window = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
        annotation, prediction = annotation[window], prediction[window]

    gt_points = np.nonzero(boundary_map(annotation))
    pred_points = np.nonzero(boundary_map(prediction))
    n_gt, n_pred = gt_points[0].size, pred_points[0].size
    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = np.count_nonzero(_within_disk(gt_points, pred_points, radius)) / n_pred
        recall = np.count_nonzero(_within_disk(pred_points, gt_points, radius)) / n_gt

    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Statistics:
    """Summary of one object's per-frame scores."""

    mean: float
    recall: float
    decay: float


def statistics(per_frame: np.ndarray) -> Statistics:
    """Mean, Recall (> 0.5) and Decay of per-frame scores, NaN frames ignored as in the toolkit.

    The decay bins are the toolkit's: bin edges round(linspace(1, n, 5)) - 1, bin i covering
    frames edge[i] .. edge[i + 1] inclusive. The toolkit stores the edges as uint8, which only
    matters past 256 frames; here they are plain integers.
    """
    values = np.asarray(per_frame, dtype=np.float64)
    n = values.size
    if n == 0:
        return Statistics(math.nan, math.nan, math.nan)
    valid = values[~np.isnan(values)]
    mean = float(valid.mean()) if valid.size else math.nan
    recall = float(np.mean(values > 0.5))

    edges = (np.round(np.linspace(1, n, _DECAY_BINS + 1) + 1e-10) - 1).astype(np.int64)
    first = values[edges[0] : edges[1] + 1]
    last = values[edges[_DECAY_BINS - 1] : edges[_DECAY_BINS] + 1]
    decay = _nanmean(first) - _nanmean(last)
    return Statistics(mean, recall, decay)


def _nanmean(values: np.ndarray) -> float:
    valid = values[~np.isnan(values)]
    return float(valid.mean()) if valid.size else math.nan
