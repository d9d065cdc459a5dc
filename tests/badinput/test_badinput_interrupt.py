"""Ctrl-C in the middle of a batch: a clean stop with exit code 130, and a rerun that picks up from there."""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from badinput_corpus import (
    FRAMES,
    Run,
    StmaProcess,
    assert_clean_stderr,
    finished_frames,
    run_stma,
    temporary_files,
    write_mask,
    write_video,
)

LONG = 120  # frames of the video that gets interrupted


@dataclass
class Interrupted:
    run: Run
    rerun: Run
    output: Path
    at_interrupt: list[str]  # every path under the output folder after the interrupted run, sorted


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory, random_weights: Path) -> Interrupted:
    """`a_good`, `long`, `z_good` in one batch; SIGINT once `long` has 5 masks; then the same command again."""
    root = tmp_path_factory.mktemp("interrupt")
    videos = [write_video(root / "a_good.mp4"), write_video(root / "long.mp4", LONG), write_video(root / "z_good.mp4")]
    for video in videos:
        write_mask(root / f"{video.stem}.png")
    output = root / "out"
    args = ["segment", *map(str, videos), "--mask-template", "{stem}.png", "--weights", str(random_weights),
            "--output", str(output)]
    process = StmaProcess(args, root)
    deadline = time.monotonic() + 180
    while not (output / "long" / "masks" / "00004.png").exists():
        assert process.process.poll() is None, "stma ended before it could be interrupted"
        assert time.monotonic() < deadline, "stma did not reach the long video"
        time.sleep(0.02)
    process.process.send_signal(signal.SIGINT)
    run = process.wait()
    at_interrupt = sorted(str(p.relative_to(output)) for p in output.rglob("*"))
    return Interrupted(run, run_stma(args, root), output, at_interrupt)


def test_clean_stop_with_exit_code_130(interrupted: Interrupted) -> None:
    assert interrupted.run.returncode == 130
    assert interrupted.run.stderr.splitlines()[-1] == (
        f"stma: interrupted while segmenting {interrupted.output.parent / 'long.mp4'} (finished videos are kept)")
    assert interrupted.run.error_lines == []
    assert_clean_stderr(interrupted.run)


def test_state_at_interrupt(interrupted: Interrupted) -> None:
    """`a_good` finished; `long` holds the masks of the frames done and nothing else (no overlay, logits,
    manifest or temporary file), so it is not taken for finished; `z_good` not started."""
    done = [f"a_good/{name}" for name in ("logits.h5", "manifest.json", "masks", "overlay.mp4")]
    done += [f"a_good/masks/{i:05d}.png" for i in range(FRAMES)]
    masks = [path for path in interrupted.at_interrupt if path.startswith("long/masks/")]
    assert 5 <= len(masks) < LONG
    assert interrupted.at_interrupt == sorted([*done, "long", "long/.stma.lock", "long/masks", "a_good",
                                               *[f"long/masks/{i:05d}.png" for i in range(len(masks))]])


def test_rerun_skips_the_finished_video_and_completes_the_rest(interrupted: Interrupted) -> None:
    assert interrupted.rerun.returncode == 0, interrupted.rerun.stderr
    assert "stma: 2 done, 1 skipped, 0 failed" in interrupted.rerun.stderr.splitlines()
    assert finished_frames(interrupted.output / "a_good") == FRAMES
    assert finished_frames(interrupted.output / "long") == LONG
    assert finished_frames(interrupted.output / "z_good") == FRAMES
    assert len(list((interrupted.output / "long" / "masks").iterdir())) == LONG
    assert temporary_files(interrupted.output) == []
