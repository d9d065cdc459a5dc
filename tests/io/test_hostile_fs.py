"""stma on a hostile file system, with real files in tmp_path: links and special files at every path it
writes, a read-only output folder, a lock held by a live process, inputs at the paths a run replaces, and
`stma eval --output` folders that lead into the dataset.

Each refusal is one `stma: error:` line that names the path and says why, and it leaves every file as it
was: the target of a link, the link itself, the ground truth of a dataset, the results of an earlier run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import Result
from io_helpers import write_video
from PIL import Image
from typer.testing import CliRunner

from stma_cli.cli.app import app

runner = CliRunner()
# Every path stma writes in an output folder: the lock, the masks folder, a mask, and each output file.
WRITTEN = [".stma.lock", "masks", "masks/00000.png", "overlay.mp4", "logits.h5", "manifest.json"]
PRECIOUS = b"precious: not stma's"


@dataclass
class Scene:
    """A 4-frame 64x48 video with its mask, an output folder, and a folder outside it that links lead to."""

    clip: Path
    mask: Path
    out: Path
    victim: Path  # holds `file` and `00000.png`, both PRECIOUS
    weights: str

    def segment(self, *flags: str, source: Path | None = None) -> Result:
        """`stma segment` of the clip (or `source`) into `out`, under a deadline: a run that hangs fails."""
        args = ["segment", str(source or self.clip), "--mask", str(self.mask), "--weights", self.weights,
                "-o", str(self.out), *flags]
        with deadline(10):
            return runner.invoke(app, args)


@pytest.fixture
def scene(tmp_path: Path, tiny_weights: Callable[[int], Path]) -> Scene:
    clip = tmp_path / "clip.mp4"
    write_video(clip, "libx264", "yuv420p", count=4)
    mask = np.zeros((48, 64), np.uint8)
    mask[12:30, 16:40] = 1
    Image.fromarray(mask).save(tmp_path / "mask.png")
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in ("file", "00000.png"):
        (victim / name).write_bytes(PRECIOUS)
    return Scene(clip, tmp_path / "mask.png", tmp_path / "out", victim, str(tiny_weights(0)))


class Hung(BaseException):
    """Raised by `deadline`: not an Exception, so that no `except Exception` (or OSError) in stma takes it."""


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise Hung in the block after `seconds`, then every second (should a clean-up block too): SIGALRM
    interrupts a blocking open or read."""
    def expire(signum: int, frame: object) -> None:
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(folder: Path) -> dict[str, bytes | str | None]:
    """Every path under `folder`: a file's bytes, a link's target, None for a folder (links not followed)."""
    def entry(path: Path) -> bytes | str | None:
        if path.is_symlink():
            return f"-> {os.readlink(path)}"
        return None if path.is_dir() else path.read_bytes()

    return {str(p.relative_to(folder)): entry(p) for p in sorted(folder.rglob("*"))}


