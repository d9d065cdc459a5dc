"""J, boundary F and the per-object statistics, on masks whose scores are worked out by hand."""
import math

import numpy as np
import pytest
from scipy import ndimage

from stma_cli.evaluation.metrics import (
    Statistics,
    boundary_f_measure,
    boundary_map,
    boundary_radius,
    region_similarity,
    statistics,
)


def square(shape=(64, 64), top=20, left=20, size=10):
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_radius_is_ceil_of_fraction_of_diagonal():
    assert boundary_radius((64, 64)) == 1  # 0.008 * 90.5 = 0.72
    assert boundary_radius((480, 854)) == 8  # 0.008 * 979.6 = 7.84
    assert boundary_radius((480, 854), bound_th=3) == 3


def test_boundary_of_a_single_pixel_is_it_and_its_upper_left_neighbours():
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 1] = True
    expected = np.zeros((4, 4), dtype=bool)
    expected[0:2, 0:2] = True
    np.testing.assert_array_equal(boundary_map(mask), expected)


def test_boundary_of_a_square_is_forty_pixels():
    # Rows/cols 19 (background above/left) and 29 (last foreground row/col): 11 + 11 - 1 + 10 + 10 - 1.
    bmap = boundary_map(square())
    assert bmap.sum() == 40
    assert bmap[19, 19:30].all() and bmap[19:30, 19].all() and bmap[29, 20:30].all() and bmap[20:30, 29].all()


def test_full_and_empty_masks_have_no_boundary():
    assert not boundary_map(np.ones((5, 7), dtype=bool)).any()
    assert not boundary_map(np.zeros((5, 7), dtype=bool)).any()


def test_square_shifted_by_one_pixel():
    gt = square()
    pred = np.roll(gt, 1, axis=1)
    assert region_similarity(gt, pred) == pytest.approx(90 / 110)
    # Every shifted boundary pixel is within the 1-pixel tolerance of the original boundary.
    assert boundary_f_measure(gt, pred) == 1.0


def test_square_shifted_by_two_pixels():
    gt = square()
    pred = np.roll(gt, 2, axis=1)
    assert region_similarity(gt, pred) == pytest.approx(80 / 120)
    # 22 of the 40 boundary pixels have a partner within radius 1, both ways: F = 22/40.
    assert boundary_f_measure(gt, pred) == pytest.approx(22 / 40)


def test_square_shifted_diagonally_by_one_pixel():
    gt = square()
    pred = np.roll(gt, (1, 1), axis=(0, 1))
    assert region_similarity(gt, pred) == pytest.approx(81 / 119)
    # The disk of radius 1 has no diagonal neighbours: only the far corner (30, 30) goes unmatched.
    assert boundary_f_measure(gt, pred) == pytest.approx(39 / 40)


def test_empty_prediction_and_empty_annotation():
    gt = square()
    empty = np.zeros_like(gt)
    assert region_similarity(gt, empty) == 0.0
    assert boundary_f_measure(gt, empty) == 0.0  # precision 1, recall 0
    assert region_similarity(empty, gt) == 0.0
    assert boundary_f_measure(empty, gt) == 0.0  # precision 0, recall 1
    assert region_similarity(empty, empty) == 1.0
    assert boundary_f_measure(empty, empty) == 1.0


def test_disjoint_objects_score_zero():
    gt = square(top=5, left=5)
    pred = square(top=40, left=40)
    assert region_similarity(gt, pred) == 0.0
    assert boundary_f_measure(gt, pred) == 0.0


def _reference_f(gt, pred):
    """The definition spelled out with scipy's dilation by a full disk."""
    r = boundary_radius(gt.shape)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = yy**2 + xx**2 <= r**2
    gt_b, pred_b = boundary_map(gt), boundary_map(pred)
    if not gt_b.any() or not pred_b.any():
        return float(gt_b.any() == pred_b.any())
    precision = (pred_b & ndimage.binary_dilation(gt_b, disk)).sum() / pred_b.sum()
    recall = (gt_b & ndimage.binary_dilation(pred_b, disk)).sum() / gt_b.sum()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("shape", [(40, 60), (120, 200), (240, 427)])
def test_boundary_f_equals_disk_dilation_reference(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(6):
        gt = ndimage.binary_opening(rng.random(shape) < 0.5, iterations=2)
        pred = ndimage.binary_dilation(gt, iterations=int(rng.integers(0, 6))) ^ (rng.random(shape) < 0.002)
        pred = np.roll(pred, tuple(rng.integers(-4, 5, size=2)), axis=(0, 1))
        assert boundary_f_measure(gt, pred) == pytest.approx(_reference_f(gt, pred), abs=1e-12)


def test_statistics_mean_recall_decay_by_hand():
    # Four frames: the toolkit's decay bins are frames {0,1}, {1,2}, {2}, {2,3}.
    stats = statistics(np.array([1.0, 0.8, 0.5, 0.1]))
    assert stats.mean == pytest.approx(0.6)
    assert stats.recall == pytest.approx(0.5)  # 0.5 itself does not count
    assert stats.decay == pytest.approx(0.9 - 0.3)


def test_statistics_decay_bins_for_ten_frames():
    # Bin edges round(linspace(1, 10, 5)) - 1 = 0, 2, 5, 7, 9: first bin frames 0-2, last bin 7-9.
    values = np.arange(10) / 10
    stats = statistics(values)
    assert stats.decay == pytest.approx(np.mean(values[0:3]) - np.mean(values[7:10]))
    assert stats.recall == pytest.approx(0.4)


def test_statistics_of_one_and_zero_frames():
    assert statistics(np.array([0.7])) == Statistics(0.7, 1.0, 0.0)
    empty = statistics(np.array([]))
    assert all(math.isnan(v) for v in (empty.mean, empty.recall, empty.decay))
