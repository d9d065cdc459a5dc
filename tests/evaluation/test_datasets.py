"""DAVIS-2017 and YouTube-VOS layout readers."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval_layouts import jpg, make_youtube, png
from stma_cli.errors import StmaError
from stma_cli.evaluation.datasets import DavisDataset, YouTubeVOSDataset
from stma_cli.io.masks import read_label_map


def make_davis(root: Path, sequences=("bear", "cows"), frames=3, split="val") -> Path:
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / f"{split}.txt").write_text("\n".join(sequences) + "\n\n")
    for name in sequences:
        first = np.zeros((8, 12), dtype=np.uint8)
        first[1:3, 1:3] = 1
        first[4:6, 4:6] = 2
        first[0, :] = 255
        for t in range(frames):
            jpg(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg")
            png(first, root / "Annotations" / "480p" / name / f"{t:05d}.png")
    return root


def test_davis_lists_split_and_reads_sequence(tmp_path):
    dataset = DavisDataset(make_davis(tmp_path))
    assert dataset.sequence_names == ["bear", "cows"]
    seq = dataset.sequence("bear")
    assert seq.frames == ("00000", "00001", "00002")
    assert seq.frame_paths[0] == tmp_path / "JPEGImages/480p/bear/00000.jpg"
    assert seq.given_masks == {"00000": tmp_path / "Annotations/480p/bear/00000.png"}
    # Void (255) is not an object: the objects are 1 .. max of the first annotation.
    assert seq.object_ids == (1, 2)
    assert seq.first_appearance == {1: "00000", 2: "00000"}
    assert seq.output_frames == seq.frames
    assert dataset.prediction_path(tmp_path / "out", "bear", "00001") == tmp_path / "out/bear/00001.png"


def test_davis_sequence_selection(tmp_path):
    dataset = DavisDataset(make_davis(tmp_path), sequences=["cows"])
    assert dataset.sequence_names == ["cows"]
    with pytest.raises(StmaError, match=r"val\.txt: has no sequence 'deer'"):
        DavisDataset(tmp_path, sequences=["deer"])


@pytest.mark.parametrize(
    "remove, message",
    [
        ("ImageSets/2017/val.txt", "sequence list for split 'val' not found"),
        ("Annotations/480p", "annotation folder not found"),
        ("JPEGImages/480p", "image folder not found"),
    ],
)
def test_davis_missing_parts_are_errors(tmp_path, remove, message):
    make_davis(tmp_path)
    target = tmp_path / remove
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    with pytest.raises(StmaError, match=message):
        DavisDataset(tmp_path)


def test_davis_missing_root_and_split(tmp_path):
    with pytest.raises(StmaError, match="dataset folder not found"):
        DavisDataset(tmp_path / "nowhere")
    with pytest.raises(StmaError, match="split 'train'"):
        DavisDataset(make_davis(tmp_path), split="train")


def test_davis_sequence_without_frames(tmp_path):
    make_davis(tmp_path)
    for frame in (tmp_path / "JPEGImages/480p/cows").iterdir():
        frame.unlink()
    with pytest.raises(StmaError, match="cows: no .jpg frames"):
        DavisDataset(tmp_path).sequence("cows")


def test_read_label_map_keeps_ids_and_rejects_colour(tmp_path):
    labels = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    png(labels, tmp_path / "a.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "a.png"), labels)
    Image.new("RGB", (2, 2)).save(tmp_path / "b.png")
    with pytest.raises(StmaError, match="b.png: mask must be an indexed"):
        read_label_map(tmp_path / "b.png")
    (tmp_path / "c.png").write_bytes(b"not a png")
    with pytest.raises(StmaError, match="c.png: cannot read mask"):
        read_label_map(tmp_path / "c.png")
    with pytest.raises(StmaError, match="d.png: file not found"):
        read_label_map(tmp_path / "d.png")


def test_youtube_objects_appear_later(tmp_path):
    dataset = YouTubeVOSDataset(make_youtube(tmp_path))
    assert dataset.sequence_names == ["v0", "v1"]
    seq = dataset.sequence("v1")
    assert seq.frames == ("00000", "00005", "00010", "00015")
    assert seq.first_appearance == {1: "00000", 2: "00010"}
    assert seq.object_ids == (1, 2)
    assert seq.given_masks == {
        "00000": tmp_path / "valid/Annotations/v1/00000.png",
        "00010": tmp_path / "valid/Annotations/v1/00010.png",
    }
    assert seq.output_frames == ("00000", "00005", "00010", "00015")
    assert dataset.prediction_path(tmp_path / "out", "v1", "00005") == tmp_path / "out/Annotations/v1/00005.png"


def test_youtube_sequence_selection_and_errors(tmp_path):
    make_youtube(tmp_path)
    assert YouTubeVOSDataset(tmp_path, sequences=["v1"]).sequence_names == ["v1"]
    with pytest.raises(StmaError, match="meta.json: has no sequence 'v9'"):
        YouTubeVOSDataset(tmp_path, sequences=["v9"])
    (tmp_path / "valid/Annotations/v1/00010.png").unlink()
    with pytest.raises(StmaError, match=r"v1/00010\.png: annotation of a first appearance not found"):
        YouTubeVOSDataset(tmp_path).sequence("v1")


def test_youtube_bad_meta(tmp_path):
    make_youtube(tmp_path)
    meta = tmp_path / "valid/meta.json"
    meta.write_text("{")
    with pytest.raises(StmaError, match="meta.json: cannot read JSON"):
        YouTubeVOSDataset(tmp_path)
    meta.write_text(json.dumps({"videos": {"v1": {}}}))
    with pytest.raises(StmaError, match="meta.json: expected"):
        YouTubeVOSDataset(tmp_path)
    meta.write_text(json.dumps({"videos": {"v1": {"objects": {"1": {"frames": ["00099"]}}}}}))
    with pytest.raises(StmaError, match="lists frame '00099' missing"):
        YouTubeVOSDataset(tmp_path).sequence("v1")
    meta.unlink()
    with pytest.raises(StmaError, match="meta.json: file not found"):
        YouTubeVOSDataset(tmp_path)


@pytest.mark.parametrize("name", ["/abs/bear", "../bear", "..", ".", "a/b", "a\\b"])
def test_davis_sequence_names_must_be_plain(tmp_path, name):
    """Names are joined to the output folder: anything but one plain component is refused at once."""
    root = make_davis(tmp_path)
    (root / "ImageSets" / "2017" / "val.txt").write_text(f"bear\n{name}\n")
    with pytest.raises(StmaError, match=r"val\.txt: sequence name .* is not a plain file name"):
        DavisDataset(root)


def test_davis_sequence_list_that_is_not_utf8(tmp_path):
    root = make_davis(tmp_path)
    (root / "ImageSets" / "2017" / "val.txt").write_bytes(b"bear\n\xff\xfe\n")
    with pytest.raises(StmaError, match=r"val\.txt: not UTF-8 text"):
        DavisDataset(root)


@pytest.mark.parametrize(("video", "frame"), [("../v1", "00000"), ("/tmp/v1", "00000"), ("v1", "../../00000")])
def test_youtube_names_must_be_plain(tmp_path, video, frame):
    root = make_youtube(tmp_path)
    meta = tmp_path / "valid" / "meta.json"
    meta.write_text(json.dumps({"videos": {video: {"objects": {"1": {"frames": [frame]}}}}}))
    with pytest.raises(StmaError, match=r"meta\.json: .*name .* is not a plain file name"):
        YouTubeVOSDataset(root)
