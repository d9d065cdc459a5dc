"""Reading videos: video files through PyAV (FFmpeg), frame folders, and streams: standard input, a FIFO,
a process substitution `<(...)`.

Frames are decoded one at a time in a background thread and handed over through a bounded queue, so a
video is never held in memory as a whole. Writing videos is `stma_cli.io.video_writer`.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import sys
import tempfile
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from stma_cli.errors import StmaError
from stma_cli.io.background import BackgroundWorker

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # what a frame folder holds
DEFAULT_FOLDER_FPS = Fraction(24)
STDIN_NAME = "<stdin>"
_STREAM_CHUNK = 1 << 20  # the most bytes taken from a stream in one read


class TruncatedVideoWarning(UserWarning):
    """A video ended silently before the frame count its container announced."""


def natural_key(name: str) -> list[str | int]:
    """Sort key that orders digit runs by value: frame2 < frame10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def ffmpeg_reason(exc: BaseException) -> str:
    """The human part of an FFmpeg error, without errno and file name."""
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return exc.strerror
    return str(exc)


def read_frame(path: Path) -> np.ndarray:
    """One image file as an (H, W, 3) uint8 RGB frame; StmaError naming the file if it cannot be read."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError:
        raise StmaError(f"{path}: image too large (more than {2 * Image.MAX_IMAGE_PIXELS} pixels)") from None
    except OSError as exc:
        raise StmaError(f"{path}: cannot read the frame ({exc})") from None


def frame_files(folder: Path) -> list[Path]:
    """The image frames of a frame folder (FRAME_SUFFIXES), in natural order."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()),
                  key=lambda p: natural_key(p.name))


