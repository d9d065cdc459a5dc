"""`stma eval` on small DAVIS and YouTube-VOS layouts."""
import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from stma_cli.cli.app import app

runner = CliRunner()


def _square(dx: int) -> np.ndarray:
    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[20:30, 20 + dx : 30 + dx] = 1
    return labels


@pytest.fixture
def davis(tmp_path: Path) -> tuple[Path, Path]:
    """One 4-frame 64x64 sequence whose predictions shift the square 2 pixels right."""
    (tmp_path / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("square\n")
    for sub in ("JPEGImages/480p/square", "Annotations/480p/square", "results/square"):
        (tmp_path / sub).mkdir(parents=True)
    for t in range(4):
        Image.new("RGB", (64, 64)).save(tmp_path / "JPEGImages/480p/square" / f"{t:05d}.jpg")
        Image.fromarray(_square(0), mode="L").save(tmp_path / "Annotations/480p/square" / f"{t:05d}.png")
        Image.fromarray(_square(2), mode="L").save(tmp_path / "results/square" / f"{t:05d}.png")
    return tmp_path, tmp_path / "results"


def test_json_scores_and_csv_files(davis):
    root, results = davis
    result = runner.invoke(app, ["eval", str(root), "--results", str(results), "--json", "--workers", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # J = 80/120 and F = 22/40 on every scored frame (see tests/evaluation/test_metrics.py).
    assert report["global"]["J-Mean"] == pytest.approx(2 / 3)
    assert report["global"]["F-Mean"] == pytest.approx(0.55)
    assert report["global"]["J&F-Mean"] == pytest.approx((2 / 3 + 0.55) / 2)
    assert report["global"]["J-Recall"] == 1.0 and report["global"]["F-Decay"] == 0.0
    assert [o["Sequence"] for o in report["objects"]] == ["square_1"]

    with open(results / "global_results-val.csv", newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"],
            ["0.608", "0.667", "1.000", "0.000", "0.550", "1.000", "0.000"],
        ]
    assert (results / "per-sequence_results-val.csv").read_text() == "Sequence,J-Mean,F-Mean\nsquare_1,0.667,0.550\n"


def test_tables_on_the_terminal(davis):
    root, results = davis
    result = runner.invoke(app, ["eval", str(root), "--results", str(results), "--sequences", "square"])
    assert result.exit_code == 0, result.output
    assert "square_1" in result.stdout and "0.608" in result.stdout and "J&F-Mean" in result.stdout


def test_bad_input_is_one_line_error(davis):
    root, results = davis
    (results / "square" / "00001.png").unlink()
    result = runner.invoke(app, ["eval", str(root), "--results", str(results)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"stma: error: {results / 'square' / '00001.png'}: prediction not found (every frame but the first and last is scored)"]

    result = runner.invoke(app, ["eval", str(root), "--results", str(results), "--split", "train"])
    assert result.exit_code == 1
    assert "sequence list for split 'train' not found" in result.stderr


def test_youtube_format_writes_submission_zip(tmp_path):
    split = tmp_path / "data" / "valid"
    for folder in ("JPEGImages/vid", "Annotations/vid"):
        (split / folder).mkdir(parents=True)
    for frame in ("00000", "00005"):
        Image.new("RGB", (16, 8)).save(split / "JPEGImages/vid" / f"{frame}.jpg")
    Image.new("P", (16, 8), 1).save(split / "Annotations/vid/00000.png")
    (split / "meta.json").write_text(json.dumps({"videos": {"vid": {"objects": {"1": {"frames": ["00000", "00005"]}}}}}))
    results = tmp_path / "results"
    (results / "Annotations" / "vid").mkdir(parents=True)
    for frame in ("00000", "00005"):
        Image.new("P", (16, 8), 1).save(results / "Annotations/vid" / f"{frame}.png")

    result = runner.invoke(app, ["eval", str(tmp_path / "data"), "--format", "youtube", "--results", str(results), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"submission": str(results / "submission.zip"), "videos": 1, "frames": 2}
    with zipfile.ZipFile(results / "submission.zip") as archive:
        assert sorted(archive.namelist()) == ["Annotations/vid/00000.png", "Annotations/vid/00005.png"]
