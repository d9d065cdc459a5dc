"""Pixel-space affine geometry for warping images with grid_sample.

Pixel coordinates: pixel i spans [i, i+1). Maps are 3x3 homogeneous numpy matrices.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def translate(x: float, y: float) -> np.ndarray:
    """Translation by (x, y)."""
    return np.array([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]])


def rotate_scale(angle: float, scale: float) -> np.ndarray:
    """Rotation by `angle` radians (clockwise on screen: y points down) and uniform scaling."""
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    return np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])


def lerp_rows(values: np.ndarray, t: float) -> np.ndarray:
    """values[t] for fractional t, linear between rows and extrapolated past the ends."""
    if len(values) == 1:
        return values[0]
    low = min(max(int(math.floor(t)), 0), len(values) - 2)
    return values[low] + (t - low) * (values[low + 1] - values[low])


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 3x3 affine map (closed form: several times faster than np.linalg.inv)."""
    (a, b, c), (d, e, f) = matrix[0], matrix[1]
    det = a * e - b * d
    return np.array([[e / det, -b / det, (b * f - c * e) / det],
                     [-d / det, a / det, (c * d - a * f) / det],
                     [0.0, 0.0, 1.0]])


def _pixel_to_unit(h: int, w: int) -> np.ndarray:
    """Pixel coordinates -> grid_sample's [-1, 1] coordinates (align_corners=False)."""
    return np.array([[2.0 / w, 0.0, -1.0], [0.0, 2.0 / h, -1.0], [0.0, 0.0, 1.0]])


def _unit_to_pixel(h: int, w: int) -> np.ndarray:
    return np.array([[w / 2.0, 0.0, w / 2.0], [0.0, h / 2.0, h / 2.0], [0.0, 0.0, 1.0]])


def affine_theta(src_hw: tuple[int, int], out_to_src: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """The (2, 3) grid matrix of a map from output pixels to source pixels."""
    return (_pixel_to_unit(*src_hw) @ out_to_src @ _unit_to_pixel(*out_hw))[:2]


def affine_grid(theta: np.ndarray, h: int, w: int) -> torch.Tensor:
    """grid_sample's (n, h, w, 2) grid of (n, 2, 3) or (2, 3) matrices, as F.affine_grid(align_corners=False).

    Built by one broadcast sum, several times faster than F.affine_grid on CPU.
    """
    theta = torch.as_tensor(np.asarray(theta), dtype=torch.float32).reshape(-1, 2, 3)
    xs = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1
    along_x = theta[:, :, 0, None] * xs + theta[:, :, 2, None]
    along_y = theta[:, :, 1, None] * ys
    return along_x.transpose(1, 2)[:, None, :, :] + along_y.transpose(1, 2)[:, :, None, :]


def source_window(out_to_src: np.ndarray, out_hw: tuple[int, int], src_hw: tuple[int, int],
                  margin: int = 2) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the part of the source that maps (n, 3, 3) `out_to_src` read, clipped to the source."""
    h, w = out_hw
    corners = np.array([[0, w, 0, w], [0, 0, h, h], [1, 1, 1, 1]], dtype=np.float64)
    points = np.concatenate([(m @ corners)[:2] for m in out_to_src.reshape(-1, 3, 3)], axis=1)
    x0, y0 = (max(0, int(math.floor(v)) - margin) for v in points.min(1))
    x1 = min(src_hw[1], int(math.ceil(points[0].max())) + margin)
    y1 = min(src_hw[0], int(math.ceil(points[1].max())) + margin)
    if x1 <= x0 or y1 <= y0:
        return 0, 0, src_hw[1], src_hw[0]
    return x0, y0, x1, y1
