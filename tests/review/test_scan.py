"""Flags on folders whose masks and source video are known: swaps, area jumps, presence drops, cuts."""
from __future__ import annotations

import numpy as np

from stma_cli.review.scan import review_folder
from review_folders import boxes


def kinds(review) -> set[tuple[str, int, int]]:
    return {(flag.kind, flag.object_id, flag.frame) for flag in review.flags}


def test_a_steady_video_has_no_flags(make_folder):
    labels = boxes(8, {1: [(10, 10 + 2 * t, 20, 20) for t in range(8)], 2: [(40, 80, 20, 30)] * 8})
    review = review_folder(make_folder(labels))
    assert review.flags == [] and review.score == 0 and review.cuts == []
    assert review.area.shape == (8, 2)
    assert np.allclose(review.area[:, 0], 400 / (72 * 128))


def test_swapped_objects_are_flagged_on_the_frame_they_trade_places(make_folder):
    a, b = (10, 10, 20, 20), (40, 90, 20, 20)
    labels = boxes(8, {1: [a] * 4 + [b] * 4, 2: [b] * 4 + [a] * 4})
    review = review_folder(make_folder(labels))
    assert kinds(review) == {("swap", 1, 4)}
    assert 4 in review.thumbnails


def test_an_area_jump_of_more_than_3x(make_folder):
    labels = boxes(6, {1: [(10, 10, 20, 20)] * 3 + [(10, 10, 40, 40)] * 3})  # 4x
    assert kinds(review_folder(make_folder(labels))) == {("area_jump", 1, 3)}
    labels = boxes(6, {1: [(10, 10, 20, 20)] * 3 + [(10, 10, 30, 30)] * 3})  # 2.25x: no flag
    assert review_folder(make_folder(labels, name="b")).flags == []


def test_masks_on_the_first_frame_of_a_new_shot(make_folder):
    labels = boxes(10, {1: [(10, 10, 20, 20)] * 10, 2: [(40, 80, 20, 20)] * 5 + [(0, 0, 0, 0)] * 5})
    review = review_folder(make_folder(labels, cut=5))
    assert review.cuts == [5]
    assert ("after_cut", 1, 5) in kinds(review) and ("after_cut", 2, 5) not in kinds(review)
    assert 5 in review.thumbnails


def test_presence_drop_on_a_large_object(make_folder):
    labels = boxes(6, {1: [(10, 10, 40, 60)] * 6, 2: [(60, 120, 4, 4)] * 6})
    presence = np.full((6, 2), 0.9, np.float32)
    presence[3, 0] = 0.2  # the large object: flagged
    presence[2, 1] = 0.1  # the tiny one: not
    review = review_folder(make_folder(labels, presence=presence))
    assert kinds(review) == {("presence_drop", 1, 3)}
    assert review.presence is not None


def test_without_its_source_video_a_folder_is_still_reviewed(make_folder, tmp_path):
    a, b = (10, 10, 20, 20), (40, 90, 20, 20)
    folder = make_folder(boxes(6, {1: [a] * 3 + [b] * 3, 2: [b] * 3 + [a] * 3}), cut=3)
    (tmp_path / "video.mp4").unlink()
    review = review_folder(folder)
    assert kinds(review) == {("swap", 1, 3)} and review.cuts == [] and review.thumbnails == {}
    assert "gone" in review.note
