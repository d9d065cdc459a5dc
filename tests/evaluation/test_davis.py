"""Scoring a DAVIS-layout predictions folder: reference numbers, CSV tables, errors."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import synthetic_davis
from stma_cli.errors import StmaError
from stma_cli.evaluation.datasets import DavisDataset
from stma_cli.evaluation.davis import GLOBAL_COLUMNS, evaluate_folder, evaluate_sequence

EXPECTED = json.loads((Path(__file__).parent / "data" / "expected_davis.json").read_text())
STAT_COLUMNS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis")
    results = synthetic_davis.write_dataset(root)
    return root, results


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_matches_reference_numbers_on_every_column(synthetic):
    root, results = synthetic
    scores = evaluate_folder(DavisDataset(root, "val"), results, workers=1)

    assert [o.name for o in scores.objects] == list(EXPECTED["per_object"])
    for o in scores.objects:
        expected = EXPECTED["per_object"][o.name]
        got = dict(zip(STAT_COLUMNS, (o.j.mean, o.j.recall, o.j.decay, o.f.mean, o.f.recall, o.f.decay)))
        for column in STAT_COLUMNS:
            assert got[column] == pytest.approx(expected[column], abs=1e-6), (o.name, column)
    for column, value in scores.global_scores().items():
        assert value == pytest.approx(EXPECTED["global"][column], abs=1e-6), column

    global_rows = _read_csv(results / "global_results-val.csv")
    assert global_rows[0] == list(GLOBAL_COLUMNS)
    for column, cell in zip(global_rows[0], global_rows[1]):
        assert len(cell.split(".")[1]) == 3
        assert float(cell) == pytest.approx(EXPECTED["global"][column], abs=1e-3), column

    sequence_rows = _read_csv(results / "per-sequence_results-val.csv")
    assert sequence_rows[0] == ["Sequence", "J-Mean", "F-Mean"]
    assert [row[0] for row in sequence_rows[1:]] == list(EXPECTED["per_object"])
    for name, j_mean, f_mean in sequence_rows[1:]:
        assert float(j_mean) == pytest.approx(EXPECTED["per_object"][name]["J-Mean"], abs=1e-3)
        assert float(f_mean) == pytest.approx(EXPECTED["per_object"][name]["F-Mean"], abs=1e-3)


def test_parallel_workers_give_the_same_results_and_report_progress(synthetic):
    root, results = synthetic
    dataset = DavisDataset(root, "val")
    done = []
    parallel = evaluate_folder(dataset, results, workers=2, on_sequence_done=done.append)
    assert sorted(done) == sorted(synthetic_davis.SEQUENCES)
    assert parallel == evaluate_folder(dataset, results, workers=1)


def test_sequence_subset_is_scored_in_the_given_order(synthetic):
    root, results = synthetic
    scores = evaluate_folder(DavisDataset(root, "val", sequences=["morph", "shift"]), results, workers=1)
    assert [o.name for o in scores.objects] == ["morph_1", "morph_2", "morph_3", "shift_1", "shift_2"]


def test_object_missing_from_some_predicted_frames():
    gt = np.zeros((40, 40), dtype=np.uint8)
    gt[5:15, 5:15] = 1
    gt[25:35, 25:35] = 2
    only_first = np.where(gt == 2, 0, gt)
    # Object 2 is predicted on the first two of four frames and missing afterwards.
    scores = evaluate_sequence([gt] * 4, [gt, gt, only_first, only_first], num_objects=2)
    np.testing.assert_array_equal(scores.j, [[1, 1, 1, 1], [1, 1, 0, 0]])
    np.testing.assert_array_equal(scores.f, [[1, 1, 1, 1], [1, 1, 0, 0]])
    first, second = scores.object_results("seq")
    assert (first.name, first.j.mean, first.j.decay) == ("seq_1", 1.0, 0.0)
    assert (second.name, second.j.mean, second.j.recall, second.j.decay) == ("seq_2", 0.5, 0.5, 1.0)
    assert (second.f.mean, second.f.recall, second.f.decay) == (0.5, 0.5, 1.0)


def test_object_hidden_in_annotation_and_prediction_scores_one():
    gt = np.zeros((40, 40), dtype=np.uint8)
    gt[5:15, 5:15] = 1
    hidden = np.zeros_like(gt)
    scores = evaluate_sequence([gt, hidden], [gt, hidden], num_objects=1)
    np.testing.assert_array_equal(scores.j, [[1, 1]])
    np.testing.assert_array_equal(scores.f, [[1, 1]])


def test_void_pixels_count_as_background():
    gt = np.zeros((40, 40), dtype=np.uint8)
    gt[10:20, 10:20] = 1
    gt[10:20, 20:30] = 255
    pred = np.zeros_like(gt)
    pred[10:20, 10:30] = 1
    scores = evaluate_sequence([gt], [pred], num_objects=1)
    assert scores.j[0, 0] == pytest.approx(0.5)


def test_prediction_id_above_object_count_is_rejected_in_memory():
    gt = np.ones((8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="id 2"):
        evaluate_sequence([gt], [gt * 2], num_objects=1)


def _tiny_dataset(root: Path, frames: int = 4) -> Path:
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("seq\n")
    for sub in ("JPEGImages/480p/seq", "Annotations/480p/seq", "results/seq"):
        (root / sub).mkdir(parents=True)
    labels = np.zeros((16, 24), dtype=np.uint8)
    labels[4:10, 4:12] = 1
    for t in range(frames):
        Image.new("RGB", (24, 16)).save(root / "JPEGImages/480p/seq" / f"{t:05d}.jpg")
        Image.fromarray(labels, mode="L").save(root / "Annotations/480p/seq" / f"{t:05d}.png")
        Image.fromarray(labels, mode="L").save(root / "results/seq" / f"{t:05d}.png")
    return root / "results"


def test_first_and_last_predictions_are_not_needed(tmp_path):
    results = _tiny_dataset(tmp_path)
    (results / "seq" / "00000.png").unlink()
    (results / "seq" / "00003.png").unlink()
    scores = evaluate_folder(DavisDataset(tmp_path), results, workers=1)
    assert scores.global_scores()["J&F-Mean"] == 1.0


def test_missing_prediction_is_an_error(tmp_path):
    results = _tiny_dataset(tmp_path)
    (results / "seq" / "00002.png").unlink()
    with pytest.raises(StmaError, match=r"seq/00002\.png: prediction not found"):
        evaluate_folder(DavisDataset(tmp_path), results, workers=1)
    assert not (results / "global_results-val.csv").exists()


def test_prediction_of_wrong_size_is_an_error(tmp_path):
    results = _tiny_dataset(tmp_path)
    Image.new("L", (12, 8)).save(results / "seq" / "00001.png")
    with pytest.raises(StmaError, match=r"00001\.png: prediction is 12x8, the annotation is 24x16"):
        evaluate_folder(DavisDataset(tmp_path), results, workers=1)


def test_prediction_with_unknown_object_is_an_error(tmp_path):
    results = _tiny_dataset(tmp_path)
    Image.fromarray(np.full((16, 24), 3, dtype=np.uint8), mode="L").save(results / "seq" / "00002.png")
    with pytest.raises(StmaError, match="holds object id 3, but sequence 'seq' has 1 objects"):
        evaluate_folder(DavisDataset(tmp_path), results, workers=2)


def test_colour_prediction_is_an_error(tmp_path):
    results = _tiny_dataset(tmp_path)
    Image.new("RGB", (24, 16)).save(results / "seq" / "00001.png")
    with pytest.raises(StmaError, match="indexed .palette. or grayscale PNG, found mode RGB"):
        evaluate_folder(DavisDataset(tmp_path), results, workers=1)


def test_too_few_frames_and_partial_annotations_are_errors(tmp_path):
    results = _tiny_dataset(tmp_path / "short", frames=2)
    with pytest.raises(StmaError, match="needs at least 3"):
        evaluate_folder(DavisDataset(tmp_path / "short"), results, workers=1)
    results = _tiny_dataset(tmp_path / "partial")
    (tmp_path / "partial/Annotations/480p/seq/00003.png").unlink()
    with pytest.raises(StmaError, match="3 annotations for 4 frames"):
        evaluate_folder(DavisDataset(tmp_path / "partial"), results, workers=1)


def test_missing_results_folder_is_an_error(tmp_path):
    _tiny_dataset(tmp_path)
    with pytest.raises(StmaError, match="results folder not found"):
        evaluate_folder(DavisDataset(tmp_path), tmp_path / "nowhere", workers=1)