class VideoSource:
    """Frames of a video file, a frame folder or a stream (standard input, a FIFO).

    Attributes: `path` (as given; "-" for standard input), `width`, `height` (after rotation), `fps`,
    `time_base`, `num_frames` (None until known: the container's count if it gives one, the decoded count
    after a full iteration), `frame_names` (file stems for frame folders, else None).

    Iterating yields (height, width, 3) uint8 RGB frames from the first frame on; `read(start, stop)`
    yields (index, frame) for a range of frames, and a video file gets there by seeking, not by decoding
    the frames before it. Each iteration decodes afresh in a background thread. Corrupt data in the middle of a video stops the iteration: the frames
    before it are yielded, then StmaError names the file and the frame where decoding failed. A video
    that ends silently before the frame count its container announced (typically a truncated AVI or an
    MP4 edit list) is not an error: a TruncatedVideoWarning is issued and `num_frames` becomes the
    decoded count.
    """

    content_sha256: str | None = None  # a stream only: SHA-256 of the bytes read

    def __init__(
        self,
        path: Path,
        name: str,
        width: int,
        height: int,
        fps: Fraction,
        time_base: Fraction,
        num_frames: int | None,
        frame_names: list[str] | None,
        queue_size: int,
    ) -> None:
        self.path = path
        self.name = name
        self.width = width
        self.height = height
        self.fps = fps
        self.time_base = time_base
        self.num_frames = num_frames
        self.frame_names = frame_names
        self._queue_size = queue_size
        self._prefetchers: list[BackgroundWorker] = []

    def _frames(self, start: int, stop: int | None) -> Iterator[np.ndarray]:
        """Decode frames `start` to `stop` - 1 one by one (runs in the background thread)."""
        raise NotImplementedError

    def _count(self) -> int:
        """Count the frames by decoding, without converting them."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, frame in self.read():
            yield frame

    def read(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(index, frame) for the frames from `start` to `stop` - 1 (to the last frame if `stop` is None)."""
        if start < 0 or (stop is not None and stop < start):
            raise ValueError(f"frames {start}:{stop} are not a range of frames")
        prefetcher = BackgroundWorker.prefetch(self._frames(start, stop), self._queue_size, name="stma-decode")
        self._prefetchers.append(prefetcher)
        index = start
        try:
            for frame in prefetcher:
                yield index, frame
                index += 1
        finally:
            prefetcher.stop()
            self._prefetchers.remove(prefetcher)
        if not prefetcher.finished or (stop is not None and index == stop) or (index == start and start > 0):
            return  # the end of the video was not reached (or lies before `start`): its length is not known
        if self.num_frames is not None and index < self.num_frames:
            warnings.warn(
                f"{self.name}: the container announces {self.num_frames} frames but only {index} could be decoded",
                TruncatedVideoWarning,
                stacklevel=2,
            )
        self.num_frames = index

    def close(self) -> None:
        """Stop any background decoding and release temporary files."""
        for prefetcher in list(self._prefetchers):
            prefetcher.stop()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _FileSource(VideoSource):
    """A video file read through PyAV: the first video stream, turned upright by its rotation metadata.

    Frames whose size changes in mid-stream are scaled to the size of the first frame.
    """

    def __init__(self, file: Path, path: Path, name: str, queue_size: int, remove_on_close: bool = False) -> None:
        self._file = file
        self._remove_on_close = remove_on_close
        first, fps, time_base, header_frames = _probe(str(file), name)
        self._coded_size = (first.width, first.height)
        self._first_pts = first.pts
        self._index_by_pts: dict[int, int] | None = None  # frame index by timestamp, once read (see _seek)
        self._turns = round(first.rotation / 90) % 4
        width, height = (first.height, first.width) if self._turns % 2 else (first.width, first.height)
        super().__init__(path, name, width, height, fps, time_base, header_frames, None, queue_size)

    def _decoded(self, start: int = 0, stop: int | None = None, seek: bool = True) -> Iterator[av.VideoFrame]:
        """Frames `start` to `stop` - 1: from `start` > 0 after a seek to the keyframe before it, when the
        stream's timestamps place the frames (see `_seek`), else by decoding from frame 0."""
        done = start
        try:
            with av.open(str(self._file)) as container:
                stream = container.streams.video[0]
                by_pts = self._seek(container, stream, start) if seek and start > 0 else {}
                index = None if by_pts else 0
                for frame in container.decode(stream):
                    if index is None:  # the first frame after the seek: its timestamp says where the seek landed
                        index = by_pts.get(frame.pts)
                        if index is None or index > start:
                            break
                    index = by_pts.get(frame.pts, index)
                    if stop is not None and index >= stop:
                        return
                    if index >= start:
                        yield frame
                        done = index + 1
                    index += 1
                else:
                    return
        except av.FFmpegError as exc:
            raise StmaError(
                f"{self.name}: corrupt or truncated video data after frame {done} ({ffmpeg_reason(exc)})"
            ) from None
        yield from self._decoded(start, stop, seek=False)  # the seek landed after `start`: decode from frame 0

    def _seek(self, container: av.container.InputContainer, stream: av.VideoStream, start: int) -> dict[int, int]:
        """Seek to the last keyframe at or before frame `start`; return the frame indices by timestamp.

        The indices come from the presentation timestamps of the stream's packets, read once without
        decoding. Returns {} (and does not seek) when they cannot place frame `start`: packets without
        timestamps, repeated timestamps, or fewer packets than `start`.
        """
        if self._index_by_pts is None:
            self._index_by_pts = _index_by_pts(self._file, self._first_pts)
        target = next((pts for pts, index in self._index_by_pts.items() if index == start), None)
        if target is None:
            return {}
        container.seek(target, stream=stream, backward=True, any_frame=False)
        return self._index_by_pts

    def _frames(self, start: int, stop: int | None) -> Iterator[np.ndarray]:
        width, height = self._coded_size
        for frame in self._decoded(start, stop):
            rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
            yield np.ascontiguousarray(np.rot90(rgb, self._turns)) if self._turns else rgb

    def _count(self) -> int:
        return sum(1 for _ in self._decoded())

    def close(self) -> None:
        super().close()
        if self._remove_on_close:
            self._file.unlink(missing_ok=True)


def _probe(file: str | _Spool, name: str) -> tuple[av.VideoFrame, Fraction, Fraction, int | None]:
    """The first frame of the first video stream of `file`, the stream's frame rate and time base, and the
    frame count its container announces (None if it does not); StmaError if there is none to decode."""
    try:
        container = av.open(file)
    except av.FFmpegError as exc:
        raise StmaError(f"{name}: not a readable video ({ffmpeg_reason(exc)})") from None
    with container:
        if not container.streams.video:
            raise StmaError(f"{name}: no video stream in this file")
        stream = container.streams.video[0]
        frames = container.decode(stream)
        try:
            first = next(frames, None)
        except av.FFmpegError as exc:
            raise StmaError(f"{name}: cannot decode the first frame ({ffmpeg_reason(exc)})") from None
        finally:
            frames.close()
        if first is None:
            raise StmaError(f"{name}: no video frames (empty or truncated file)")
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
        return first, Fraction(fps), Fraction(stream.time_base or 1 / fps), stream.frames or None


