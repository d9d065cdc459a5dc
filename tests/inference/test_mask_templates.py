"""Masks of later frames from --mask-template: folders of per-frame masks, {frame}, multi-image COCO."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.inference.jobs import build_jobs, masks_from_template


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    return path


def resolved(masks: list[tuple[int, Path]]) -> list[tuple[int, Path]]:
    return [(frame, path.resolve()) for frame, path in masks]


def test_a_folder_of_masks_named_by_frame_number(tmp_path):
    video = tmp_path / "videos" / "cat.mp4"
    video.parent.mkdir()
    masks = [touch(tmp_path / "Annotations" / "cat" / f"{n:05d}.png") for n in (0, 42, 7)]
    (tmp_path / "Annotations" / "cat" / "notes.txt").write_text("not a mask")
    touch(tmp_path / "Annotations" / "cat" / "cover.png")  # not named after a frame: left out
    found = resolved(masks_from_template("../Annotations/{stem}", str(video)))
    assert found == [(0, masks[0]), (7, masks[2]), (42, masks[1])]
    assert resolved(masks_from_template("../Annotations/{stem}", str(video), frames=(5, 40))) == [(7, masks[2])]
    with pytest.raises(StmaError, match=r"no mask named after a frame .* within --frames 50:60"):
        masks_from_template("../Annotations/{stem}", str(video), frames=(50, 60))


def test_a_frame_folder_matches_masks_by_its_frames_stems(tmp_path):
    frames = tmp_path / "JPEGImages" / "bear"
    for name in ("frame_010", "frame_020", "frame_030"):
        touch(frames / f"{name}.png")
    mask = touch(tmp_path / "Annotations" / "bear" / "frame_020.png")
    assert resolved(masks_from_template("../Annotations/{stem}", str(frames))) == [(1, mask)]


def test_frame_field_in_a_file_name(tmp_path):
    video = tmp_path / "cat.mp4"
    first, later = touch(tmp_path / "cat_mask_0.png"), touch(tmp_path / "cat_mask_12.png")
    touch(tmp_path / "dog_mask_3.png")
    assert masks_from_template("{stem}_mask_{frame}.png", str(video)) == [(0, first), (12, later)]
    with pytest.raises(StmaError, match="only appear in the file name"):
        masks_from_template("{frame}/{stem}.png", str(video))


def test_a_coco_file_with_one_image_per_frame(tmp_path):
    video = tmp_path / "cat.mp4"
    coco = tmp_path / "cat.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "cat/00000.jpg"},
                                           {"id": 2, "file_name": "cat/00030.jpg"}],
                                "annotations": [], "categories": []}))
    assert masks_from_template("{stem}.json", str(video)) == [(0, coco), (30, coco)]


def test_a_plain_file_is_the_first_frames_mask(tmp_path):
    video = tmp_path / "cat.mp4"
    assert masks_from_template("{stem}.png", str(video), frames=(10, None)) == [(10, tmp_path / "cat.png")]


def test_a_video_without_masks_fails_alone_in_a_batch(tmp_path):
    videos = [str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")]
    touch(tmp_path / "masks" / "a" / "00000.png")
    (tmp_path / "masks" / "b").mkdir()
    jobs = build_jobs(videos, [], "masks/{stem}", tmp_path / "out", own_folder=False)
    assert jobs[0].error is None and jobs[0].masks == [(0, tmp_path / "masks" / "a" / "00000.png")]
    assert jobs[1].error is not None and "no mask named after a frame" in jobs[1].error


def test_recursive_finds_videos_at_any_depth_and_the_error_says_so(tmp_path):
    from stma_cli.inference.jobs import expand_inputs

    for relative in ("set1/a.mp4", "set1/deeper/b.mkv", "set2/c.mp4"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    touch(tmp_path / "set2" / "frames" / "00000.jpg")  # a frame folder: a video, not descended into
    with pytest.raises(StmaError, match=r"no video files.*further down, e\.g\. in .*set1: use --recursive"):
        expand_inputs([str(tmp_path)])
    found = [Path(p).relative_to(tmp_path).as_posix() for p in expand_inputs([str(tmp_path)], recursive=True)]
    assert found == ["set1/a.mp4", "set1/deeper/b.mkv", "set2/c.mp4", "set2/frames"]
