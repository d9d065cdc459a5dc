"""Fixtures of the bad-input corpus."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stma_cli.model import STMA, STMAConfig


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder of the tiny preset with random weights: what the corpus checks does not depend on them."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights") / "stma-random"
    STMA(STMAConfig.preset("tiny")).save_pretrained(folder)
    return folder
