"""Disk full while writing, one case per kind of output file: masks, overlay, logits; and a real full disk
under the scratch files of a backward run.

For the output files, a full disk is realised with RLIMIT_FSIZE (SIGXFSZ ignored): a write that would take a
file past the limit fails with EFBIG ("File too large"), as a write to a full disk fails with ENOSPC, and both
reach the same code. The limit is per file, so in each batch only the big output of the middle video, `big`,
goes over it: the good videos before and after it are finished, `big` fails with one line naming its file.

A backward run keeps its frames and results in scratch files, and a memory map over a sparse file does not
fail its writes: the process died of SIGBUS. That needs a real full disk: a small tmpfs, which only root can
mount; otherwise the test is skipped and says why.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Iterator
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
    run_stma,
    run_stma_together,
    temporary_files,
    write_mask,
    write_video,
)


@dataclass(frozen=True)
class Case:
    flags: list[str]
    limit: int  # bytes per file: above what a good video writes, below what `big` writes
    fails: str  # the file of `big` the error names
    says: str


CASES = {
    # 120 noise frames make an overlay and logits well over 20 kB; an 8-frame video's stay under it.
    "overlay": Case(["--no-logits"], 20_000, "overlay.mp4", "cannot write the video (File too large)"),
    "logits": Case(["--no-overlay"], 20_000, "logits.h5", "cannot write the logits file (File too large)"),
    # The first mask is the user's mask: a 320x240 random-dot mask is over 6 kB as PNG, a 64x48 one under.
    "masks": Case(["--no-overlay", "--no-logits"], 6_000, "masks/00000.png", "cannot write the mask (File too large)"),
}


@dataclass
class DiskFull:
    runs: dict[str, Run]
    outputs: dict[str, Path]


@pytest.fixture(scope="module")
def disk_full(tmp_path_factory: pytest.TempPathFactory, random_weights: Path) -> DiskFull:
    root = tmp_path_factory.mktemp("disk-full")
    good = [write_video(root / "a_good.mp4"), write_video(root / "z_good.mp4")]
    for video in good:
        write_mask(root / "masks" / f"{video.stem}.png")
    long, wide = root / "long" / "big.mp4", root / "wide" / "big.mp4"
    long.parent.mkdir(), wide.parent.mkdir()
    write_video(long, 120)
    write_mask(long.parent / "masks" / "big.png")
    write_video(wide, 2, width=320, height=240)
    dots = np.random.default_rng(2).integers(0, 2, (240, 320), dtype=np.uint8) * 255
    write_mask(wide.parent / "masks" / "big.png", dots)

    outputs = {name: root / f"out-{name}" for name in CASES}
    runs = {}
    for name, case in CASES.items():
        big = wide if name == "masks" else long
        args = ["segment", str(good[0]), str(big), str(good[1]), "--mask-template", "masks/{stem}.png",
                "--weights", str(random_weights), "--output", str(outputs[name]), *case.flags]
        runs[name] = (args, case.limit)
    return DiskFull(run_stma_together(runs, root), outputs)


@pytest.mark.parametrize("name", CASES)
def test_one_error_line_naming_the_file(disk_full: DiskFull, name: str) -> None:
    run = disk_full.runs[name]
    assert run.returncode == 1, run.stderr
    assert "stma: 2 done, 0 skipped, 1 failed" in run.stderr.splitlines()
    path = disk_full.outputs[name] / "big" / CASES[name].fails
    assert run.error_lines == [f"stma: error: {path}: {CASES[name].says}"]
    assert_clean_stderr(run)


@pytest.mark.parametrize("name", CASES)
def test_other_videos_finished(disk_full: DiskFull, name: str) -> None:
    for stem in ("a_good", "z_good"):
        assert finished_frames(disk_full.outputs[name] / stem) == FRAMES


@pytest.mark.parametrize("name", CASES)
def test_no_partial_file(disk_full: DiskFull, name: str) -> None:
    """The file that hit the limit is removed with the other unfinished outputs; masks written before stay."""
    folder = disk_full.outputs[name] / "big"
    assert sorted(p.name for p in folder.iterdir()) == [".stma.lock", "masks"]  # masks and the run's record
    assert not (folder / CASES[name].fails).exists()
    assert temporary_files(disk_full.outputs[name]) == []


# -- a backward run on a real full disk ---------------------------------------------------------------

PAGE = os.sysconf("SC_PAGE_SIZE")
SPARE_PAGES = 12  # room left after the frames: for the lock and the output files just opened, not the labels
# Enough frames that the labels (one byte a pixel) need well over SPARE_PAGES pages.
BACKWARD_FRAMES = math.ceil(3 * SPARE_PAGES * PAGE / (WIDTH * HEIGHT))
SMALL_DISK = (math.ceil(BACKWARD_FRAMES * WIDTH * HEIGHT * 3 / PAGE) + SPARE_PAGES) * PAGE
SCRATCH_FULL = re.compile(r"stma: error: (?P<folder>.+)/\.labels\.tmp-\d+-[0-9a-f]{8}\.npy: cannot reserve space for "
                          r"the scratch file of the backward pass \(No space left on device\)")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of SMALL_DISK bytes: room for the frames of the backward run, not for its results."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a real full disk is a small tmpfs, and mounting one needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a real full disk: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_backward_run_on_a_full_disk_fails_in_one_line_and_cleans_up(tmp_path: Path, small_disk: Path,
                                                                      random_weights: Path) -> None:
    """One error line naming the scratch file, exit 1 (not 135, SIGBUS); no scratch or temporary file is
    left, only the run's record in the lock file, unlocked, as after any run that did not finish."""
    video = write_video(tmp_path / "long.mp4", BACKWARD_FRAMES)
    mask = write_mask(tmp_path / "long.png")
    out = small_disk / "out"
    run = run_stma(["segment", str(video), "--mask", f"{BACKWARD_FRAMES - 1}:{mask}", "--direction", "backward",
                    "--weights", str(random_weights), "--output", str(out)], tmp_path)
    assert run.returncode == 1, run.stderr
    assert len(run.error_lines) == 1 and SCRATCH_FULL.fullmatch(run.error_lines[0]), run.stderr
    assert SCRATCH_FULL.fullmatch(run.error_lines[0])["folder"] == str(out)
    assert_clean_stderr(run)
    assert sorted(p.name for p in out.iterdir()) == [".stma.lock", "masks"]
    assert temporary_files(out) == [] and list((out / "masks").iterdir()) == []
