"""`predict_dataset` and `stma eval --output` on tiny DAVIS and YouTube-VOS layouts, with a random-weights model."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from stma_cli.cli.app import app
from stma_cli.evaluation.datasets import DavisDataset, YouTubeVOSDataset
from stma_cli.inference.dataset import predict_dataset
from stma_cli.inference.segmenter import SegmenterConfig
from stma_cli.model import STMA, STMAConfig

HEIGHT, WIDTH = 48, 64
PALETTE = [0, 0, 0, 200, 30, 30, 30, 200, 30, 30, 30, 200] + [128, 128, 128] * 252
runner = CliRunner()


def frame_and_labels(t: int, ids: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Textured squares, object k moving 2 px right per frame."""
    rgb = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    for k, object_id in enumerate(ids):
        y, x = 4 + 22 * k, 4 + 2 * t
        rgb[y : y + 16, x : x + 16] = np.random.default_rng(object_id).integers(0, 256, (16, 16, 3))
        labels[y : y + 16, x : x + 16] = object_id
    return rgb, labels


def save_labels(labels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels, mode="P")
    image.putpalette(PALETTE)
    image.save(path)


def save_frame(rgb: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)


def make_davis(root: Path) -> Path:
    """Sequences 'one' (one object, 5 frames) and 'two' (two objects, 4 frames), every frame annotated."""
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("one\ntwo\n")
    for name, frames, ids in (("one", 5, (1,)), ("two", 4, (1, 2))):
        for t in range(frames):
            rgb, labels = frame_and_labels(t, ids)
            save_frame(rgb, root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg")
            save_labels(labels, root / "Annotations" / "480p" / name / f"{t:05d}.png")
    return root


def make_youtube(root: Path) -> Path:
    """Video 'v': 6 frames; object 1 given on 00000, object 2 on 00003 (whose annotation shows both)."""
    split = root / "valid"
    for t in range(6):
        rgb, _ = frame_and_labels(t, (1, 2))
        save_frame(rgb, split / "JPEGImages" / "v" / f"{t:05d}.jpg")
    save_labels(frame_and_labels(0, (1,))[1], split / "Annotations" / "v" / "00000.png")
    save_labels(frame_and_labels(3, (1, 2))[1], split / "Annotations" / "v" / "00003.png")
    meta = {"videos": {"v": {"objects": {"1": {"frames": ["00000", "00002", "00004"]},
                                         "2": {"frames": ["00003", "00004"]}}}}}
    (split / "meta.json").write_text(json.dumps(meta))
    return root


def read_png(path: Path) -> tuple[np.ndarray, list[int]]:
    with Image.open(path) as image:
        assert image.mode == "P"
        return np.asarray(image), image.getpalette()


def test_davis_predictions_for_every_frame(tmp_path, model):
    dataset = DavisDataset(make_davis(tmp_path / "davis"))
    done: list[str] = []
    predict_dataset(dataset, tmp_path / "pred", model, SegmenterConfig(), progress=done.append)

    assert done == ["one", "two"]
    assert sorted(p.name for p in (tmp_path / "pred" / "two").iterdir()) == [f"{t:05d}.png" for t in range(4)]
    first, palette = read_png(tmp_path / "pred" / "two" / "00000.png")
    np.testing.assert_array_equal(first, frame_and_labels(0, (1, 2))[1])
    assert palette == PALETTE
    for t in range(1, 4):
        labels, _ = read_png(tmp_path / "pred" / "two" / f"{t:05d}.png")
        assert labels.shape == (HEIGHT, WIDTH) and set(np.unique(labels)) <= {0, 1, 2}


def test_youtube_objects_start_on_their_first_frame(tmp_path, model):
    dataset = YouTubeVOSDataset(make_youtube(tmp_path / "yt"))
    predict_dataset(dataset, tmp_path / "pred", model, SegmenterConfig())

    folder = tmp_path / "pred" / "Annotations" / "v"
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00002.png", "00003.png", "00004.png"]
    frame3, _ = read_png(folder / "00003.png")
    truth3 = frame_and_labels(3, (1, 2))[1]
    # Object 2 comes from the annotation; object 1 is tracked, not copied from it.
    np.testing.assert_array_equal(frame3 == 2, truth3 == 2)
    assert not (read_png(folder / "00002.png")[0] == 2).any()


def test_eval_output_predicts_then_scores(tmp_path, tiny_weights):
    root = make_davis(tmp_path / "davis")
    out = tmp_path / "pred"
    result = runner.invoke(app, ["eval", str(root), "--output", str(out), "--weights", str(tiny_weights(0)),
                                 "--json", "--workers", "1", "--mem-size", "3", "--max-side", "48"])
    assert result.exit_code == 0, result.output

    report = json.loads(result.stdout)
    assert [o["Sequence"] for o in report["objects"]] == ["one_1", "two_1", "two_2"]
    assert all(0 <= v <= 1 for o in report["objects"] for k, v in o.items() if k.endswith(("Mean", "Recall")))
    with open(out / "global_results-val.csv", newline="") as handle:
        header, values = list(csv.reader(handle))
    assert header[0] == "J&F-Mean" and all(0 <= float(v) <= 1 for v in values[:3])
    assert (out / "per-sequence_results-val.csv").read_text().splitlines()[0] == "Sequence,J-Mean,F-Mean"


def test_eval_output_packs_youtube(tmp_path, tiny_weights):
    root = make_youtube(tmp_path / "yt")
    out = tmp_path / "pred"
    result = runner.invoke(app, ["eval", str(root), "--format", "youtube", "--output", str(out),
                                 "--weights", str(tiny_weights(0)), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] == 4
    with zipfile.ZipFile(out / "submission.zip") as archive:
        assert len(archive.namelist()) == 4


@pytest.mark.parametrize("flags", [[], ["--results", "r", "--output", "o"]])
def test_eval_needs_results_or_output(tmp_path, flags):
    result = runner.invoke(app, ["eval", str(tmp_path), *flags])
    assert result.exit_code == 2
    assert result.stderr == "stma: error: give either --results DIR (existing predictions) or --output DIR (predict, then score)\n"


def test_eval_output_writes_the_other_mask_formats_beside_the_scored_pngs(tmp_path, tiny_weights):
    from stma_cli.io.masks import rle_region

    root = make_youtube(tmp_path / "yt")
    out = tmp_path / "pred"
    result = runner.invoke(app, ["eval", str(root), "--format", "youtube", "--output", str(out), "--weights",
                                 str(tiny_weights(0)), "--json", "--mask-format", "coco,objects"])
    assert result.exit_code == 0, result.output
    folder = out / "Annotations" / "v"
    frames = ["00000", "00002", "00003", "00004"]
    coco = json.loads((folder / "masks.json").read_text())
    assert [image["file_name"] for image in coco["images"]] == [f"{frame}.png" for frame in frames]
    for image in coco["images"]:
        labels, _ = read_png(folder / image["file_name"])
        for object_id in (1, 2):
            binary = np.asarray(Image.open(folder / str(object_id) / image["file_name"]))
            np.testing.assert_array_equal(binary == 255, labels == object_id)
        for annotation in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            region = rle_region(annotation["segmentation"], folder / "masks.json", labels.shape)
            np.testing.assert_array_equal(region, labels == annotation["object_id"])
    with zipfile.ZipFile(out / "submission.zip") as archive:
        assert sorted(archive.namelist()) == [f"Annotations/v/{frame}.png" for frame in frames]


def test_eval_output_error_is_one_line_and_nothing_else(tmp_path, tiny_weights):
    root = make_davis(tmp_path / "davis")
    broken = root / "JPEGImages" / "480p" / "two" / "00002.jpg"
    broken.write_bytes(b"not a jpeg")
    result = runner.invoke(app, ["eval", str(root), "--output", str(tmp_path / "pred"), "--weights",
                                 str(tiny_weights(0)), "--max-side", "48"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"stma: error: {broken}: cannot read the frame")
    assert result.stderr.count("\n") == 1


_RSS_WHILE_SEGMENTING = """
import atexit, os, runpy, sys
from pathlib import Path
from stma_cli.inference.segmenter import Segmenter
out, most, step = Path(sys.argv.pop(1)), [0], Segmenter.step
def measured(self, *args, **kwargs):
    result = step(self, *args, **kwargs)
    most[0] = max(most[0], int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    return result
Segmenter.step = measured
atexit.register(lambda: out.write_text(str(most[0])))
sys.argv[0] = "stma"
runpy.run_module("stma_cli", run_name="__main__")
"""


def _rss_while_segmenting_mib(arguments: list[str], record: Path) -> float:
    """The most resident memory of a fresh `stma` process after any frame it segmented (the process must
    succeed): what it holds while it segments, past the transient peak of loading the weights."""
    result = subprocess.run([sys.executable, "-c", _RSS_WHILE_SEGMENTING, str(record), *arguments],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return int(record.read_text()) / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc/self/statm")
def test_eval_output_holds_one_copy_of_the_weights(tmp_path):
    """`stma eval --output` and `stma segment` on the same frames, with weights large enough (53 M
    parameters, 203 MiB) that a second copy in memory would show: while they segment, they hold about
    the same memory, far less apart than the weights' size."""
    torch.manual_seed(0)
    config = replace(STMAConfig.preset("tiny"), dim=768, depth=4, heads=8)
    STMA(config).save_pretrained(tmp_path / "large")
    weights_mib = (tmp_path / "large" / "model.safetensors").stat().st_size / 2**20
    root = make_davis(tmp_path / "davis")
    (root / "ImageSets" / "2017" / "val.txt").write_text("one\n")
    common = ["--weights", str(tmp_path / "large"), "--max-side", "48", "--threads", "1"]
    evaluating = _rss_while_segmenting_mib(
        ["eval", str(root), "--output", str(tmp_path / "pred"), "--workers", "1", *common], tmp_path / "eval.rss")
    segmenting = _rss_while_segmenting_mib(
        ["segment", str(root / "JPEGImages" / "480p" / "one"), "--mask", str(root / "Annotations" / "480p" / "one" /
         "00000.png"), "--output", str(tmp_path / "seg"), "--no-overlay", "--no-logits", *common], tmp_path / "seg.rss")
    assert weights_mib > 150
    assert abs(evaluating - segmenting) < weights_mib / 2, (evaluating, segmenting, weights_mib)
