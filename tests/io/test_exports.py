"""COCO RLE and per-object PNG exports: decoded by pycocotools (when installed) and by stma's own reader."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from stma_cli.io.exports import CocoWriter, rle_encode, write_object_masks
from stma_cli.io.masks import read_mask


def random_masks():
    rng = np.random.default_rng(0)
    yield np.zeros((5, 7), bool)
    yield np.ones((5, 7), bool)
    for _ in range(30):
        height, width = rng.integers(1, 90, size=2)
        blobs = rng.random((height, width)) < rng.random()
        yield blobs
    big = np.zeros((480, 854), bool)
    big[100:400, 50:800] = True  # runs longer than 2**15: many 5-bit groups
    yield big


@pytest.mark.parametrize("mask", list(random_masks()), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_rle_matches_pycocotools(mask):
    coco = pytest.importorskip("pycocotools.mask")
    ours = rle_encode(mask)
    assert (coco.decode({"size": ours["size"], "counts": ours["counts"].encode()}) == mask).all()
    theirs = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert ours["counts"] == theirs["counts"].decode() and ours["size"] == list(theirs["size"])


def test_coco_file_reads_back_frame_by_frame(tmp_path):
    labels = np.zeros((3, 20, 30), np.uint8)
    labels[0, 2:8, 3:9] = 1
    labels[1, 2:8, 3:9] = 1
    labels[1, 10:18, 12:25] = 4
    writer = CocoWriter(tmp_path / "masks.json", (30, 20), [1, 4])
    for index, frame in enumerate(labels):
        writer.write(index, f"{index:05d}", frame)
    writer.close()
    data = json.loads((tmp_path / "masks.json").read_text())
    assert [image["frame_index"] for image in data["images"]] == [0, 1, 2]
    assert [(a["image_id"], a["category_id"]) for a in data["annotations"]] == [(1, 1), (2, 1), (2, 4)]
    assert data["annotations"][2]["bbox"] == [12, 10, 13, 8] and data["annotations"][2]["area"] == 104
    for index in range(2):  # stma's own COCO reader, by frame number (frame 2 holds no object)
        mask = read_mask(tmp_path / "masks.json", (30, 20), frame_index=index)
        assert ((mask.labels > 0) == (labels[index] > 0)).all()


def test_object_masks(tmp_path):
    labels = np.zeros((10, 12), np.uint8)
    labels[1:4, 1:4], labels[5:9, 6:11] = 2, 7
    write_object_masks(tmp_path, "00003", labels, [2, 7, 9])
    for object_id in (2, 7, 9):
        with Image.open(tmp_path / str(object_id) / "00003.png") as image:
            assert image.mode == "L"
            assert ((np.asarray(image) == 255) == (labels == object_id)).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "7", "9"]
