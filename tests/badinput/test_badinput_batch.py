"""Bad videos and bad masks in one batch: each fails alone, in one line, and the batch goes on.

One `stma segment --json` process gets every case below between two good videos, `a_good` (first) and
`z_good` (last), so a single run shows each case's error line and that the good videos come out whole.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from badinput_corpus import (
    FRAMES,
    HEIGHT,
    WIDTH,
    Run,
    assert_clean_stderr,
    finished_frames,
    many_objects_mask,
    object_mask,
    run_stma,
    temporary_files,
    write_audio_only,
    write_corrupt_middle_video,
    write_empty_file,
    write_mask,
    write_mixed_size_folder,
    write_text_file,
    write_truncated_video,
    write_video,
    write_video_without_index,
    write_zero_frame_video,
)

from stma_cli.io.logits import read_logits

# stem: (file name, writer, what the error says); the video itself is at fault
VIDEO_CASES: dict[str, tuple[str, Callable[[Path], object], str]] = {
    "empty": ("empty.mp4", write_empty_file, "empty file"),
    "text": ("text.mp4", write_text_file, "not a readable video"),
    "truncated": ("truncated.mp4", write_truncated_video, "corrupt or truncated video data after frame"),
    "no_index": ("no_index.mp4", write_video_without_index, "not a readable video"),
    "corrupt_middle": ("corrupt_middle.mp4", write_corrupt_middle_video, "corrupt or truncated video data after frame"),
    "audio_only": ("audio_only.mp4", write_audio_only, "no video stream"),
    "zero_frames": ("zero_frames.avi", write_zero_frame_video, "no video frames"),
    "missing": ("missing.mp4", lambda path: None, "no such file or folder"),
    "mixed_sizes": ("mixed_sizes", write_mixed_size_folder,
                    "frames have mixed sizes (00000.png is 64x48, 00001.png is 66x48)"),
}
# stem: (writer of masks/<stem>.png, what the error says); the video is good, its mask is at fault
MASK_CASES: dict[str, tuple[Callable[[Path], object], str]] = {
    "mask_missing": (lambda path: None, "mask file not found"),
    "mask_not_image": (write_text_file, "not an image"),
    "mask_other_size": (lambda path: write_mask(path, object_mask(WIDTH // 2, HEIGHT // 2)),
                        "mask is 32x24 but the frames are 64x48"),
    "mask_no_object": (lambda path: write_mask(path, np.zeros((HEIGHT, WIDTH), np.uint8)), "mask has no object"),
    "mask_too_many_objects": (lambda path: write_mask(path, many_objects_mask(40)),
                              "40 objects, but the model's ID table holds at most 32"),
}
EXPECTED = {stem: case[-1] for stem, case in {**VIDEO_CASES, **MASK_CASES}.items()}
# Damage after the first frame: decoding stops there, with an error, after the frames before it are written.
STOPPED_MIDWAY = ("truncated", "corrupt_middle")
GOOD = ("a_good", "z_good")


@dataclass
class Batch:
    run: Run
    reports: dict[str, dict]  # video stem: its JSON report
    at_fault: dict[str, Path]  # case stem: the file its error must name
    output: Path


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, random_weights: Path) -> Batch:
    root = tmp_path_factory.mktemp("batch")
    inputs, masks = root / "inputs", root / "inputs" / "masks"
    masks.mkdir(parents=True)
    videos, at_fault = [], {}
    for stem, (name, writer, _) in VIDEO_CASES.items():
        writer(inputs / name)
        write_mask(masks / f"{stem}.png")
        videos.append(inputs / name)
        at_fault[stem] = inputs / name
    for stem, (writer, _) in MASK_CASES.items():
        videos.append(write_video(inputs / f"{stem}.mp4"))
        writer(masks / f"{stem}.png")
        at_fault[stem] = masks / f"{stem}.png"
    for stem in GOOD:
        write_mask(masks / f"{stem}.png")
    videos = [write_video(inputs / "a_good.mp4"), *videos, write_video(inputs / "z_good.mp4")]
    output = root / "out"
    run = run_stma(["segment", *map(str, videos), "--mask-template", "masks/{stem}.png",
                    "--weights", str(random_weights), "--output", str(output), "--json"], root)
    reports = {Path(report["video"]).stem: report for report in map(json.loads, run.stdout.splitlines())}
    return Batch(run, reports, at_fault, output)


def test_exit_code_and_summary(batch: Batch) -> None:
    assert batch.run.returncode == 1
    assert f"stma: 2 done, 0 skipped, {len(EXPECTED)} failed" in batch.run.stderr.splitlines()
    assert_clean_stderr(batch.run)


@pytest.mark.parametrize("stem", EXPECTED)
def test_one_error_line_names_the_file(batch: Batch, stem: str) -> None:
    """`stma: error: <file at fault>: <what is wrong>`, once, the same as the video's JSON report."""
    prefix = f"stma: error: {batch.at_fault[stem]}: "
    lines = [line for line in batch.run.error_lines if line.startswith(prefix)]
    assert len(lines) == 1, batch.run.stderr
    assert EXPECTED[stem] in lines[0]
    report = batch.reports[stem]
    assert report["status"] == "error" and f"stma: error: {report['error']}" == lines[0]


def test_good_videos_are_complete(batch: Batch) -> None:
    for stem in GOOD:
        folder = batch.output / stem
        assert batch.reports[stem]["status"] == "ok"
        assert finished_frames(folder) == FRAMES
        assert sorted(p.name for p in (folder / "masks").iterdir()) == [f"{i:05d}.png" for i in range(FRAMES)]
        assert (folder / "overlay.mp4").stat().st_size > 0
        assert read_logits(folder / "logits.h5")[0].shape[:2] == (FRAMES, 2)


@pytest.mark.parametrize("stem", [stem for stem in EXPECTED if stem not in STOPPED_MIDWAY])
def test_rejected_before_any_output(batch: Batch, stem: str) -> None:
    assert not (batch.output / stem).exists()


@pytest.mark.parametrize("stem", STOPPED_MIDWAY)
def test_stopped_midway_keeps_only_the_decoded_frames(batch: Batch, stem: str) -> None:
    """Decoding stops at the damage (it does not skip it): the masks of the N frames before it stay,
    the overlay and logits are discarded and no manifest marks the folder finished, so a rerun redoes it."""
    decoded = int(re.search(r"after frame (\d+)", batch.reports[stem]["error"])[1])
    assert 0 < decoded < 30
    folder = batch.output / stem
    assert sorted(p.name for p in folder.iterdir()) == [".stma.lock", "masks"]  # masks and the run's record
    assert sorted(p.name for p in (folder / "masks").iterdir()) == [f"{i:05d}.png" for i in range(decoded)]


def test_no_temporary_file_left(batch: Batch) -> None:
    assert temporary_files(batch.output) == []
