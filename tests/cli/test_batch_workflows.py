"""Batch workflows: the DAVIS layout with objects starting on later frames, and the thread count."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from stma_cli.cli.app import app

runner = CliRunner()


def test_a_davis_layout_batch_with_an_object_that_appears_later(make_video, weights, tmp_path):
    images, annotations = tmp_path / "JPEGImages", tmp_path / "Annotations"
    videos = [make_video(name, frames=6, frame_folder=True, folder=images) for name in ("bear", "swan")]
    for video in videos:
        folder = annotations / video.path.name
        folder.mkdir(parents=True)
        video.write_mask(folder / "frame_000.png", 0, [1])
        video.write_mask(folder / "frame_030.png", 3, [2])  # object 2 starts on frame 3
        video.mask.unlink()  # only the Annotations folder holds masks
    out = tmp_path / "out"
    result = runner.invoke(app, ["segment", str(images), "--mask-template", "../Annotations/{stem}", "-o", str(out),
                                 "--weights", weights, "--no-logits", "--no-overlay", "--json"])
    assert result.exit_code == 0, result.output
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in reports] == ["ok", "ok"]
    assert all(r["objects"] == [1, 2] for r in reports)
    for video in videos:
        masks = out / video.path.name / "masks"
        given = np.asarray(Image.open(masks / "frame_030.png"))
        assert ((given == 2) == (video.labels[3] == 2)).all()  # the given mask, exactly, on its frame
        for name in ("frame_000", "frame_010", "frame_020"):
            assert not (np.asarray(Image.open(masks / f"{name}.png")) == 2).any()  # not before it starts
    manifest = json.loads((out / "bear" / "manifest.json").read_text())
    assert [m["frame"] for m in manifest["provenance"]["masks"]] == [0, 3]


def test_threads_option(make_video, weights, tmp_path):
    import torch

    video = make_video(frames=3)
    before = torch.get_num_threads()
    try:
        result = runner.invoke(app, ["segment", str(video.path), "--mask", str(video.mask), "--weights", weights,
                                     "-o", str(tmp_path / "out"), "--threads", "2", "--no-overlay", "--no-logits"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 2
        result = runner.invoke(app, ["segment", str(video.path), "--mask", str(video.mask), "--threads", "0"])
        assert result.exit_code == 2
    finally:
        torch.set_num_threads(before)


def test_the_colours_of_an_rgb_mask_are_kept_in_the_output(make_video, weights, tmp_path):
    video = make_video(frames=3)
    painted = np.zeros((*video.labels[0].shape, 3), np.uint8)
    painted[video.labels[0] == 1] = (255, 128, 0)
    painted[video.labels[0] == 2] = (0, 200, 255)
    Image.fromarray(painted).save(tmp_path / "painted.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["segment", str(video.path), "--mask", str(tmp_path / "painted.png"), "--weights",
                                 weights, "-o", str(out), "--no-logits"])
    assert result.exit_code == 0, result.output
    with Image.open(out / "masks" / "00000.png") as mask:
        palette, labels = mask.getpalette(), np.asarray(mask)
    ids = {tuple(painted[labels == i][0]): i for i in (1, 2)}  # stma numbers colours in the order they appear
    for colour, object_id in ids.items():
        assert tuple(palette[3 * object_id:3 * object_id + 3]) == colour
