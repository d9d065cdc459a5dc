"""Special files as inputs: a FIFO or a process substitution `<(...)` as the video, /dev/zero, /dev/urandom or
a FIFO as the mask, garbage on standard input. A stream is read as `-` is; a mask must be a regular file; a
wrong stream fails after its first bytes; SIGTERM ends a run within seconds, whatever it waits on, with 143.

Everything is real: FIFOs from os.mkfifo, devices, pipes, `bash`, signals. Every run has a timeout, so that
a regression fails instead of hanging.
"""
from __future__ import annotations

import array
import fcntl
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from io_helpers import write_video
from PIL import Image

from stma_cli.io.provenance import input_identity

FRAMES = 8
RUN_LIMIT_S = 180  # a whole run, model loading included, on a busy machine
SIGTERM_LIMIT_S = 10  # from SIGTERM to the end of the process


@dataclass
class Scene:
    root: Path
    clip: Path  # an 8-frame 64x48 MP4, its index at the end (a probe needs all of it)
    mask: Path
    weights: Path
    spool: Path  # TMPDIR of the runs: the copies of streams go there

    def args(self, *inputs: str | Path, mask: str | Path | None = None) -> list[str]:
        masks = ["--mask-template", "{stem}.png"] if mask is None else ["--mask", str(mask)]
        return ["segment", *map(str, inputs), *masks, "--weights", str(self.weights), "--output",
                str(self.root / "out"), "--no-logits", "--no-overlay"]

    def copies(self) -> list[str]:
        """The copies of streams left in TMPDIR (torch keeps a folder of its own there)."""
        return [path.name for path in self.spool.iterdir() if path.name.startswith("stma-")]

    def start(self, args: list[str], stdin: int | None = None) -> subprocess.Popen[str]:
        """`python -m stma_cli ARGS` in the scene's folder (`stdin`: a descriptor; default: nothing)."""
        return subprocess.Popen([sys.executable, "-m", "stma_cli", *args], cwd=self.root,
                                env={**os.environ, "TMPDIR": str(self.spool)},
                                stdin=subprocess.DEVNULL if stdin is None else stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def scene(tmp_path: Path, tiny_weights: Callable[[int], Path]) -> Scene:
    clip = tmp_path / "clip.mp4"
    write_video(clip, "libx264", "yuv420p", count=FRAMES)
    labels = np.zeros((48, 64), np.uint8)
    labels[12:30, 16:40] = 1
    Image.fromarray(labels).save(tmp_path / "clip.png")
    (tmp_path / "tmp").mkdir()
    return Scene(tmp_path, clip, tmp_path / "clip.png", tiny_weights(0), tmp_path / "tmp")


@pytest.fixture
def fifo(scene: Scene) -> Iterator[tuple[Path, int]]:
    """A FIFO `feed` (with its mask `feed.png`), and the descriptor of a writer that holds it open."""
    path = scene.root / "feed"
    os.mkfifo(path)
    (scene.root / "feed.png").write_bytes(scene.mask.read_bytes())
    writer = os.open(path, os.O_RDWR)  # a writer at once, without waiting for a reader (Linux)
    yield path, writer
    os.close(writer)


def finish(process: subprocess.Popen[str], timeout: float) -> tuple[int, list[str]]:
    """Wait for the end: (exit code, stderr lines); a process still running after `timeout` s fails the test."""
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        raise AssertionError(f"stma still ran {timeout} s later:\n{stderr}") from None
    return process.returncode, stderr.splitlines()


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + RUN_LIMIT_S
    while not ready():
        assert process.poll() is None, f"stma ended before {what}: {process.communicate()[1]}"
        assert time.monotonic() < deadline, f"stma did not reach {what}"
        time.sleep(0.05)


def has_open(process: subprocess.Popen[str], path: Path) -> bool:
    """Whether the process holds `path` open."""
    folder = Path(f"/proc/{process.pid}/fd")
    try:
        return any(os.readlink(fd) == str(path) for fd in folder.iterdir())
    except FileNotFoundError:  # a descriptor closed while looked at
        return False


def unread(fd: int) -> int:
    """Bytes waiting in the pipe of `fd`."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


def terminate(process: subprocess.Popen[str]) -> tuple[int, list[str], float]:
    """SIGTERM, then (exit code, stderr lines, seconds to the end)."""
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code, lines = finish(process, SIGTERM_LIMIT_S)
    return code, lines, time.monotonic() - sent


# -- a FIFO or a process substitution as the video --------------------------------------------------


def test_sigterm_ends_a_batch_waiting_on_a_fifo_that_never_gets_data(scene: Scene, fifo: tuple[Path, int]) -> None:
    path, _ = fifo
    process = scene.start(scene.args(scene.clip, path))
    wait_until(lambda: (scene.root / "out" / "clip" / "manifest.json").exists() and has_open(process, path),
               process, "the FIFO, after the first video")
    code, lines, seconds = terminate(process)
    assert code == 143, lines
    assert lines[-1] == f"stma: terminated (SIGTERM) while segmenting {path} (finished videos are kept)"
    assert seconds < SIGTERM_LIMIT_S
    assert len(list((scene.root / "out" / "clip" / "masks").iterdir())) == FRAMES
    assert scene.copies() == []


def test_sigterm_ends_a_run_whose_stream_stalls_in_the_middle_of_its_probe(scene: Scene,
                                                                           fifo: tuple[Path, int]) -> None:
    """The first 4 KiB of a video whose index comes last: FFmpeg waits for more, in a read it cannot leave."""
    path, writer = fifo
    os.write(writer, scene.clip.read_bytes()[:4096])
    process = scene.start(scene.args(path))
    wait_until(lambda: has_open(process, path) and unread(writer) == 0, process, "the FIFO's first bytes")
    time.sleep(0.5)  # FFmpeg asks for more
    code, lines, _ = terminate(process)
    assert code == 143, lines
    assert lines[-1] == f"stma: terminated (SIGTERM) while segmenting {path} (finished videos are kept)"
    assert scene.copies() == []


def catches_sigterm(process: subprocess.Popen[str]) -> bool:
    """Whether the process has its SIGTERM handler in place (the SigCgt mask of /proc/PID/status)."""
    status = Path(f"/proc/{process.pid}/status").read_text()
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & 1 << (signal.SIGTERM - 1))


def test_sigterm_during_start_up_exits_143_too(scene: Scene) -> None:
    """Right after the handler is in place, while the command imports torch: Typer would exit 130."""
    process = scene.start(scene.args(scene.clip, mask=scene.mask))
    wait_until(lambda: catches_sigterm(process), process, "its SIGTERM handler")
    code, lines, _ = terminate(process)
    assert code == 143, lines
    assert lines[-1].startswith("stma: terminated (SIGTERM)")


def test_a_process_substitution_is_read_as_a_stream(scene: Scene) -> None:
    options = scene.args(mask=scene.mask)[1:]  # after "segment"
    command = (f"{shlex.join([sys.executable, '-m', 'stma_cli', 'segment'])} <(cat {shlex.quote(str(scene.clip))}) "
               f"{shlex.join(options)}")
    process = subprocess.Popen(["bash", "-c", command], cwd=scene.root, env={**os.environ, "TMPDIR": str(scene.spool)},
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, lines = finish(process, RUN_LIMIT_S)
    assert code == 0, lines
    assert lines[-1] == "stma: 1 done, 0 skipped, 0 failed"
    out = scene.root / "out"
    assert len(list((out / "masks").iterdir())) == FRAMES
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["provenance"]["input"] == {"stream_sha256": hashlib.sha256(scene.clip.read_bytes()).hexdigest()}
    assert scene.copies() == []


def test_a_fifo_is_known_by_its_bytes_not_by_its_path(scene: Scene, fifo: tuple[Path, int]) -> None:
    """Before it is read, a FIFO has no identity: a finished folder is not taken for its results unread."""
    path, _ = fifo
    assert input_identity(str(path)) is None
    assert input_identity(str(path), "ab12") == {"stream_sha256": "ab12"}


# -- garbage on standard input ------------------------------------------------------------------------


def test_garbage_on_stdin_fails_after_its_first_bytes(scene: Scene) -> None:
    """8 MiB of noise, then the pipe is held open: stma fails having read about the first MiB (FFmpeg's
    probe), not all of it, and not waiting for the end."""
    total = 8 << 20
    read_end, write_end = os.pipe()
    sent = 0

    def write() -> None:
        nonlocal sent
        noise = np.random.default_rng(0).bytes(total)
        try:
            while sent < total:
                sent += os.write(write_end, noise[sent : sent + (64 << 10)])
        except BrokenPipeError:  # stma is gone
            pass

    writer = threading.Thread(target=write, daemon=True)
    try:
        process = scene.start(scene.args("-", mask=scene.mask), stdin=read_end)
        os.close(read_end)
        writer.start()
        code, lines = finish(process, RUN_LIMIT_S)
        assert code == 1, lines
        assert "stma: error: <stdin>: not a readable video (Invalid data found when processing input)" in lines
        writer.join(timeout=10)
        assert sent < total
    finally:
        os.close(write_end)
    assert scene.copies() == []


# -- special files as masks ---------------------------------------------------------------------------


@pytest.mark.parametrize(("mask", "kind"), [("/dev/zero", "a character device"),
                                             ("/dev/urandom", "a character device"), ("feed", "a FIFO")])
def test_a_mask_that_is_not_a_regular_file_is_refused_at_once(scene: Scene, fifo: tuple[Path, int],
                                                              mask: str, kind: str) -> None:
    process = scene.start(scene.args(scene.clip, mask=mask))
    code, lines = finish(process, RUN_LIMIT_S)
    assert code == 1, lines
    errors = [line for line in lines if line.startswith("stma: error:")]
    assert errors == [f"stma: error: {mask}: the mask is not a regular file ({kind})"], lines
    assert "Traceback" not in "\n".join(lines)


@pytest.mark.parametrize(("mask", "kind"), [("/dev/zero", "a character device"), ("feed", "a FIFO")])
def test_read_mask_refuses_a_special_file(scene: Scene, fifo: tuple[Path, int], mask: str, kind: str) -> None:
    """The mask reader on its own (as `stma eval` and the resume use it), in a process of its own."""
    script = "import sys\nfrom stma_cli.io.masks import read_mask\nread_mask(sys.argv[1])\n"
    result = subprocess.run([sys.executable, "-c", script, mask], cwd=scene.root, capture_output=True, text=True,
                            timeout=60)
    assert f"StmaError: {mask}: the mask is not a regular file ({kind})" in result.stderr
