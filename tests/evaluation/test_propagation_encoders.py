"""The propagation baseline on the other ImageNet encoders (EfficientNet-Lite0 and Lite2)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from stma_cli.errors import StmaError
from stma_cli.evaluation.datasets import DavisDataset
from stma_cli.evaluation.davis import evaluate_folder
from stma_cli.evaluation.propagation import PropagationConfig, feature_propagation
from stma_cli.model.efficientnet_lite import VARIANTS
from test_feature_propagation import make_photo_scene


@pytest.mark.parametrize("encoder", list(VARIANTS))
@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="needs scikit-image's photos")
def test_lite_encoders_follow_a_moving_photo_cut_out(tmp_path: Path, encoder: str) -> None:
    if VARIANTS[encoder].checkpoint() is None:
        pytest.skip(f"needs {VARIANTS[encoder].requirement}")
    dataset = DavisDataset(make_photo_scene(tmp_path / "davis"))
    out = tmp_path / "propagation"
    feature_propagation(dataset, out, PropagationConfig(encoder=encoder))
    assert evaluate_folder(dataset, out, workers=1).global_scores()["J-Mean"] > 0.75


def test_unknown_encoder_is_refused(tmp_path: Path) -> None:
    dataset = DavisDataset(make_photo_scene(tmp_path / "davis", frames=2))
    with pytest.raises(StmaError, match="unknown encoder 'resnet50'"):
        feature_propagation(dataset, tmp_path / "out", PropagationConfig(encoder="resnet50"))
