"""Ctrl-C and SIGTERM in the middle of a batch: a clean stop (130, 143) naming the interrupted video, no
temporary file left (output, backward-pass scratch, standard-input spool), and a rerun that picks up from
there. After a SIGKILL, which no process can clean up after, the next run removes what it finds.
"""
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
MIDDLE = 60  # the frame of its mask in the backward-pass cases
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
SAYS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated (SIGTERM)"}


def _wait_for(process: StmaProcess, ready, what: str) -> None:
    deadline = time.monotonic() + 180
    while not ready():
        assert process.process.poll() is None, f"stma ended before {what}"
        assert time.monotonic() < deadline, f"stma did not reach {what}"
        time.sleep(0.02)


@dataclass
class Interrupted:
    signal: int
    run: Run
    rerun: Run
    output: Path
    at_interrupt: list[str]  # every path under the output folder after the interrupted run, sorted


@pytest.fixture(scope="module", params=[signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def interrupted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                random_weights: Path) -> Interrupted:
    """`a_good`, `long`, `z_good` in one batch; the signal once `long` has 5 masks; then the same command again."""
    root = tmp_path_factory.mktemp("interrupt")
    videos = [write_video(root / "a_good.mp4"), write_video(root / "long.mp4", LONG), write_video(root / "z_good.mp4")]
    for video in videos:
        write_mask(root / f"{video.stem}.png")
    output = root / "out"
    args = ["segment", *map(str, videos), "--mask-template", "{stem}.png", "--weights", str(random_weights),
            "--output", str(output)]
    process = StmaProcess(args, root)
    _wait_for(process, (output / "long" / "masks" / "00004.png").exists, "the long video")
    process.process.send_signal(request.param)
    run = process.wait()
    at_interrupt = sorted(str(p.relative_to(output)) for p in output.rglob("*"))
    return Interrupted(request.param, run, run_stma(args, root), output, at_interrupt)


def test_clean_stop_with_its_exit_code_and_one_line_naming_the_video(interrupted: Interrupted) -> None:
    assert interrupted.run.returncode == EXIT[interrupted.signal]
    assert interrupted.run.stderr.splitlines()[-1] == (
        f"stma: {SAYS[interrupted.signal]} while segmenting {interrupted.output.parent / 'long.mp4'} "
        "(finished videos are kept)")
    assert interrupted.run.error_lines == []
    assert_clean_stderr(interrupted.run)


def test_state_at_interrupt(interrupted: Interrupted) -> None:
    """`a_good` finished; `long` holds the masks of the frames done and the record of its unfinished run, and
    nothing else (no overlay, logits, manifest or temporary file), so it is not taken for finished; `z_good`
    not started."""
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
    assert not list(interrupted.output.rglob(".stma.lock"))


@dataclass
class Backward:
    terminated: Run
    killed: Run
    rerun: Run
    outputs: dict[str, Path]
    spool: Path  # the temporary folder of the terminated run (TMPDIR)
    left_by_kill: list[str]  # temporary files the killed run left


@pytest.fixture(scope="module")
def backward(tmp_path_factory: pytest.TempPathFactory, random_weights: Path) -> Backward:
    """A video on standard input with its mask on frame 60 and --direction both, stopped during the backward
    pass (its frames and results wait in scratch files): once by SIGTERM, once by SIGKILL, then rerun."""
    root = tmp_path_factory.mktemp("backward")
    video, mask = write_video(root / "long.mp4", LONG), write_mask(root / "long.png")
    outputs = {name: root / name for name in ("terminated", "killed")}
    (root / "tmp").mkdir()

    def start(name: str) -> StmaProcess:
        args = ["segment", "-", "--mask", f"{MIDDLE}:{mask}", "--direction", "both", "--weights",
                str(random_weights), "--output", str(outputs[name])]
        return StmaProcess(args, root, stdin=video, env={"TMPDIR": str(root / "tmp")} if name == "terminated" else {})

    runs = {}
    for name, stop in (("terminated", signal.SIGTERM), ("killed", signal.SIGKILL)):
        process = start(name)
        _wait_for(process, lambda: any(".labels.tmp-" in p.name for p in outputs[name].glob(".*")), "the backward pass")
        process.process.send_signal(stop)
        runs[name] = process.wait()
    left = sorted(p.name for p in temporary_files(outputs["killed"]))
    rerun = start("killed").wait()
    return Backward(runs["terminated"], runs["killed"], rerun, outputs, root / "tmp", left)


def test_sigterm_removes_scratch_and_spool(backward: Backward) -> None:
    run = backward.terminated
    assert run.returncode == 143
    assert run.stderr.splitlines()[-1] == "stma: terminated (SIGTERM) while segmenting - (finished videos are kept)"
    assert_clean_stderr(run)
    assert temporary_files(backward.outputs["terminated"]) == []  # frames, labels, logits scratch; overlay, logits
    assert list(backward.spool.iterdir()) == []  # the copy of standard input


def test_after_sigkill_the_next_run_removes_what_it_left(backward: Backward) -> None:
    assert backward.killed.returncode == -signal.SIGKILL
    assert any(name.startswith(".frames.tmp-") for name in backward.left_by_kill)
    assert backward.rerun.returncode == 0, backward.rerun.stderr
    folder = backward.outputs["killed"]
    assert temporary_files(folder) == [] and not (folder / ".stma.lock").exists()
    assert finished_frames(folder) == LONG
