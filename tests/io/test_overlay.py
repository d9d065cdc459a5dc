from __future__ import annotations

import time

import numpy as np

from stma_cli.io.masks import DAVIS_PALETTE
from stma_cli.io.overlay import overlay, palette_colors


def square_scene() -> tuple[np.ndarray, np.ndarray]:
    frame = np.full((40, 50, 3), 100, dtype=np.uint8)
    labels = np.zeros((40, 50), dtype=np.uint8)
    labels[10:30, 10:30] = 3
    labels[10:30, 30:40] = 7
    return frame, labels


def test_tint_inside_and_background_untouched() -> None:
    frame, labels = square_scene()
    out = overlay(frame, labels, DAVIS_PALETTE, alpha=0.5)
    assert out.shape == frame.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[labels == 0], frame[labels == 0])
    colour = palette_colors(DAVIS_PALETTE)[3]
    np.testing.assert_allclose(out[20, 20], (frame[20, 20].astype(int) + colour) / 2, atol=1)


def test_contour_in_object_colour_along_the_inside_of_the_border() -> None:
    frame, labels = square_scene()
    colours = palette_colors(DAVIS_PALETTE)
    out = overlay(frame, labels, DAVIS_PALETTE, contour=2)
    for y, x in [(10, 15), (11, 15), (29, 20), (20, 10)]:  # outer edge of object 3, two pixels wide
        np.testing.assert_array_equal(out[y, x], colours[3])
    np.testing.assert_array_equal(out[20, 29], colours[3])  # object 3 meets object 7: both outlined
    np.testing.assert_array_equal(out[20, 30], colours[7])
    assert not np.array_equal(out[12, 15], colours[3])  # third pixel in: tinted, not outlined
    np.testing.assert_array_equal(out[9, 15], frame[9, 15])


def test_custom_palette_and_alpha() -> None:
    frame, labels = square_scene()
    palette = [0] * 768
    palette[9:12] = [255, 255, 255]
    out = overlay(frame, labels, palette, alpha=1.0, contour=1)
    np.testing.assert_array_equal(out[20, 20], [255, 255, 255])


def test_empty_labels_give_the_frame() -> None:
    frame, labels = square_scene()
    np.testing.assert_array_equal(overlay(frame, np.zeros_like(labels), None), frame)


def test_fast_enough_at_480p() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 854, 3), dtype=np.uint8)
    labels = np.zeros((480, 854), dtype=np.uint8)
    labels[100:300, 200:500] = 1
    labels[250:450, 400:800] = 2
    overlay(frame, labels, None)
    start = time.perf_counter()
    for _ in range(5):
        overlay(frame, labels, None)
    assert (time.perf_counter() - start) / 5 < 0.1
