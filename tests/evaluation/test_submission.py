"""YouTube-VOS submission archive."""
import zipfile

import numpy as np
import pytest
from PIL import Image

from eval_layouts import make_youtube
from stma_cli.errors import StmaError
from stma_cli.evaluation.datasets import YouTubeVOSDataset
from stma_cli.evaluation.submission import write_submission


def _predict_all(dataset, results):
    for name in dataset.sequence_names:
        seq = dataset.sequence(name)
        for frame in seq.output_frames:
            path = dataset.prediction_path(results, name, frame)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ones((8, 12), dtype=np.uint8), mode="P").save(path)


def test_zip_holds_exactly_the_listed_frames(tmp_path):
    dataset = YouTubeVOSDataset(make_youtube(tmp_path / "data"))
    results = tmp_path / "results"
    _predict_all(dataset, results)
    extra = results / "Annotations" / "v0" / "00099.png"
    Image.new("P", (12, 8)).save(extra)
    done = []

    submission = write_submission(dataset, results, on_video_done=done.append)

    assert submission.path == results / "submission.zip"
    assert (submission.videos, submission.frames) == (2, 6)
    assert done == ["v0", "v1"]
    with zipfile.ZipFile(submission.path) as archive:
        assert sorted(archive.namelist()) == [
            "Annotations/v0/00000.png",
            "Annotations/v0/00005.png",
            "Annotations/v1/00000.png",
            "Annotations/v1/00005.png",
            "Annotations/v1/00010.png",
            "Annotations/v1/00015.png",
        ]
        assert archive.read("Annotations/v1/00010.png") == (results / "Annotations/v1/00010.png").read_bytes()
    assert [p.name for p in results.iterdir() if p.is_file()] == ["submission.zip"]


def test_missing_or_wrong_predictions_write_nothing(tmp_path):
    dataset = YouTubeVOSDataset(make_youtube(tmp_path / "data"))
    results = tmp_path / "results"
    _predict_all(dataset, results)
    target = results / "Annotations" / "v1" / "00015.png"

    target.unlink()
    with pytest.raises(StmaError, match=r"v1/00015\.png: prediction not found"):
        write_submission(dataset, results)

    Image.new("P", (6, 4)).save(target)
    with pytest.raises(StmaError, match="prediction is 6x4, the frame is 12x8"):
        write_submission(dataset, results)

    Image.new("RGB", (12, 8)).save(target)
    with pytest.raises(StmaError, match="indexed .palette. or grayscale PNG, found PNG RGB"):
        write_submission(dataset, results)
    assert not (results / "submission.zip").exists()


def test_missing_results_folder(tmp_path):
    dataset = YouTubeVOSDataset(make_youtube(tmp_path / "data"))
    with pytest.raises(StmaError, match="results folder not found"):
        write_submission(dataset, tmp_path / "nowhere")