class _FolderSource(VideoSource):
    """A folder of image frames (FRAME_SUFFIXES) in natural order; every frame must have the same size."""

    def __init__(self, folder: Path, fps: Fraction, queue_size: int) -> None:
        files = frame_files(folder)
        if not files:
            raise StmaError(f"{folder}: no frames in this folder (images named {', '.join(FRAME_SUFFIXES)})")
        stems = [p.stem for p in files]
        if len(set(stems)) != len(stems):
            twice = next(stem for stem in stems if stems.count(stem) > 1)
            raise StmaError(f"{folder}: two frames are named {twice} (with different extensions)")
        first_size = self._size(files[0])
        for file in files[1:]:
            size = self._size(file)
            if size != first_size:
                raise StmaError(
                    f"{folder}: frames have mixed sizes ({files[0].name} is {first_size[0]}x{first_size[1]}, "
                    f"{file.name} is {size[0]}x{size[1]})"
                )
        self._files = files
        fps = Fraction(fps)
        super().__init__(folder, str(folder), *first_size, fps, 1 / fps, len(files), stems, queue_size)

    @staticmethod
    def _size(file: Path) -> tuple[int, int]:
        try:
            with Image.open(file) as image:
                return image.size
        except UnidentifiedImageError:
            raise StmaError(f"{file}: not an image") from None
        except Image.DecompressionBombError:
            raise StmaError(f"{file}: image too large (more than {2 * Image.MAX_IMAGE_PIXELS} pixels)") from None
        except OSError as exc:
            raise StmaError(f"{file}: cannot read the frame ({exc})") from None

    def _frames(self, start: int, stop: int | None) -> Iterator[np.ndarray]:
        for file in self._files[start:stop]:
            rgb = read_frame(file)
            if rgb.shape[:2] != (self.height, self.width):
                raise StmaError(f"{file}: frame is {rgb.shape[1]}x{rgb.shape[0]}, expected {self.width}x{self.height}")
            yield rgb

    def _count(self) -> int:
        return len(self._files)


def _index_by_pts(file: Path, first_pts: int | None) -> dict[int, int]:
    """Frame index by presentation timestamp, from the packets of the first video stream ({} if they do
    not all carry distinct timestamps). Packets before the first decoded frame (an edit list's lead-in)
    are left out, so that indices match a decode from the start."""
    with av.open(str(file)) as container:
        stream = container.streams.video[0]
        stamps = [packet.pts for packet in container.demux(stream) if packet.size]
    if first_pts is None or None in stamps or len(set(stamps)) != len(stamps):
        return {}
    return {pts: index for index, pts in enumerate(sorted(pts for pts in stamps if pts >= first_pts))}


