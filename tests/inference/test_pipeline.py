"""`segment_video` and `run_batch`: directions, masks on several frames, errors and reports (random weights)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.inference.pipeline import ABSENT, RunOptions, VideoJob, run_batch, segment_video
from stma_cli.inference.segmenter import SegmenterConfig
from stma_cli.io.logits import read_logits
from stma_cli.io.masks import write_mask
from stma_cli.model import STMA

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


def run(job: VideoJob, model: STMA, **options) -> tuple[np.ndarray, np.ndarray, dict]:
    """Segment `job`; return its masks (T, H, W), logits (T, K+1, H', W') and manifest."""
    report = segment_video(job, model, SegmenterConfig(), RunOptions(overlay=False, **options))
    assert report.status == "ok" and report.frames == FRAMES
    masks = np.stack([np.asarray(Image.open(p)) for p in sorted((job.output / "masks").iterdir())])
    logits, _ = read_logits(job.output / "logits.h5")
    return masks, logits, json.loads((job.output / "manifest.json").read_text())


def test_forward_leaves_frames_before_the_mask_empty(frames, tmp_path, model):
    given = square(1, 8, 8)
    job = VideoJob(str(frames), [(2, mask_file(tmp_path / "m.png", given))], tmp_path / "out")
    masks, logits, manifest = run(job, model)
    assert not masks[:2].any()
    assert (logits[:2, 0] == 0).all() and (logits[:2, 1] == ABSENT).all()
    np.testing.assert_array_equal(masks[2], given)
    assert (logits[3:, 1] > ABSENT).any(axis=(1, 2)).all()
    assert manifest["direction"] == "forward" and manifest["objects"] == [1]


def test_backward_stops_at_the_mask_frame(frames, tmp_path, model):
    given = square(4, 20, 30)
    job = VideoJob(str(frames), [(2, mask_file(tmp_path / "m.png", given))], tmp_path / "out")
    masks, logits, _ = run(job, model, direction="backward")
    np.testing.assert_array_equal(masks[2], given)
    assert (logits[:3, 1] > ABSENT).any(axis=(1, 2)).all()
    assert not masks[3:].any() and (logits[3:, 1] == ABSENT).all()


def test_masks_on_one_frame_merge_and_ids_follow_first_appearance(frames, tmp_path, model):
    job = VideoJob(str(frames), [(0, mask_file(tmp_path / "a.png", square(5, 0, 0))),
                                 (0, mask_file(tmp_path / "b.png", square(2, 30, 40))),
                                 (3, mask_file(tmp_path / "c.png", square(1, 20, 20)))], tmp_path / "out")
    masks, logits, manifest = run(job, model)
    np.testing.assert_array_equal(masks[0], square(5, 0, 0) + square(2, 30, 40))
    assert manifest["objects"] == [2, 5, 1]
    assert (logits[:3, 3] == ABSENT).all() and (logits[3:, 3] > ABSENT).any(axis=(1, 2)).all()


def test_mask_past_the_last_frame(frames, tmp_path, model):
    mask = mask_file(tmp_path / "m.png", square(1, 0, 0))
    job = VideoJob(str(frames), [(0, mask), (9, mask)], tmp_path / "out")
    with pytest.raises(StmaError, match=re.escape(f"{mask}: mask for frame 9, but the video has {FRAMES} frames")):
        segment_video(job, model, SegmenterConfig(), RunOptions())
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_run_batch_reports_and_callbacks(frames, tmp_path, model):
    mask = mask_file(tmp_path / "m.png", square(1, 8, 8))
    jobs = [VideoJob(str(frames), [(0, mask)], tmp_path / "a"),
            VideoJob(str(frames), [(0, tmp_path / "missing.png")], tmp_path / "b"),
            VideoJob(str(frames), [(0, mask)], tmp_path / "a")]
    started, reports, progress = [], [], []
    returned = run_batch(jobs, model, SegmenterConfig(), RunOptions(overlay=False, logits=False),
                         on_start=started.append, on_report=reports.append,
                         progress=lambda done, total: progress.append((done, total)))

    assert returned == reports and started == jobs
    assert [r.status for r in reports] == ["ok", "error", "skipped"]
    assert reports[1].error == f"{tmp_path / 'missing.png'}: mask file not found"
    assert (reports[2].frames, reports[2].objects) == (FRAMES, [1])
    assert progress == [(t, FRAMES) for t in range(1, FRAMES + 1)]
    assert reports[0].to_dict().keys() == {"video", "output", "frames", "objects", "seconds", "fps", "status", "error"}