def assert_refused(result: Result, names: Path | str, says: str) -> None:
    """Exit 1 and exactly one error line, `stma: error: NAMES: ...` saying `says`; no traceback."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("stma: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"stma: error: {names}: "), result.stderr
    assert says in errors[0], result.stderr
    assert "Traceback" not in result.output


def place_link(scene: Scene, name: str) -> Path:
    """A symbolic link at `out/name` into the victim folder (the folder itself for `masks`)."""
    link = scene.out / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(scene.victim if name == "masks" else scene.victim / "file")
    return link


# -- links where stma writes ------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("name", WRITTEN)
def test_a_symbolic_link_where_stma_writes_is_refused(scene: Scene, name: str, overwrite: bool) -> None:
    link = place_link(scene, name)
    victim, before = snapshot(scene.victim), snapshot(scene.out)
    result = scene.segment(*(["--overwrite"] if overwrite else []))
    assert_refused(result, link, "is a symbolic link")
    assert snapshot(scene.victim) == victim  # nothing written through the link, nothing deleted behind it
    assert snapshot(scene.out) == before  # the link itself stays: stma did not make it


@pytest.mark.parametrize("name", WRITTEN[3:])
def test_a_symbolic_link_over_finished_results_is_refused_and_the_results_kept(scene: Scene, name: str) -> None:
    assert scene.segment().exit_code == 0
    (scene.out / name).unlink()
    link = place_link(scene, name)
    before = snapshot(scene.out)
    assert_refused(scene.segment("--overwrite"), link, "is a symbolic link")
    assert snapshot(scene.out) == before and snapshot(scene.victim)["file"] == PRECIOUS


def test_a_hard_linked_lock_is_refused(scene: Scene) -> None:
    """The lock is written in place: through a second hard link it would change the other file."""
    scene.out.mkdir()
    os.link(scene.victim / "file", scene.out / ".stma.lock")
    assert_refused(scene.segment(), scene.out / ".stma.lock", "has 2 hard links")
    assert (scene.victim / "file").read_bytes() == PRECIOUS
    assert sorted(p.name for p in scene.out.iterdir()) == [".stma.lock"]


@pytest.mark.parametrize("name", ["masks/00000.png", "overlay.mp4", "logits.h5", "manifest.json"])
def test_a_hard_link_at_an_output_file_is_replaced_not_written_through(scene: Scene, name: str) -> None:
    """Output files are written under a temporary name and renamed: the other name keeps its bytes."""
    (scene.out / "masks").mkdir(parents=True)
    os.link(scene.victim / "file", scene.out / name)
    result = scene.segment("--overwrite")
    assert result.exit_code == 0, result.output
    assert (scene.victim / "file").read_bytes() == PRECIOUS
    assert (scene.out / name).read_bytes() != PRECIOUS
    assert not (scene.out / name).samefile(scene.victim / "file")


@pytest.mark.parametrize("name", [".stma.lock", "manifest.json", "overlay.mp4", "masks"])
def test_a_fifo_where_stma_writes_is_refused_at_once(scene: Scene, name: str) -> None:
    scene.out.mkdir()
    os.mkfifo(scene.out / name)
    assert_refused(scene.segment("--overwrite"), scene.out / name, "a FIFO")
    assert sorted(p.name for p in scene.out.iterdir()) == [name]


def test_a_folder_at_the_lock_is_refused(scene: Scene) -> None:
    (scene.out / ".stma.lock").mkdir(parents=True)
    assert_refused(scene.segment(), scene.out / ".stma.lock", "is a folder")


# -- inputs at the paths a run replaces ---------------------------------------------------------------


@pytest.mark.parametrize("through_link", [False, True], ids=["direct", "via-link"])
def test_an_input_video_the_run_would_replace_is_refused(scene: Scene, through_link: bool) -> None:
    assert scene.segment().exit_code == 0
    overlay = scene.out / "overlay.mp4"
    source = overlay
    if through_link:
        source = scene.victim / "video.mp4"
        source.symlink_to(overlay)
    before = snapshot(scene.out)
    assert_refused(scene.segment("--overwrite", source=source), source, "is where stma writes")
    assert snapshot(scene.out) == before


def test_a_frame_folder_that_is_the_output_masks_folder_is_refused(scene: Scene) -> None:
    frames = scene.out / "masks"
    frames.mkdir(parents=True)
    for index in range(3):
        Image.fromarray(np.full((48, 64, 3), 40 * index, np.uint8)).save(frames / f"{index:05d}.png")
    before = snapshot(scene.out)
    result = scene.segment("--overwrite", source=frames)
    assert_refused(result, frames / "00000.png", "is where stma writes")
    assert snapshot(scene.out) == before


# -- a read-only output folder, a lock held by another process ----------------------------------------


def set_folder_modes(folder: Path, mode: int) -> None:
    """chmod `folder` and every folder in it."""
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(mode)


@pytest.fixture
def freezable(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """A folder and a function that makes it read-only: mode 555, or for root (whom modes do not stop) a
    small tmpfs remounted read-only."""
    folder = tmp_path / "frozen"
    folder.mkdir()
    if os.geteuid() != 0:
        yield folder, lambda: set_folder_modes(folder, 0o555)
        set_folder_modes(folder, 0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root (folder modes do not stop root) and cannot mount a tmpfs: {mounted.stderr!r}")
    try:
        yield folder, lambda: subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_output_folder_fails_in_one_line_and_keeps_its_results(
        scene: Scene, freezable: tuple[Path, Callable[[], None]]) -> None:
    folder, freeze = freezable
    scene.out = folder / "out"
    assert scene.segment().exit_code == 0
    freeze()
    before = snapshot(folder)
    assert_refused(scene.segment("--overwrite"), scene.out / ".stma.lock", "cannot create the lock file")
    scene.out = folder / "new"
    assert_refused(scene.segment(), scene.out, "cannot create the output folder")
    assert snapshot(folder) == before


def test_a_lock_held_by_a_live_process_is_busy_and_nothing_is_written(scene: Scene) -> None:
    """Another process holds flock on the lock file: the run says busy and writes nothing; once that process
    is gone, the next run goes through."""
    scene.out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('held', flush=True)\ntime.sleep(60)", str(scene.out / ".stma.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert_refused(scene.segment(), scene.out, "busy: another stma process")
        assert sorted(p.name for p in scene.out.iterdir()) == [".stma.lock"]
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    result = scene.segment()
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in scene.out.iterdir()) == ["logits.h5", "manifest.json", "masks", "overlay.mp4"]


# -- stma eval --output and the dataset -------------------------------------------------------------


def make_davis(root: Path) -> Path:
    """A DAVIS layout with one 3-frame 32x32 sequence, `square`."""
    for t in range(3):
        labels = np.zeros((32, 32), np.uint8)
        labels[8:16, 8 + t : 16 + t] = 1
        for folder, image, suffix in (("JPEGImages/480p/square", Image.new("RGB", (32, 32)), "jpg"),
                                      ("Annotations/480p/square", Image.fromarray(labels, "L"), "png")):
            (root / folder).mkdir(parents=True, exist_ok=True)
            image.save(root / folder / f"{t:05d}.{suffix}")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("square\n")
    return root


def make_youtube(root: Path) -> Path:
    """A YouTube-VOS layout with one video, `v1`: frames 00000 and 00005, object 1 given on 00000."""
    split = root / "valid"
    (split / "JPEGImages" / "v1").mkdir(parents=True)
    for t in (0, 5):
        Image.new("RGB", (32, 32)).save(split / "JPEGImages" / "v1" / f"{t:05d}.jpg")
    (split / "Annotations" / "v1").mkdir(parents=True)
    Image.fromarray(np.ones((32, 32), np.uint8), "L").save(split / "Annotations" / "v1" / "00000.png")
    meta = {"videos": {"v1": {"objects": {"1": {"frames": ["00000", "00005"]}}}}}
    (split / "meta.json").write_text(json.dumps(meta))
    return root


@dataclass(frozen=True)
class EvalCase:
    layout: str  # davis or youtube
    output: str  # --output ({tmp}: the test's folder, {data}: the dataset)
    links: dict[str, str]  # link -> its target
    names: str  # the path the error line starts with
    says: str


EVAL_CASES = {
    # PRED/<sequence> leads into the ground truth: the predictions would replace it.
    "sequence_links_into_the_annotations": EvalCase(
        "davis", "{tmp}/pred", {"{tmp}/pred/square": "{data}/Annotations/480p/square"}, "{tmp}/pred/square",
        "overlaps the dataset"),
    "sequence_links_out_of_the_output": EvalCase(
        "davis", "{tmp}/pred", {"{tmp}/pred/square": "{tmp}/elsewhere"}, "{tmp}/pred/square", "outside --output"),
    "output_links_to_the_annotations": EvalCase(
        "davis", "{tmp}/pred", {"{tmp}/pred": "{data}/Annotations/480p"}, "--output {tmp}/pred",
        "overlaps the dataset"),
    "output_inside_the_dataset": EvalCase("davis", "{data}/predictions", {}, "--output {data}/predictions",
                                          "overlaps the dataset"),
    # Predictions go to OUTPUT/Annotations/VIDEO/: with --output DATASET/valid, into the ground truth.
    "youtube_output_is_the_split": EvalCase("youtube", "{data}/valid", {}, "--output {data}/valid",
                                            "overlaps the dataset"),
    "youtube_annotations_link_into_the_split": EvalCase(
        "youtube", "{tmp}/pred", {"{tmp}/pred/Annotations": "{data}/valid/Annotations"},
        "{tmp}/pred/Annotations/v1", "overlaps the dataset"),
}


@pytest.mark.parametrize("name", EVAL_CASES)
def test_eval_output_that_leads_into_the_dataset_is_refused(tmp_path: Path, tiny_weights: Callable[[int], Path],
                                                            name: str) -> None:
    case = EVAL_CASES[name]
    data = (make_davis if case.layout == "davis" else make_youtube)(tmp_path / "data")
    (tmp_path / "elsewhere").mkdir()

    def fill(text: str) -> str:
        return text.replace("{tmp}", str(tmp_path)).replace("{data}", str(data))

    for link, target in case.links.items():
        Path(fill(link)).parent.mkdir(parents=True, exist_ok=True)
        Path(fill(link)).symlink_to(fill(target))
    before = snapshot(tmp_path)
    with deadline(10):
        result = runner.invoke(app, ["eval", str(data), "--format", case.layout, "--output", fill(case.output),
                                     "--weights", str(tiny_weights(0))])
    assert_refused(result, fill(case.names), case.says)
    assert snapshot(tmp_path) == before


def test_eval_output_beside_the_dataset_is_written(tmp_path: Path, tiny_weights: Callable[[int], Path]) -> None:
    """Real paths are compared as paths: an output whose name only begins like the dataset's is fine."""
    data = make_davis(tmp_path / "data")
    truth = snapshot(data)
    with deadline(10):
        result = runner.invoke(app, ["eval", str(data), "--output", str(tmp_path / "data-pred"), "--weights",
                                     str(tiny_weights(0)), "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "data-pred" / "square").iterdir()) == [f"{t:05d}.png" for t in range(3)]
    assert snapshot(data) == truth
