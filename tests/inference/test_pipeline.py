"""`segment_video` and `run_batch`: directions, masks on several frames, errors and reports; how `propagate`
merges the two directions (random weights)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.inference.jobs import VideoJob
from stma_cli.inference.passes import ABSENT, _merge, logits_for, logits_shape, plan_passes, propagate
from stma_cli.inference.pipeline import RunOptions, run_batch, segment_video
from stma_cli.inference.segmenter import FrameResult, Segmenter, frame_result, keep_given_mask
from stma_cli.io.logits import read_logits
from stma_cli.io.masks import write_mask
from stma_cli.io.video import open_video

HEIGHT, WIDTH = 48, 64
FRAMES = 5


def square(object_id: int, top: int, left: int) -> np.ndarray:
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[top : top + 16, left : left + 16] = object_id
    return labels


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    """A frame folder of FRAMES noisy PNG frames."""
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for t in range(FRAMES):
        Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(folder / f"{t:05d}.png")
    return folder


def mask_file(path: Path, labels: np.ndarray) -> Path:
    write_mask(path, labels)
    return path


def run(job: VideoJob, segmenter: Segmenter, **options) -> tuple[np.ndarray, np.ndarray, dict]:
    """Segment `job`; return its masks (T, H, W), logits (T, K+1, H', W') and manifest."""
    report = segment_video(job, segmenter, RunOptions(overlay=False, **options))
    assert report.status == "ok" and report.frames == FRAMES
    masks = np.stack([np.asarray(Image.open(p)) for p in sorted((job.output / "masks").iterdir())])
    logits, _ = read_logits(job.output / "logits.h5")
    return masks, logits, json.loads((job.output / "manifest.json").read_text())


def test_forward_leaves_frames_before_the_mask_empty(frames, tmp_path, segmenter):
    given = square(1, 8, 8)
    job = VideoJob(str(frames), [(2, mask_file(tmp_path / "m.png", given))], tmp_path / "out")
    masks, logits, manifest = run(job, segmenter)
    assert not masks[:2].any()
    assert (logits[:2, 0] == 0).all() and (logits[:2, 1] == ABSENT).all()
    np.testing.assert_array_equal(masks[2], given)
    assert (logits[3:, 1] > ABSENT).any(axis=(1, 2)).all()
    assert manifest["direction"] == "forward" and manifest["objects"] == [1]


def test_backward_stops_at_the_mask_frame(frames, tmp_path, segmenter):
    given = square(4, 20, 30)
    job = VideoJob(str(frames), [(2, mask_file(tmp_path / "m.png", given))], tmp_path / "out")
    masks, logits, _ = run(job, segmenter, direction="backward")
    np.testing.assert_array_equal(masks[2], given)
    assert (logits[:3, 1] > ABSENT).any(axis=(1, 2)).all()
    assert not masks[3:].any() and (logits[3:, 1] == ABSENT).all()


def tracked(logits: np.ndarray, channel: int) -> list[int]:
    """The frames on which the object of logits channel `channel` is tracked (not ABSENT)."""
    return [t for t in range(len(logits)) if (logits[t, channel] > ABSENT).any()]


def test_plan_of_passes() -> None:
    masks = {2: square(1, 0, 0), 8: square(2, 0, 0)}
    assert [(p.start, p.reverse) for p in plan_passes("forward", masks)] == [(2, False)]
    assert [(p.start, p.reverse) for p in plan_passes("backward", masks)] == [(8, True)]
    assert [(p.start, p.reverse) for p in plan_passes("both", masks)] == [(8, True), (2, False)]
    assert all(p.masks is masks for p in plan_passes("both", masks))


@pytest.fixture
def two_masks(frames, tmp_path) -> VideoJob:
    """Object 1 given on frame 1, object 2 on frame 3."""
    return VideoJob(str(frames), [(1, mask_file(tmp_path / "a.png", square(1, 8, 8))),
                                  (3, mask_file(tmp_path / "b.png", square(2, 24, 40)))], tmp_path / "out")


@pytest.mark.parametrize(("direction", "one", "two"), [
    ("forward", [1, 2, 3, 4], [3, 4]),
    ("backward", [0, 1], [0, 1, 2, 3]),
    ("both", [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]),
])
def test_every_direction_takes_up_every_mask(two_masks, segmenter, direction, one, two):
    """Each object is tracked from its own mask in the direction asked; no mask is left out."""
    masks, logits, manifest = run(two_masks, segmenter, direction=direction)
    assert manifest["objects"] == [1, 2]
    assert tracked(logits, 1) == one and tracked(logits, 2) == two
    assert (masks[1][square(1, 8, 8) > 0] == 1).all() and (masks[3][square(2, 24, 40) > 0] == 2).all()
    untracked = [t for t in range(FRAMES) if t not in one + two]
    assert not masks[untracked].any()


def test_both_takes_each_object_from_its_nearest_mask(frames, tmp_path, segmenter):
    """One object given on frames 0 and 4: frames 1-2 follow the mask of frame 0 (forward; 2 is a tie),
    frame 3 the mask of frame 4 (backward). The given frames are exact."""
    first, last = square(1, 4, 4), square(1, 28, 44)
    job = VideoJob(str(frames), [(0, mask_file(tmp_path / "a.png", first)),
                                 (4, mask_file(tmp_path / "b.png", last))], tmp_path / "out")
    masks, both, _ = run(job, segmenter, direction="both")
    forward, _, _ = run(VideoJob(job.source, job.masks, tmp_path / "forward"), segmenter, direction="forward")
    backward, _, _ = run(VideoJob(job.source, job.masks, tmp_path / "backward"), segmenter, direction="backward")
    np.testing.assert_array_equal(masks[0], first)
    np.testing.assert_array_equal(masks[4], last)
    np.testing.assert_array_equal(masks[1:3], forward[1:3])
    np.testing.assert_array_equal(masks[3], backward[3])


def test_masks_on_one_frame_merge_and_ids_follow_first_appearance(frames, tmp_path, segmenter):
    job = VideoJob(str(frames), [(0, mask_file(tmp_path / "a.png", square(5, 0, 0))),
                                 (0, mask_file(tmp_path / "b.png", square(2, 30, 40))),
                                 (3, mask_file(tmp_path / "c.png", square(1, 20, 20)))], tmp_path / "out")
    masks, logits, manifest = run(job, segmenter)
    np.testing.assert_array_equal(masks[0], square(5, 0, 0) + square(2, 30, 40))
    assert manifest["objects"] == [2, 5, 1]
    assert (logits[:3, 3] == ABSENT).all() and (logits[3:, 3] > ABSENT).any(axis=(1, 2)).all()


def test_mask_past_the_last_frame(frames, tmp_path, segmenter):
    mask = mask_file(tmp_path / "m.png", square(1, 0, 0))
    job = VideoJob(str(frames), [(0, mask), (9, mask)], tmp_path / "out")
    with pytest.raises(StmaError, match=re.escape(f"{mask}: mask for frame 9, but the video has {FRAMES} frames")):
        segment_video(job, segmenter, RunOptions())
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_run_batch_reports_and_callbacks(frames, tmp_path, segmenter):
    mask = mask_file(tmp_path / "m.png", square(1, 8, 8))
    jobs = [VideoJob(str(frames), [(0, mask)], tmp_path / "a"),
            VideoJob(str(frames), [(0, tmp_path / "missing.png")], tmp_path / "b"),
            VideoJob(str(frames), [(0, mask)], tmp_path / "a")]
    started, reports, progress = [], [], []
    returned = run_batch(jobs, segmenter, RunOptions(overlay=False, logits=False),
                         on_start=started.append, on_report=reports.append,
                         progress=lambda done, total: progress.append((done, total)))

    assert returned == reports and started == jobs
    assert [r.status for r in reports] == ["ok", "error", "skipped"]
    assert reports[1].error == f"{tmp_path / 'missing.png'}: mask file not found"
    assert (reports[2].frames, reports[2].objects) == (FRAMES, [1])
    assert progress == [(t, FRAMES) for t in range(1, FRAMES + 1)]
    assert reports[0].to_dict().keys() == {"video", "output", "frames", "objects", "seconds", "fps", "status", "error",
                                           "tracks"}
    assert reports[2].tracks == reports[0].tracks and list(reports[0].tracks) == ["1"]  # a skip reports them too


def test_any_failure_of_one_video_is_its_error_report(frames, tmp_path, segmenter, monkeypatch):
    """Not only StmaError: out of memory, an OSError or a bug in one video gives its error report, and
    the next video is done."""
    import stma_cli.inference.pipeline as pipeline

    mask = mask_file(tmp_path / "m.png", square(1, 8, 8))
    failures = iter([MemoryError(), IsADirectoryError(21, "Is a directory", "x.tmp", None, "overlay.mp4"),
                     KeyError("dim")])
    real = pipeline.read_job_masks

    def failing(job, video):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real(job, video)

    monkeypatch.setattr(pipeline, "read_job_masks", failing)
    jobs = [VideoJob(str(frames), [(0, mask)], tmp_path / name) for name in "abcd"]
    reports = run_batch(jobs, segmenter, RunOptions(overlay=False, logits=False))
    assert [r.status for r in reports] == ["error", "error", "error", "ok"]
    assert [r.error for r in reports[:3]] == [f"{frames}: out of memory", "x.tmp -> overlay.mp4: Is a directory",
                                              f"{frames}: unexpected error: KeyError: 'dim'"]


# -- ending objects (--end) ------------------------------------------------------------------------


def test_an_end_stops_an_object_going_forward(frames, tmp_path, segmenter):
    given = square(1, 4, 4) + square(2, 28, 40)
    job = VideoJob(str(frames), [(0, mask_file(tmp_path / "m.png", given))], tmp_path / "out", ends={3: [2]})
    masks, logits, manifest = run(job, segmenter)
    assert tracked(logits, 1) == [0, 1, 2, 3, 4] and tracked(logits, 2) == [0, 1, 2]
    assert not (masks[3:] == 2).any()
    assert manifest["ends"] == {"3": [2]} and manifest["provenance"]["settings"]["ends"] == {"3": [2]}


def test_an_end_stops_an_object_going_backward(frames, tmp_path, segmenter):
    """The cut lies before frame 2: from the mask on frame 4, object 2 is followed back to frame 2 only."""
    given = square(1, 4, 4) + square(2, 28, 40)
    job = VideoJob(str(frames), [(4, mask_file(tmp_path / "m.png", given))], tmp_path / "out", ends={2: [2]})
    _, logits, _ = run(job, segmenter, direction="backward")
    assert tracked(logits, 1) == [0, 1, 2, 3, 4] and tracked(logits, 2) == [2, 3, 4]


def test_an_ended_id_given_again_is_a_new_object(frames, tmp_path, segmenter):
    before, after = square(1, 4, 4), square(1, 28, 40)
    job = VideoJob(str(frames), [(0, mask_file(tmp_path / "a.png", before)),
                                 (3, mask_file(tmp_path / "b.png", after))], tmp_path / "out", ends={2: [1]})
    masks, logits, manifest = run(job, segmenter)
    assert tracked(logits, 1) == [0, 1, 3, 4] and not masks[2].any()
    np.testing.assert_array_equal(masks[3], after)
    assert manifest["objects"] == [1]


def test_both_takes_an_object_from_the_pass_that_follows_it(frames, tmp_path, segmenter):
    """Object 1 given on frames 0 and 4, ending at a cut before frame 1: the forward pass loses it at
    frame 1, so frames 1-3 (2 is a tie of distances) come from the backward pass."""
    job = VideoJob(str(frames), [(0, mask_file(tmp_path / "a.png", square(1, 4, 4))),
                                 (4, mask_file(tmp_path / "b.png", square(1, 28, 44)))], tmp_path / "out",
                   ends={1: [1]})
    masks, _, _ = run(job, segmenter, direction="both")
    backward, _, _ = run(VideoJob(job.source, job.masks, tmp_path / "backward", ends=job.ends), segmenter,
                         direction="backward")
    np.testing.assert_array_equal(masks[1:4], backward[1:4])
    np.testing.assert_array_equal(masks[0], square(1, 4, 4))


# -- a range of frames (--frames) ------------------------------------------------------------------


def test_a_range_of_frames_keeps_the_frame_numbers(frames, tmp_path, segmenter):
    given = square(1, 8, 8) + square(2, 24, 40)
    mask = mask_file(tmp_path / "m.png", given)
    full, full_logits, _ = run(VideoJob(str(frames), [(1, mask)], tmp_path / "full"), segmenter)
    job = VideoJob(str(frames), [(1, mask)], tmp_path / "part", frames=(1, 4))
    report = segment_video(job, segmenter, RunOptions(overlay=False))
    assert report.status == "ok" and report.frames == 3
    assert sorted(p.name for p in (job.output / "masks").iterdir()) == ["00001.png", "00002.png", "00003.png"]
    part = np.stack([np.asarray(Image.open(job.output / "masks" / f"{t:05d}.png")) for t in (1, 2, 3)])
    np.testing.assert_array_equal(part, full[1:4])  # the same frames, the same results
    logits, attrs = read_logits(job.output / "logits.h5")
    assert logits.shape[0] == 3 and attrs["first_frame"] == 1
    np.testing.assert_allclose(logits, full_logits[1:4], atol=1e-2)
    manifest = json.loads((job.output / "manifest.json").read_text())
    assert manifest["frames"] == 3 and manifest["frame_range"] == [1, 4]
    assert manifest["provenance"]["settings"]["frames"] == [1, 4]


def test_a_range_with_a_backward_pass(frames, tmp_path, segmenter):
    mask = mask_file(tmp_path / "m.png", square(1, 20, 20))
    full, _, _ = run(VideoJob(str(frames), [(3, mask)], tmp_path / "full"), segmenter, direction="both")
    job = VideoJob(str(frames), [(3, mask)], tmp_path / "part", frames=(2, None))
    report = segment_video(job, segmenter, RunOptions(overlay=False, logits=False, direction="both"))
    assert report.frames == 3
    part = np.stack([np.asarray(Image.open(job.output / "masks" / f"{t:05d}.png")) for t in (2, 3, 4)])
    np.testing.assert_array_equal(part, full[2:])  # frame 2 from the backward pass, as in the full run


@pytest.mark.parametrize(("frames_range", "message"), [
    ((3, 5), "m.png: mask for frame 1, outside --frames 3:5"),
    ((7, None), "m.png: mask for frame 7, but the video has 5 frames"),
])
def test_a_range_that_misses_the_masks(frames, tmp_path, segmenter, frames_range, message):
    first = frames_range[0] if frames_range[0] == 7 else 1
    job = VideoJob(str(frames), [(first, mask_file(tmp_path / "m.png", square(1, 8, 8)))], tmp_path / "out",
                   frames=frames_range)
    with pytest.raises(StmaError, match=re.escape(message)):
        segment_video(job, segmenter, RunOptions())


# -- how the two directions make one frame -----------------------------------------------------------


def propagated(frames: Path, masks: dict[int, np.ndarray], direction: str, segmenter: Segmenter,
               scratch: Path) -> list[FrameResult]:
    """The results of `propagate` for objects 1 and 2; its scratch files in `scratch` are gone after it."""
    scratch.mkdir(exist_ok=True)
    with open_video(frames) as video:
        found = [result for _, _, result in propagate(video, (0, None), masks, {}, [1, 2], segmenter, direction,
                                                       scratch)]
    assert list(scratch.iterdir()) == []
    return found


def test_both_takes_each_object_as_probabilities_from_its_pass(frames, tmp_path, segmenter):
    """Object 1 given on the first frame, object 2 on the last. On frames 0-3, object 2 comes from the
    backward pass, object 1 and the background from the forward pass: their probabilities, renormalised
    where the objects' sum passes 1, the background what is left; the labels are those of these logits,
    with the given mask kept on frame 0. On the last frame both passes hold object 2's mask: a tie, so
    the forward pass gives the frame as it is."""
    masks = {0: square(1, 4, 4), FRAMES - 1: square(2, 28, 40)}
    ahead, behind, both = (propagated(frames, masks, direction, segmenter, tmp_path / "scratch")
                           for direction in ("forward", "backward", "both"))

    shape = logits_shape(HEIGHT, WIDTH, segmenter.config.max_side)
    for t in range(FRAMES - 1):
        forward = torch.from_numpy(logits_for(ahead[t], [1, 2], shape)).softmax(0)
        backward = torch.from_numpy(logits_for(behind[t], [1, 2], shape)).softmax(0)
        objects = torch.stack([forward[1], backward[2]])
        objects = objects / objects.sum(0).clamp(min=1)
        expected = torch.cat([(1 - objects.sum(0)).clamp(min=0)[None], objects]).clamp(min=1e-4).log()
        presence = np.array([ahead[t].presence[0], behind[t].presence[1]])
        labels = frame_result(expected[None], [1, 2], (HEIGHT, WIDTH), (HEIGHT, WIDTH),
                              torch.from_numpy(presence)).labels
        if t in masks:
            keep_given_mask(labels, masks[t])
        assert both[t].object_ids == [1, 2]
        torch.testing.assert_close(both[t].logits, expected, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(both[t].labels, labels)
        np.testing.assert_array_equal(both[t].presence, presence)
    np.testing.assert_array_equal(both[0].labels == 1, masks[0] == 1)
    np.testing.assert_array_equal(both[-1].labels, ahead[-1].labels)
    torch.testing.assert_close(both[-1].logits, ahead[-1].logits, rtol=0, atol=0)


def test_merge_renormalises_where_the_objects_overlap():
    """Object 1 at 0.8 from the forward pass, object 2 from the backward pass at 0.6 on the left half
    (together past 1: scaled down to sum to 1, no background left) and at 0.1 on the right half (kept,
    the background 0.1); a given mask of object 2 wins on its pixels."""
    logits = torch.stack([torch.zeros(2, 2), torch.full((2, 2), math.log(4))])  # object 1 at 0.8
    ahead = FrameResult(np.zeros((8, 8), np.uint8), logits, [1], np.array([0.9], np.float32))
    behind = np.zeros((2, 2, 2), np.float32)
    behind[0] = 0.5  # object 1 from the backward pass: not taken
    behind[1] = [[0.6, 0.1], [0.6, 0.1]]
    mask = np.zeros((8, 8), np.uint8)
    mask[0, 0] = 2
    merged = _merge(ahead, behind, np.array([0.3, 0.7], np.float32), [2], [1, 2], mask, (8, 8), 480,
                    np.zeros((8, 8, 3), np.uint8), 0)

    probs = merged.logits.exp()
    torch.testing.assert_close(probs[:, 0, 0], torch.tensor([1e-4, 0.8 / 1.4, 0.6 / 1.4]))
    torch.testing.assert_close(probs[:, 0, 1], torch.tensor([0.1, 0.8, 0.1]))
    expected = np.ones((8, 8), np.uint8)
    expected[0, 0] = 2
    np.testing.assert_array_equal(merged.labels, expected)
    np.testing.assert_array_equal(merged.presence, np.array([0.9, 0.7], np.float32))
    assert merged.object_ids == [1, 2]
