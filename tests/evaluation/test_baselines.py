"""Copy-first-mask and motion-propagation baselines on squares translating over a textured background,
and the held-out benchmark script end to end."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eval_layouts import make_youtube, png
from stma_cli.errors import StmaError
from stma_cli.evaluation.baselines import copy_first_mask, motion_propagation
from stma_cli.evaluation.datasets import DavisDataset, YouTubeVOSDataset
from stma_cli.io.masks import read_label_map
from stma_cli.evaluation.davis import evaluate_folder
from stma_cli.model import STMA, STMAConfig

HEIGHT, WIDTH, FRAMES = 96, 128, 8
SIDE = 24
SQUARES = {1: ((10, 8), (1, 3)), 2: ((60, 90), (-2, -1))}
"""Object id -> (top-left corner on frame 0, (dy, dx) per frame)."""
BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "heldout.py"


def blocky_texture(rng: np.random.Generator, height: int, width: int, block: int = 4) -> np.ndarray:
    """Random gray levels constant over block x block cells, as RGB."""
    cells = rng.integers(0, 256, (height // block + 1, width // block + 1), dtype=np.uint8)
    gray = cells.repeat(block, axis=0).repeat(block, axis=1)[:height, :width]
    return np.repeat(gray[..., None], 3, axis=2)


def square_box(object_id: int, t: int) -> tuple[slice, slice]:
    (top, left), (dy, dx) = SQUARES[object_id]
    return slice(top + dy * t, top + dy * t + SIDE), slice(left + dx * t, left + dx * t + SIDE)


def make_squares(root: Path) -> Path:
    """DAVIS layout with one sequence 'squares': two textured squares translating at constant speed
    over a still texture."""
    rng = np.random.default_rng(3)
    background = blocky_texture(rng, HEIGHT, WIDTH)
    sprites = {object_id: blocky_texture(rng, SIDE, SIDE) for object_id in SQUARES}
    images, annotations = root / "JPEGImages" / "480p" / "squares", root / "Annotations" / "480p" / "squares"
    images.mkdir(parents=True)
    for t in range(FRAMES):
        rgb, labels = background.copy(), np.zeros((HEIGHT, WIDTH), np.uint8)
        for object_id, sprite in sprites.items():
            rgb[square_box(object_id, t)] = sprite
            labels[square_box(object_id, t)] = object_id
        Image.fromarray(rgb).save(images / f"{t:05d}.jpg", quality=95)
        png(labels, annotations / f"{t:05d}.png")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("squares\n")
    return root


@pytest.fixture
def davis_root(tmp_path: Path) -> Path:
    return make_squares(tmp_path / "davis")


def copy_iou(object_id: int, t: int) -> float:
    """IoU of a square and itself moved by t steps of its velocity."""
    dy, dx = (abs(v) * t for v in SQUARES[object_id][1])
    overlap = max(SIDE - dy, 0) * max(SIDE - dx, 0)
    return overlap / (2 * SIDE * SIDE - overlap)


def output_names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_copy_first_mask_repeats_the_first_annotation(davis_root: Path, tmp_path: Path):
    dataset = DavisDataset(davis_root)
    out = tmp_path / "copy"
    copy_first_mask(dataset, out)

    assert output_names(out / "squares") == [f"{t:05d}.png" for t in range(FRAMES)]
    first = read_label_map(davis_root / "Annotations" / "480p" / "squares" / "00000.png")
    for t in range(FRAMES):
        with Image.open(out / "squares" / f"{t:05d}.png") as image:
            assert image.mode == "P"
            np.testing.assert_array_equal(np.asarray(image), first)
    results = evaluate_folder(dataset, out, workers=1)
    for result in results.objects:
        expected = np.mean([copy_iou(result.object_id, t) for t in range(1, FRAMES - 1)])
        assert result.j.mean == pytest.approx(expected, abs=1e-9)
    assert results.global_scores()["J&F-Mean"] < 0.5


def test_motion_propagation_follows_pure_translation(davis_root: Path, tmp_path: Path):
    dataset = DavisDataset(davis_root)
    out = tmp_path / "motion"
    motion_propagation(dataset, out)

    assert output_names(out / "squares") == [f"{t:05d}.png" for t in range(FRAMES)]
    scores = evaluate_folder(dataset, out, workers=1).global_scores()
    assert scores["J-Mean"] > 0.98
    assert scores["F-Mean"] > 0.98
    last = read_label_map(out / "squares" / f"{FRAMES - 1:05d}.png")
    for object_id in SQUARES:
        expected = np.zeros((HEIGHT, WIDTH), bool)
        expected[square_box(object_id, FRAMES - 1)] = True
        assert ((last == object_id) == expected).mean() > 0.995


@pytest.mark.parametrize("method", [copy_first_mask, motion_propagation])
def test_objects_introduced_later_start_on_their_frame(tmp_path: Path, method):
    dataset = YouTubeVOSDataset(make_youtube(tmp_path / "ytvos"))
    out = tmp_path / "out"
    method(dataset, out)

    folder = out / "Annotations" / "v1"
    assert output_names(folder) == ["00000.png", "00005.png", "00010.png", "00015.png"]
    assert output_names(out / "Annotations" / "v0") == ["00000.png", "00005.png"]
    assert (read_label_map(folder / "00005.png") == 1).all()
    assert (read_label_map(folder / "00010.png") == 2).all()  # object 2's given mask covers the frame
    assert (read_label_map(folder / "00015.png") == 2).all()


def test_heldout_benchmark_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    torch.manual_seed(0)
    weights = tmp_path / "weights"
    STMA(STMAConfig.preset("tiny")).save_pretrained(weights)
    spec = importlib.util.spec_from_file_location("heldout", BENCHMARK)
    heldout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(heldout)
    root = tmp_path / "heldout"
    heldout.main(["--root", str(root), "--sequences", "1", "--frames", "6", "--size", "64x96",
                  "--weights", str(weights), "--max-side", "96", "--workers", "1"])

    predictions = tmp_path / "heldout-predictions"
    assert output_names(predictions) == ["copy", "model", "motion", "results.md"]
    for method in ("copy", "model", "motion"):
        [sequence] = [p for p in (predictions / method).iterdir() if p.is_dir()]
        assert output_names(sequence) == [f"{t:05d}.png" for t in range(6)]
        assert (predictions / method / "global_results-val.csv").is_file()
    output = capsys.readouterr().out
    table = [line for line in output.splitlines() if line.startswith("|")]
    assert table[0].split("|")[1:-1] == [" method ", " J&F-Mean ", " J-Mean ", " J-Recall ", " F-Mean ",
                                         " F-Recall ", " J-Decay ", " seconds "]
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in table[2:]}
    assert set(rows) == {f"model ({weights})", "copy-first-mask", "motion-propagation"}
    for cells in rows.values():
        assert 0.0 <= float(cells[0]) <= 1.0
    assert "seed 10000019" in output
    assert f"--root {root}" in output
    assert (predictions / "results.md").read_text() in output

    with pytest.raises(StmaError, match="holds another set"):
        heldout.main(["--root", str(root), "--sequences", "2", "--frames", "6", "--size", "64x96", "--methods", "copy"])
