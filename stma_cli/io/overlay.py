"""Draw object masks over a frame: each object tinted in its palette colour, with a contour."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stma_cli.io.masks import DAVIS_PALETTE


def palette_colors(palette: Sequence[int] | None) -> np.ndarray:
    """A flat palette (None: DAVIS) as a (256, 3) uint8 colour table."""
    flat = np.zeros(768, dtype=np.uint8)
    values = np.asarray(DAVIS_PALETTE if palette is None else palette, dtype=np.uint8)[:768]
    flat[: values.size] = values
    return flat.reshape(256, 3)


def _boundaries(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` steps (up, down, left, right) of a pixel with a different label."""
    edge = np.zeros(labels.shape, dtype=bool)
    for step in range(1, width + 1):
        vertical = labels[step:, :] != labels[:-step, :]
        edge[step:, :] |= vertical
        edge[:-step, :] |= vertical
        horizontal = labels[:, step:] != labels[:, :-step]
        edge[:, step:] |= horizontal
        edge[:, :-step] |= horizontal
    return edge


def overlay(
    frame_rgb: np.ndarray,
    labels: np.ndarray,
    palette: Sequence[int] | None,
    alpha: float = 0.5,
    contour: int = 2,
) -> np.ndarray:
    """Blend each object's palette colour into the frame with weight `alpha` and outline it.

    The contour, `contour` pixels wide, runs along the inside of each object's border in the object's colour.
    Background pixels are left as they are.
    """
    if labels.shape != frame_rgb.shape[:2]:
        raise ValueError(f"labels {labels.shape} do not match the frame {frame_rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], got {alpha}")
    out = frame_rgb.copy()
    rows = np.flatnonzero(labels.any(axis=1))
    if rows.size == 0:
        return out
    cols = np.flatnonzero(labels.any(axis=0))
    # Work on the box around the objects, widened by the contour so borders come out as on the whole frame.
    box = (
        slice(max(rows[0] - contour, 0), rows[-1] + contour + 1),
        slice(max(cols[0] - contour, 0), cols[-1] + contour + 1),
    )
    ids = labels[box]
    weights = np.full(256, round(alpha * 256), dtype=np.uint16)
    weights[0] = 0
    weight = np.take(weights, ids)
    weight[_boundaries(ids, contour) & (ids > 0)] = 256
    weight = weight[..., None]
    blend = frame_rgb[box].astype(np.uint16)
    blend *= 256 - weight
    blend += np.take(palette_colors(palette).astype(np.uint16), ids, axis=0) * weight
    blend >>= 8
    out[box] = blend
    return out


def draw_ids(frame_rgb: np.ndarray, labels: np.ndarray, palette: Sequence[int] | None) -> np.ndarray:
    """Write each object's id on it, in a box of its colour, at its pixel nearest its centre of mass."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(frame_rgb)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, labels.shape[0] // 30))  # readable at any frame size
    colors = palette_colors(palette)
    for object_id in np.unique(labels):
        if object_id == 0:
            continue
        rows, cols = np.nonzero(labels == object_id)
        nearest = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
        text = str(int(object_id))
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x = int(cols[nearest]) - (right - left) // 2
        y = int(rows[nearest]) - (bottom - top) // 2
        color = tuple(int(c) for c in colors[object_id])
        ink = (0, 0, 0) if sum(color) > 384 else (255, 255, 255)  # dark text on light colours
        draw.rectangle((x + left - 2, y + top - 2, x + right + 1, y + bottom + 1), fill=color)
        draw.text((x, y), text, fill=ink, font=font)
    return np.asarray(image)
