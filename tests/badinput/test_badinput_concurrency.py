"""Two writers of one output folder: a lock per video folder, released by the system when a process dies.

* Two `stma segment` processes started together on the same batch and output folder (re-queued SLURM
  tasks, overlapping shards): every video is written by one of them, whole; the other reports it busy
  or skips it once it is finished.
* A video whose folder another live process holds is reported busy, in one line, and left alone; a lock
  file left by a killed process does not stop the next run, which finishes that video.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from badinput_corpus import (
    Run,
    StmaProcess,
    assert_clean_stderr,
    finished_frames,
    temporary_files,
    tree,
    write_mask,
    write_video,
)

from stma_cli.io.logits import read_logits

VIDEOS = {"a": 6, "b": 7, "c": 5, "d": 6}


@dataclass
class Together:
    runs: list[Run]
    output: Path


@pytest.fixture(scope="module")
def together(tmp_path_factory: pytest.TempPathFactory, random_weights: Path) -> Together:
    root = tmp_path_factory.mktemp("together")
    (root / "videos").mkdir()
    for stem, frames in VIDEOS.items():
        write_video(root / "videos" / f"{stem}.mp4", frames)
        write_mask(root / "videos" / f"{stem}.png")
    args = ["segment", str(root / "videos"), "--mask-template", "{stem}.png", "--weights", str(random_weights),
            "--output", str(root / "out"), "--json"]
    processes = [StmaProcess(args, root) for _ in range(2)]
    return Together([process.wait() for process in processes], root / "out")


def test_every_video_written_once_and_whole(together: Together) -> None:
    reports = [{Path(r["video"]).stem: r for r in map(json.loads, run.stdout.splitlines())} for run in together.runs]
    for stem, frames in VIDEOS.items():
        statuses = sorted(report[stem]["status"] for report in reports)
        assert statuses in (["error", "ok"], ["ok", "skipped"]), (stem, statuses)
        for report in reports:
            if report[stem]["status"] == "error":
                assert report[stem]["error"].startswith(f"{together.output / stem}: busy: another stma process")
        folder = together.output / stem
        assert finished_frames(folder) == frames
        assert sorted(p.name for p in (folder / "masks").iterdir()) == [f"{i:05d}.png" for i in range(frames)]
        assert read_logits(folder / "logits.h5")[0].shape[0] == frames
    assert temporary_files(together.output) == [] and list(together.output.rglob(".stma.lock")) == []


def test_both_report_in_one_line_each(together: Together) -> None:
    for run in together.runs:
        assert run.returncode in (0, 1), run.stderr
        assert all(": busy: another stma process" in line for line in run.error_lines), run.stderr
        assert_clean_stderr(run)


@dataclass
class Held:
    run: Run
    output: Path
    before: dict  # the held folder before the run


HOLD = """
import sys, time
from stma_cli.io.claim import claim_folder
with claim_folder(sys.argv[1]) as claim:
    claim.record({"mask_names": "numbered"})
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory, random_weights: Path) -> Held:
    """`b`'s folder is held by a live process; `c`'s holds the lock file and partial masks of a killed run."""
    root = tmp_path_factory.mktemp("held")
    for stem in "abc":
        write_video(root / f"{stem}.mp4")
        write_mask(root / f"{stem}.png")
    output = root / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(output / "b")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    killed = subprocess.Popen([sys.executable, "-c", HOLD, str(output / "c")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == killed.stdout.readline() == "held\n"
        killed.kill()
        killed.wait()
        (output / "c" / "masks").mkdir()
        (output / "c" / "masks" / "00000.png").write_bytes(b"half a png")
        (output / "c" / ".overlay.tmp-99999-0123abcd.mp4").write_bytes(b"half a video")
        before = tree(output / "b")
        run = StmaProcess(["segment", *(str(root / f"{s}.mp4") for s in "abc"), "--mask-template", "{stem}.png",
                           "--weights", str(random_weights), "--output", str(output)], root).wait()
    finally:
        holder.communicate("")
    return Held(run, output, before)


def test_a_held_folder_is_busy_and_left_alone(held: Held) -> None:
    assert held.run.returncode == 1
    assert "stma: 2 done, 0 skipped, 1 failed" in held.run.stderr.splitlines()
    [line] = held.run.error_lines
    assert line.startswith(f"stma: error: {held.output / 'b'}: busy: another stma process (pid ")
    assert line.endswith("is writing this folder; run again once it is done")
    assert_clean_stderr(held.run)
    assert tree(held.output / "b") == held.before


def test_the_lock_file_of_a_killed_run_does_not_stop_the_next(held: Held) -> None:
    folder = held.output / "c"
    assert finished_frames(folder) == 8 and finished_frames(held.output / "a") == 8
    assert temporary_files(folder) == [] and not (folder / ".stma.lock").exists()
