"""Shared helpers for the I/O tests: synthetic frames and real videos written with PyAV."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest


def synthetic_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """Smooth gradients with a moving bright square: compressible, so lossy codecs keep a high PSNR."""
    ys, xs = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        frame = np.empty((height, width, 3), dtype=np.uint8)
        frame[..., 0] = 48 + xs * 128 // max(width - 1, 1) + 4 * i
        frame[..., 1] = 48 + ys * 128 // max(height - 1, 1)
        frame[..., 2] = 112
        top, left = (2 * i) % max(height // 2, 1), (3 * i) % max(width // 2, 1)
        frame[top : top + height // 3, left : left + width // 3] = (220, 210, 170)
        frames.append(frame)
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 images."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def write_video(
    path: Path,
    codec: str,
    pix_fmt: str,
    *,
    count: int = 12,
    width: int = 64,
    height: int = 48,
    fps: Fraction = Fraction(25),
    rotation: int | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> list[np.ndarray]:
    """Write a real video with PyAV and return the RGB frames that went in."""
    frames = synthetic_frames(count, width, height)
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if rotation is not None:
            if not hasattr(stream, "set_display_rotation"):
                pytest.skip(f"PyAV {av.__version__} cannot write rotation metadata")
            stream.set_display_rotation(rotation)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return frames
