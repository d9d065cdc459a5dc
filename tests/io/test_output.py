from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
from io_helpers import synthetic_frames

from stma_cli.errors import StmaError
from stma_cli.io.masks import read_mask
from stma_cli.io.output import (
    NUMBERED,
    FolderState,
    VideoOutput,
    clear_for_run,
    inspect_folder,
    is_finished,
    is_output_mask,
    read_manifest,
)

ATTRS = {"model_id": "someone/stma-small", "model_revision": "abc123"}


def moving_labels(count: int, width: int, height: int) -> list[np.ndarray]:
    out = []
    for i in range(count):
        labels = np.zeros((height, width), dtype=np.uint8)
        labels[4 : 4 + height // 3, i : i + width // 4] = 1
        labels[height // 2 :, width // 2 :] = 5
        out.append(labels)
    return out


def make_output(folder: Path, frame_names: list[str] | None, **kwargs: object) -> VideoOutput:
    options: dict = {
        "fps": Fraction(24), "size": (33, 17), "palette": None, "object_ids": [1, 5],
        "overlay": True, "logits": True, "logits_shape": (5, 9), "attrs": ATTRS,
    }
    options.update(kwargs)
    return VideoOutput(folder, frame_names=frame_names, **options)


PRESENCE = np.array([[1.0, 1.0], [0.9, 0.8], [0.7, 0.0]], np.float32)  # object 5 is lost on frame 2


def test_full_output_folder(tmp_path: Path) -> None:
    folder = tmp_path / "bear"
    names = ["00000", "00005", "00010"]
    frames, labels = synthetic_frames(3, 33, 17), moving_labels(3, 33, 17)
    with make_output(folder, names) as out:
        for i in range(3):
            out.write(i, frames[i], labels[i], PRESENCE[i], np.zeros((3, 5, 9), dtype=np.float32) + i)
        record = out.finish({"model": "someone/stma-small@abc123", "seconds": 1.5})

    assert sorted(p.name for p in folder.iterdir()) == ["logits.h5", "manifest.json", "masks", "overlay.mp4"]
    assert sorted(p.name for p in (folder / "masks").iterdir()) == ["00000.png", "00005.png", "00010.png"]
    mask = read_mask(folder / "masks" / "00005.png", size=(33, 17))
    np.testing.assert_array_equal(mask.labels, labels[1])
    assert mask.object_ids == [1, 5]

    with av.open(str(folder / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 24
        assert stream.codec_context.name == "h264"
        assert len(list(container.decode(stream))) == 3

    with h5py.File(folder / "logits.h5", "r") as file:
        dataset = file["logits"]
        assert dataset.shape == (3, 3, 5, 9)
        assert list(dataset.attrs["object_ids"]) == [1, 5]
        assert tuple(dataset.attrs["stride"]) == pytest.approx((17 / 5, 33 / 9))
        assert dataset.attrs["fps"] == 24
        assert dataset.attrs["model_id"] == "someone/stma-small"
        assert dataset.attrs["stma_version"]
        assert float(dataset[2, 0, 0, 0]) == 2
        np.testing.assert_array_equal(file["presence"][()], PRESENCE)

    manifest = read_manifest(folder)
    assert manifest == record == json.loads((folder / "manifest.json").read_text())
    assert manifest["frames"] == 3 and manifest["objects"] == [1, 5]
    assert manifest["tracks"]["5"]["mean_presence"] == pytest.approx(0.6)
    assert manifest["tracks"]["5"]["presence_falls"] == [2]  # the frames' stems do not matter: frame numbers
    assert manifest["seconds"] == 1.5 and manifest["model"] == "someone/stma-small@abc123"
    assert is_finished(folder)


def test_optional_outputs_and_default_names(tmp_path: Path) -> None:
    folder = tmp_path / "clip"
    with make_output(folder, None, overlay=False, logits=False, logits_shape=None) as out:
        for i, (frame, labels) in enumerate(zip(synthetic_frames(2, 33, 17), moving_labels(2, 33, 17))):
            out.write(i, frame, labels, np.ones(2, np.float32))
        out.finish({})
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "masks"]
    assert sorted(p.name for p in (folder / "masks").iterdir()) == ["00000.png", "00001.png"]
    assert read_manifest(folder)["files"] == ["masks"]


def test_interrupted_output_is_not_finished_and_leaves_no_partial_file(tmp_path: Path) -> None:
    folder = tmp_path / "bear"
    with pytest.raises(KeyboardInterrupt):
        with make_output(folder, None) as out:
            out.write(0, synthetic_frames(1, 33, 17)[0], moving_labels(1, 33, 17)[0], np.ones(2), np.zeros((3, 5, 9)))
            raise KeyboardInterrupt
    assert sorted(p.name for p in folder.iterdir()) == ["masks"]
    assert [p.name for p in (folder / "masks").iterdir()] == ["00000.png"]
    assert not is_finished(folder)


def test_rerun_removes_the_old_manifest_first(tmp_path: Path) -> None:
    folder = tmp_path / "bear"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"frames": 3, "stma_version": "0.1.0"}')
    assert is_finished(folder)
    out = make_output(folder, None)
    assert not is_finished(folder)
    out.abort()


def test_frames_must_come_in_order_and_all_named_frames_be_written(tmp_path: Path) -> None:
    frame, labels = synthetic_frames(1, 33, 17)[0], moving_labels(1, 33, 17)[0]
    with make_output(tmp_path / "a", ["x", "y"], logits=False) as out:
        with pytest.raises(ValueError, match="in order"):
            out.write(1, frame, labels, np.ones(2))
        out.write(0, frame, labels, np.ones(2))
        with pytest.raises(ValueError, match="wrote 1 frames of 2"):
            out.finish({})


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(StmaError, match="not finished"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(StmaError, match="the manifest is not valid JSON"):
        read_manifest(tmp_path)
    assert not is_finished(tmp_path)
    for foreign in ("[1, 2]", '{"frames": 3}'):
        (tmp_path / "manifest.json").write_text(foreign)
        with pytest.raises(StmaError, match="not a manifest written by stma"):
            read_manifest(tmp_path)


def test_inspect_folder(tmp_path: Path) -> None:
    folder = tmp_path / "bear"
    assert inspect_folder(folder, NUMBERED) == FolderState()
    (folder / "masks").mkdir(parents=True)
    (folder / "masks" / "mine.png").touch()  # not a name stma writes
    (folder / "notes.txt").touch()
    assert inspect_folder(folder, NUMBERED) == FolderState()
    for index in range(4):
        (folder / "masks" / f"{index:05d}.png").touch()
    (folder / "overlay.mp4").touch()
    (folder / "manifest.json").write_text("[]")
    assert inspect_folder(folder, NUMBERED).foreign == [
        "manifest.json", "overlay.mp4", "masks/00000.png", "masks/00001.png", "2 more masks"]
    assert inspect_folder(folder, ["a", "mine"]).foreign == ["manifest.json", "overlay.mp4", "masks/mine.png"]
    (folder / ".stma.lock").write_text('{"pid": 1, "mask_names": "numbered"}')  # an unfinished run of stma's
    state = inspect_folder(folder, NUMBERED)
    assert state.unfinished == {"pid": 1, "mask_names": "numbered"} and state.foreign == ["manifest.json"]
    (folder / "manifest.json").write_text('{"stma_version": "0.1.0", "frames": 4}')
    assert inspect_folder(folder, NUMBERED).manifest == {"stma_version": "0.1.0", "frames": 4}


def test_clear_for_run_removes_only_what_stma_wrote(tmp_path: Path) -> None:
    folder = tmp_path / "bear"
    (folder / "masks").mkdir(parents=True)
    keep = ["notes.txt", "masks/mine.png", "masks/0001.png", ".hidden"]
    gone = ["manifest.json", "overlay.mp4", "logits.h5", "masks/00000.png", "masks/00119.png", "masks/a.png",
            ".overlay.tmp-123-0123abcd.mp4", "masks/.00003.tmp-9-89abcdef.png"]
    for name in keep + gone:
        (folder / name).touch()
    clear_for_run(folder, [NUMBERED, ["a", "b"]])
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(keep)
    assert is_output_mask("00012.png", NUMBERED) and not is_output_mask("12.png", NUMBERED)
    assert is_output_mask("b.png", ["a", "b"]) and not is_output_mask("b.jpg", ["a", "b"])


def test_clear_for_run_refuses_a_folder_at_a_file_name(tmp_path: Path) -> None:
    (tmp_path / "overlay.mp4").mkdir()
    with pytest.raises(StmaError, match=r"overlay\.mp4: is a folder, where stma writes a file"):
        clear_for_run(tmp_path, [NUMBERED])


def test_inspect_and_clear_know_the_coco_file_and_the_object_folders(tmp_path: Path) -> None:
    folder = tmp_path / "bear"
    for name in ("masks/3/00000.png", "masks/3/mine.png", "masks/4/00001.png", "masks/x/00000.png", "masks.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()
    assert inspect_folder(folder, NUMBERED).foreign == ["masks.json", "masks/3/00000.png", "masks/4/00001.png"]
    clear_for_run(folder, [NUMBERED])
    left = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
    assert left == ["masks", "masks/3", "masks/3/mine.png", "masks/x", "masks/x/00000.png"]  # masks/4 emptied


def test_an_object_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = tmp_path / "bear"
    (folder / "masks").mkdir(parents=True)
    (folder / "masks" / "5").symlink_to(elsewhere)
    with pytest.raises(StmaError, match=r"masks/5: the object's mask folder is a symbolic link"):
        make_output(folder, None, mask_formats=("objects",))
    with pytest.raises(StmaError, match="symbolic link"):
        clear_for_run(folder, [NUMBERED])
    assert list(elsewhere.iterdir()) == []


def test_tracks_count_only_the_frames_where_an_object_is_followed(tmp_path: Path) -> None:
    """Object 5's mask is given on frame 1: before it, its presence is NaN (not followed, 0 in logits.h5);
    its appearance on frame 1 is no area jump, and its mean presence is over frames 1 and 2 only."""
    labels = moving_labels(3, 33, 17)
    labels[0][labels[0] == 5] = 0
    presence = np.array([[1.0, np.nan], [0.9, 1.0], [0.7, 0.6]], np.float32)
    with make_output(tmp_path, None) as out:
        for i in range(3):
            out.write(i, synthetic_frames(3, 33, 17)[i], labels[i], presence[i], np.zeros((3, 5, 9), np.float32),
                      given=[1, 5] if i == 1 else [1] if i == 0 else [])
        record = out.finish({})
    track = record["tracks"]["5"]
    assert track["area_jumps"] == [] and track["mean_presence"] == pytest.approx(0.8)
    assert track["frames"] == [[1, 2]]
    with h5py.File(tmp_path / "logits.h5") as handle:
        np.testing.assert_allclose(handle["presence"][:, 1], [0.0, 1.0, 0.6])