class _Spool:
    """A stream copied to a temporary file (`path`) as it is read, and read back like a file by FFmpeg.

    PyAV calls `read`, `seek` and `tell` (there is no `close`: closing the container leaves the copy). The
    stream is read only as far as FFmpeg asks, so probing it needs only its first bytes; `drain` copies
    the rest, and `sha256` is the hash of every byte read; `discard` removes the copy.

    The copy's name is chosen here and the file made by `started`, inside the caller's cleanup: a signal
    (SIGTERM, Ctrl-C) that ends the run between the two leaves no file behind.
    """

    def __init__(self, stream: io.RawIOBase) -> None:
        self.path = Path(tempfile.gettempdir()) / f"stma-stream-{secrets.token_hex(8)}.video"
        self._copy: io.BufferedWriter | None = None  # appended to; read back with os.pread (leaves its position)
        self._stream = stream
        self._digest = hashlib.sha256()
        self._copied = 0
        self._position = 0
        self._ended = False

    def started(self) -> bool:
        """Make the copy, and wait for the first bytes of the stream; False if it ends before any."""
        self._copy = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), "wb")
        while not self._copied and not self._ended:
            self._pull()
        return self._copied > 0

    def drain(self) -> None:
        """Copy the rest of the stream, and close the copy."""
        while not self._ended:
            self._pull()
        self._copy.close()

    def sha256(self) -> str:
        return self._digest.hexdigest()

    def discard(self) -> None:
        if self._copy is not None:
            self._copy.close()
        self.path.unlink(missing_ok=True)

    def read(self, size: int) -> bytes:
        """Up to `size` bytes from the position; b"" at the end of the stream."""
        while self._position >= self._copied and not self._ended:
            self._pull()
        data = os.pread(self._copy.fileno(), max(0, min(size, self._copied - self._position)), self._position)
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move to `offset` from the start or (SEEK_CUR) from the position; SEEK_END gives -1, as the end of a
        stream is not known before it comes (FFmpeg reads on instead)."""
        if whence == os.SEEK_END:
            return -1
        self._position = offset + (self._position if whence == os.SEEK_CUR else 0)
        return self._position

    def tell(self) -> int:
        return self._position

    def _pull(self) -> None:
        chunk = self._stream.read(_STREAM_CHUNK)  # one read: what has arrived, up to the chunk size
        if not chunk:
            self._ended = True
            return
        self._digest.update(chunk)
        self._copy.write(chunk)
        self._copy.flush()
        self._copied += len(chunk)


def _open_stream(stream: io.RawIOBase, path: Path, name: str, queue_size: int) -> _FileSource:
    """A video read once from a stream: probed from its first bytes as they arrive, so that a wrong input
    fails at once, then copied in full to a temporary file (removed on `close`), because MP4 and MOV need
    to seek and a video is read more than once.

    FFmpeg probes in a background thread: a signal cannot end a read inside FFmpeg, but it ends the wait
    for the thread, and the stop of a thread stuck in a read does not wait for it (see BackgroundWorker).
    """
    spool = _Spool(stream)
    try:
        if not spool.started():
            raise StmaError(f"{name}: empty input")
        # `map` is lazy: `_probe` runs in the worker's thread
        probe = BackgroundWorker.prefetch(map(_probe, [spool], [name]), depth=1, name="stma-probe")
        try:
            for _ in probe:
                pass
        finally:
            probe.stop()
        spool.drain()
        video = _FileSource(spool.path, path, name, queue_size, remove_on_close=True)
    except BaseException:
        spool.discard()
        raise
    video.content_sha256 = spool.sha256()
    return video


def open_video(source: str | Path, queue_size: int = 8, *, folder_fps: Fraction = DEFAULT_FOLDER_FPS) -> VideoSource:
    """Open a video file, a frame folder or a stream, and probe it.

    The first frame is decoded at once, so a bad file raises StmaError here, before any output is written.
    A stream is "-" (standard input) or a path that is neither a regular file nor a folder: a FIFO, a
    process substitution `<(...)` (/dev/fd/N), a device. It can be read only once, so it is copied to a
    temporary file as it is read (see `_open_stream`); the hash of its bytes is `content_sha256`.
    Frame folders have no frame rate of their own: `folder_fps` is used.
    """
    if str(source) == "-":
        if sys.stdin.isatty():
            raise StmaError(f"{STDIN_NAME}: standard input is a terminal; pipe a video into it")
        with io.FileIO(sys.stdin.fileno(), "rb", closefd=False) as stdin:  # unbuffered: each read takes what has come
            return _open_stream(stdin, Path("-"), STDIN_NAME, queue_size)
    path = Path(source)
    if path.is_dir():
        return _FolderSource(path, folder_fps, queue_size)
    if not path.exists():
        raise StmaError(f"{path}: no such file or folder")
    if not path.is_file():
        try:
            stream = io.FileIO(path, "rb")  # a FIFO: waits for a writer (a signal ends the wait)
        except OSError as exc:
            raise StmaError(f"{path}: cannot read the video ({exc.strerror or exc})") from None
        with stream:
            return _open_stream(stream, path, str(path), queue_size)
    if path.stat().st_size == 0:
        raise StmaError(f"{path}: empty file")
    return _FileSource(path, path, str(path), queue_size)


def count_frames(source: str | Path | VideoSource) -> int:
    """Number of frames: the container's count when it gives one, else counted by decoding."""
    if isinstance(source, VideoSource):
        if source.num_frames is None:
            source.num_frames = source._count()
        return source.num_frames
    with open_video(source) as video:
        return count_frames(video)
