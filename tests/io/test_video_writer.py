"""VideoWriter: exact frame count and rate, odd sizes, atomic files."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from io_helpers import psnr, synthetic_frames

from stma_cli.io.video import open_video
from stma_cli.io.video_writer import VideoWriter


@pytest.mark.parametrize("fps", [Fraction(25), Fraction(30000, 1001), Fraction(12)])
def test_writer_keeps_frame_count_and_rate(tmp_path: Path, fps: Fraction) -> None:
    frames = synthetic_frames(11, 64, 48)
    path = tmp_path / "out.mp4"
    with VideoWriter(path, fps, 64, 48) as writer:
        for frame in frames:
            writer.write(frame)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == fps
    with open_video(path) as video:
        decoded = list(video)
    assert len(decoded) == 11
    assert all(psnr(a, b) > 30 for a, b in zip(decoded, frames))


def test_writer_pads_odd_sizes(tmp_path: Path) -> None:
    frames = synthetic_frames(5, 33, 17)
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, Fraction(25), 33, 17) as writer:
        assert (writer.encoded_width, writer.encoded_height) == (34, 18)
        for frame in frames:
            writer.write(frame)
    with open_video(path) as video:
        assert (video.width, video.height) == (34, 18)
        decoded = list(video)
    assert len(decoded) == 5
    assert all(psnr(a[:17, :33], b) > 30 for a, b in zip(decoded, frames))


def test_writer_lossless_codec_keeps_odd_size(tmp_path: Path) -> None:
    frames = synthetic_frames(3, 33, 17)
    path = tmp_path / "odd.mkv"
    with VideoWriter(path, Fraction(25), 33, 17, codec="ffv1", pix_fmt="bgr0", crf=None) as writer:
        for frame in frames:
            writer.write(frame)
    with open_video(path) as video:
        decoded = list(video)
    for got, want in zip(decoded, frames):
        np.testing.assert_array_equal(got, want)


def test_writer_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "overlay.mp4"
    writer = VideoWriter(path, Fraction(25), 32, 32)
    for frame in synthetic_frames(40, 32, 32):
        writer.write(frame)
    (pending,) = tmp_path.iterdir()
    assert pending.name.startswith(".overlay.tmp-") and pending.name.endswith(".mp4")
    assert not path.exists()
    writer.close()
    assert path.exists() and [p.name for p in tmp_path.iterdir()] == ["overlay.mp4"]


def test_interrupted_writer_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "overlay.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(path, Fraction(25), 32, 32) as writer:
            writer.write(synthetic_frames(1, 32, 32)[0])
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_wrong_frame_shape(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "a.mp4", Fraction(25), 32, 32) as writer:
        with pytest.raises(ValueError, match="expected a"):
            writer.write(np.zeros((16, 32, 3), dtype=np.uint8))
        writer.write(np.zeros((32, 32, 3), dtype=np.uint8))
