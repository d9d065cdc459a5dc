"""Fixtures for the inference tests."""
import pytest
import torch

from stma_cli.inference.segmenter import Segmenter
from stma_cli.model import STMA, STMAConfig


@pytest.fixture(scope="module")
def model() -> STMA:
    """A randomly initialised tiny model (these tests check plumbing, not quality)."""
    torch.manual_seed(0)
    return STMA(STMAConfig.preset("tiny")).eval()


@pytest.fixture(scope="module")
def segmenter(model: STMA) -> Segmenter:
    """One Segmenter for the module's videos (each video and pass resets it), as a batch uses one."""
    return Segmenter(model)
