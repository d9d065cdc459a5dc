"""`--mask-format`: COCO RLE and per-object PNGs beside (or instead of) the palette PNGs, read back the same."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from stma_cli.cli.app import app
from stma_cli.io.results import FinishedFolder

runner = CliRunner()


def segment(video, weights, out, *flags: str):
    return runner.invoke(app, ["segment", str(video.path), "--mask", str(video.mask), "--weights", weights,
                               "-o", str(out), "--no-logits", "--no-overlay", "--json", *flags])


def test_the_three_formats_hold_the_same_masks(make_video, weights, tmp_path):
    video = make_video(frames=4)
    out = tmp_path / "out"
    result = segment(video, weights, out, "--mask-format", "png,coco,objects")
    assert result.exit_code == 0, result.output

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == ["masks", "masks.json", "masks/1", "masks/2"]
    assert manifest["mask_formats"] == ["png", "coco", "objects"]
    coco = json.loads((out / "masks.json").read_text())
    assert [image["file_name"] for image in coco["images"]] == [f"{t:05d}.png" for t in range(4)]
    assert {c["id"] for c in coco["categories"]} == {1, 2}
    pycocotools = pytest.importorskip("pycocotools.mask")
    for t in range(4):
        labels = np.asarray(Image.open(out / "masks" / f"{t:05d}.png"))
        for object_id in (1, 2):
            binary = np.asarray(Image.open(out / "masks" / str(object_id) / f"{t:05d}.png"))
            assert set(np.unique(binary)) <= {0, 255}
            np.testing.assert_array_equal(binary == 255, labels == object_id)
        for annotation in (a for a in coco["annotations"] if a["image_id"] == coco["images"][t]["id"]):
            decoded = pycocotools.decode(annotation["segmentation"]).astype(bool)
            np.testing.assert_array_equal(decoded, labels == annotation["category_id"])
            assert annotation["area"] == int(decoded.sum())


@pytest.mark.parametrize("mask_format", ["coco", "objects"])
def test_a_folder_without_palette_pngs_is_read_back_and_rendered(make_video, weights, tmp_path, mask_format):
    video = make_video(frames=4)
    reference, out = tmp_path / "png", tmp_path / mask_format
    assert segment(video, weights, reference).exit_code == 0
    result = segment(video, weights, out, "--mask-format", mask_format)
    assert result.exit_code == 0, result.output
    assert not (out / "masks" / "00000.png").exists()

    expected, results = FinishedFolder.open(reference), FinishedFolder.open(out)
    for t in range(4):
        labels, palette = results.labels(t)
        np.testing.assert_array_equal(labels, expected.labels(t)[0])
        assert palette[3:9] == expected.labels(t)[1][3:9]  # the objects' colours, from the manifest
    rendered = runner.invoke(app, ["render", str(out)])
    assert rendered.exit_code == 0, rendered.output
    assert (out / "overlay.mp4").stat().st_size > 0


def test_a_new_format_is_another_run_and_overwrite_replaces_the_old_files(make_video, weights, tmp_path):
    video = make_video(frames=3)
    out = tmp_path / "out"
    assert segment(video, weights, out, "--mask-format", "objects").exit_code == 0
    again = segment(video, weights, out, "--mask-format", "coco")
    assert again.exit_code == 1 and "holds the finished results of another run" in again.stderr
    assert segment(video, weights, out, "--mask-format", "coco", "--overwrite").exit_code == 0
    assert (out / "masks.json").is_file() and not (out / "masks" / "1").exists()
    subset = segment(video, weights, out, "--mask-format", "coco")
    assert json.loads(subset.stdout)["status"] == "skipped"


def test_an_unknown_format_is_a_usage_error(make_video, weights, tmp_path):
    video = make_video(frames=3)
    result = segment(video, weights, tmp_path / "out", "--mask-format", "png,rle")
    assert result.exit_code == 2
    assert "--mask-format 'png,rle': expected png, coco, objects" in result.stderr
