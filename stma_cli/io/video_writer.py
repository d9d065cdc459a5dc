"""Writing videos: RGB frames encoded through PyAV (FFmpeg) into a file that appears only when complete."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from stma_cli.errors import StmaError
from stma_cli.io.atomic import PendingFile
from stma_cli.io.video import ffmpeg_reason


class VideoWriter:
    """Encode RGB frames into a video file, written under a temporary name and renamed on `close`.

    Frame i gets timestamp i / fps, so the frame count and frame rate are exact. Pixel formats with
    subsampled chroma (yuv420p) need even sizes: odd sizes are padded by one row/column repeating the
    bottom/right edge (`encoded_width`, `encoded_height` give the size in the file).
    """

    def __init__(
        self,
        path: str | Path,
        fps: Fraction,
        width: int,
        height: int,
        codec: str = "libx264",
        pix_fmt: str = "yuv420p",
        crf: int | None = 20,
        options: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps)
        self.width, self.height = width, height
        chroma = av.video.format.VideoFormat(pix_fmt)
        self.encoded_width = width + (width % 2 if chroma.chroma_width(2) < 2 else 0)
        self.encoded_height = height + (height % 2 if chroma.chroma_height(2) < 2 else 0)
        self.frames_written = 0
        codec_options = dict(options or {})
        if crf is not None:
            codec_options.setdefault("crf", str(crf))
        if codec == "libx264":
            codec_options.setdefault("preset", "veryfast")
        container_options = {"movflags": "+faststart"} if self.path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
        self._pending = PendingFile(self.path)
        try:
            self._container = av.open(str(self._pending.tmp), "w", options=container_options)
        except (av.FFmpegError, OSError) as exc:
            self._pending.discard()
            raise StmaError(f"{self.path}: cannot write the video ({ffmpeg_reason(exc)})") from None
        self._open = True
        try:
            self._stream = self._container.add_stream(codec, rate=self.fps, options=codec_options)
            self._stream.width = self.encoded_width
            self._stream.height = self.encoded_height
            self._stream.pix_fmt = pix_fmt
            self._stream.codec_context.time_base = 1 / self.fps
        except BaseException:
            self.abort()
            raise

    def write(self, rgb: np.ndarray) -> None:
        """Encode one (height, width, 3) uint8 RGB frame."""
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"expected a ({self.height}, {self.width}, 3) uint8 frame, got {rgb.dtype} {rgb.shape}")
        pad_h, pad_w = self.encoded_height - self.height, self.encoded_width - self.width
        if pad_h or pad_w:
            rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames_written
        frame.time_base = 1 / self.fps
        try:
            self._container.mux(self._stream.encode(frame))
        except av.FFmpegError as exc:
            raise StmaError(f"{self.path}: cannot write the video ({ffmpeg_reason(exc)})") from None
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder, finish the file and rename it onto its final name."""
        if not self._open:
            return
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
        except BaseException as exc:
            self.abort()
            if isinstance(exc, av.FFmpegError):
                raise StmaError(f"{self.path}: cannot write the video ({ffmpeg_reason(exc)})") from None
            raise
        self._open = False
        self._pending.commit()

    def abort(self) -> None:
        """Stop writing and remove the temporary file; nothing appears under the final name."""
        if not self._open:
            return
        self._open = False
        try:
            self._container.close()
        except av.FFmpegError:
            pass
        finally:
            self._pending.discard()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
