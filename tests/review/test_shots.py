"""Hard cuts are steps in how much thumbnails change; fast motion is not."""
from __future__ import annotations

from stma_cli.review.shots import cuts_from_changes, shot_changes
from review_folders import scene


def test_a_cut_is_found_where_the_shot_changes():
    frames = [scene(t, cut=6) for t in range(12)]
    assert shot_changes(frames) == [6]


def test_fast_motion_is_not_a_cut():
    frames = []
    for t in range(12):  # a big bright square crossing the view, fast
        frame = scene(t, cut=None)
        frame[10:60, 10 * t:10 * t + 40] = 255
        frames.append(frame)
    assert shot_changes(frames) == []


def test_steps_and_ramps():
    assert cuts_from_changes([0.01, 0.01, 0.3, 0.01]) == [3]
    assert cuts_from_changes([0.12, 0.13, 0.15, 0.12]) == []  # steady large change: motion
    assert cuts_from_changes([0.05]) == []  # small
    assert cuts_from_changes([]) == []
    assert cuts_from_changes([0.4]) == [1]
