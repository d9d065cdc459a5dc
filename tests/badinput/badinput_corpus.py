"""The bad-input corpus: files that are wrong in one way each, and a runner for `stma` processes.

Every file is built from scratch with PyAV, Pillow or plain bytes, so the corpus needs no data files.
Videos are 64x48 random noise: incompressible, so every frame is a sizeable part of the file and cutting
or overwriting the middle of a file reliably damages frames there.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import av
import numpy as np
from PIL import Image

WIDTH, HEIGHT = 64, 48
FRAMES = 8  # frames of a good video


# -- videos ----------------------------------------------------------------------------------------


def noise_frames(count: int, width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> list[np.ndarray]:
    """Random RGB frames."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def write_video(path: Path, count: int = FRAMES, *, width: int = WIDTH, height: int = HEIGHT,
                faststart: bool = True) -> Path:
    """An H.264 video of `count` noise frames (MP4 with its index first unless `faststart` is False)."""
    options = {"movflags": "+faststart"} if faststart and path.suffix == ".mp4" else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in noise_frames(count, width, height):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def write_empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_text_file(path: Path) -> Path:
    path.write_text("this is a text file, not a video\n")
    return path


def write_truncated_video(path: Path) -> Path:
    """A 30-frame MP4 cut in the middle of its frame data, its index intact (a download cut short)."""
    write_video(path, 30)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_video_without_index(path: Path) -> Path:
    """A 30-frame MP4 cut before its index, which comes last (a recording whose writer was killed)."""
    write_video(path, 30, faststart=False)
    data = path.read_bytes()
    assert data.rfind(b"moov") > len(data) // 2
    path.write_bytes(data[: len(data) // 2])
    return path


def write_corrupt_middle_video(path: Path) -> Path:
    """A 30-frame MP4 with 2,000 random bytes written over the middle of its frame data."""
    write_video(path, 30)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def write_audio_only(path: Path) -> Path:
    """An MP4 with one AAC audio stream and no video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for index in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_zero_frame_video(path: Path) -> Path:
    """An AVI whose video stream holds no frame (MP4 would drop a stream without samples)."""
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    container.start_encoding()
    container.close()
    return path


def write_frame_folder(folder: Path, count: int = FRAMES) -> Path:
    """A folder of `count` PNG noise frames, 00000.png, 00001.png, ..."""
    folder.mkdir(parents=True)
    for index, frame in enumerate(noise_frames(count)):
        Image.fromarray(frame).save(folder / f"{index:05d}.png")
    return folder


def write_bomb_png(path: Path, width: int = 40_000, height: int = 40_000) -> Path:
    """A PNG header announcing width x height pixels, far past Pillow's decompression-bomb limit (a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def write_mixed_size_folder(folder: Path) -> Path:
    """A folder of three PNG frames whose second frame is two pixels wider."""
    folder.mkdir()
    for index, frame in enumerate(noise_frames(3)):
        if index == 1:
            frame = np.zeros((HEIGHT, WIDTH + 2, 3), np.uint8)
        Image.fromarray(frame).save(folder / f"{index:05d}.png")
    return folder


# -- masks -----------------------------------------------------------------------------------------


def object_mask(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A binary 0/255 mask with one rectangle: object 1."""
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : height // 2, width // 4 : width // 2] = 255
    return mask


def many_objects_mask(count: int) -> np.ndarray:
    """A grayscale mask with objects 1..count, 64 pixels each."""
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    for object_id in range(1, count + 1):
        labels.flat[(object_id - 1) * 64 : object_id * 64] = object_id
    return labels


def write_mask(path: Path, labels: np.ndarray | None = None) -> Path:
    """A grayscale PNG mask (default: `object_mask()`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(object_mask() if labels is None else labels).save(path)
    return path


# -- weights ---------------------------------------------------------------------------------------


def write_truncated_weights(good: Path, folder: Path) -> Path:
    """A copy of the weights folder `good` whose model.safetensors is cut to its first 1,000 bytes."""
    folder.mkdir()
    (folder / "config.json").write_bytes((good / "config.json").read_bytes())
    (folder / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:1000])
    return folder


def write_other_architecture(good: Path, folder: Path, architecture: str = "xmem") -> Path:
    """A copy of the weights folder `good` whose config.json names another architecture."""
    folder.mkdir()
    config = json.loads((good / "config.json").read_text())
    config["architecture"] = architecture
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
    return folder


# -- running stma ----------------------------------------------------------------------------------


@dataclass
class Run:
    """What one `stma` process did."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("stma: error:")]


class StmaProcess:
    """`python -m stma_cli ARGS` started in `cwd`; its output goes to files, so no pipe can fill up.

    One compute thread per process (the corpus runs several at once) and an offline Hub.
    `file_size_limit` (bytes) sets RLIMIT_FSIZE: a write past it fails with EFBIG, as on a full disk.
    `stdin` is a file to read standard input from (default: nothing); `env` adds environment variables.
    """

    def __init__(self, args: list[str], cwd: Path, file_size_limit: int | None = None, *,
                 stdin: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.args = args
        self._stdout, self._stderr = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
        with open(stdin or os.devnull, "rb") as source:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stma_cli", *args], cwd=cwd, env=environment, stdin=source,
                stdout=self._stdout, stderr=self._stderr,
                preexec_fn=_child_setup(file_size_limit),
            )

    def wait(self, timeout: float = 240) -> Run:
        """Wait for the end; a process that runs past `timeout` seconds is killed and fails the test."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"stma {' '.join(self.args)} ran over {timeout} s:\n{self._read(self._stderr)}")
        return Run(self.args, self.process.returncode, self._read(self._stdout), self._read(self._stderr))

    @staticmethod
    def _read(file: IO[bytes]) -> str:
        file.seek(0)
        text = file.read().decode("utf-8", errors="replace")
        file.close()
        return text


def _child_setup(file_size_limit: int | None) -> Callable[[], None]:
    """Ctrl-C reaches the child as in a terminal, even when the tests run in a background job of a shell
    (which starts with SIGINT ignored, and Python keeps an ignored SIGINT ignored); with a limit, RLIMIT_FSIZE."""
    def apply() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if file_size_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return apply


def run_stma(args: list[str], cwd: Path, file_size_limit: int | None = None) -> Run:
    """Run `python -m stma_cli ARGS` to its end."""
    return StmaProcess(args, cwd, file_size_limit).wait()


def run_stma_together(runs: dict[str, tuple[list[str], int | None]], cwd: Path) -> dict[str, Run]:
    """Start every `name: (args, file_size_limit)` at once, then wait for all; {name: Run}."""
    started = {name: StmaProcess(args, cwd, limit) for name, (args, limit) in runs.items()}
    return {name: process.wait() for name, process in started.items()}


def run_some_at_once(processes: dict[str, Callable[[], StmaProcess]], at_once: int = 4) -> dict[str, Run]:
    """Run the processes `at_once` at a time (most of a short run is start-up); {name: Run}."""
    runs: dict[str, Run] = {}
    names = list(processes)
    for start in range(0, len(names), at_once):
        started = {name: processes[name]() for name in names[start : start + at_once]}
        runs.update({name: process.wait() for name, process in started.items()})
    return runs


def assert_one_error_line(run: Run, exit_code: int, names: str, says: str) -> None:
    """The exit code, and exactly one `stma: error: NAMES: ...` line that says `says`; nothing unexpected."""
    assert run.returncode == exit_code, run.stderr
    assert len(run.error_lines) == 1, run.stderr
    assert run.error_lines[0].startswith(f"stma: error: {names}: "), run.stderr
    assert says in run.error_lines[0], run.stderr
    assert_clean_stderr(run)


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` (hidden ones too) with its bytes (None for folders): a before/after picture."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
            for p in sorted(folder.rglob("*")) if not p.is_symlink()}


def changed_outside(before: dict[str, bytes | None], after: dict[str, bytes | None], *inside: str) -> list[str]:
    """Paths added, removed or changed between two `tree`s, except under the folders `inside`."""
    paths = set(before) | set(after)
    changed = [p for p in paths if before.get(p, b"-") != after.get(p, b"-")]
    return sorted(p for p in changed if not any(p == folder or p.startswith(f"{folder}/") for folder in inside))


def assert_clean_stderr(run: Run) -> None:
    """Nothing but one-line `stma:` messages and per-video success lines: no traceback, no warning."""
    assert "Traceback" not in run.stderr, run.stderr
    for line in run.stderr.splitlines():
        assert line.startswith("stma: ") or (" frames, " in line and " fps -> " in line), f"unexpected line: {line!r}"


def temporary_files(folder: Path) -> list[Path]:
    """Files left under a temporary name (see stma_cli.io.atomic)."""
    return [p for p in folder.rglob(".*") if ".tmp-" in p.name]


def finished_frames(folder: Path) -> int:
    """Frame count in a finished output folder's manifest."""
    return json.loads((folder / "manifest.json").read_text())["frames"]
