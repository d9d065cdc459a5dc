"""`Segmenter.step`: bounded memory, the user's masks returned exactly, objects added mid-stream, shapes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stma_cli.errors import StmaError
from stma_cli.inference.segmenter import Segmenter, SegmenterConfig, processing_size


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_memory_stays_bounded_over_200_frames(model):
    segmenter = Segmenter(model, SegmenterConfig(mem_size=4, mem_every=3))
    first = np.zeros((32, 32), np.uint8)
    first[4:16, 4:16] = 1
    later = np.zeros((32, 32), np.uint8)
    later[18:30, 18:30] = 2
    sizes = []
    for t in range(200):
        mask = first if t == 0 else later if t == 100 else None
        segmenter.step(noise(32, 32, seed=t % 7), mask)
        sizes.append(len(segmenter.memory))
        if t == 0:
            anchor = segmenter.memory.entries()[0]
    assert max(sizes) == 4
    assert segmenter.memory.entries()[0] is anchor  # the first annotated frame is never dropped
    assert segmenter.object_ids == [1, 2]


def test_the_users_mask_comes_back_exactly(model):
    # The model sees the frame at 48x64: thin lines and single pixels cannot survive its resolution.
    segmenter = Segmenter(model, SegmenterConfig(max_side=64))
    mask = np.zeros((96, 128), np.uint8)
    mask[10:50, 10:40] = 5
    mask[60, :] = 2
    mask[70:90:3, 100:120:2] = 2
    result = segmenter.step(noise(96, 128), mask)
    np.testing.assert_array_equal(result.labels, mask)
    assert result.object_ids == [2, 5]  # ids of one mask enter in increasing order

    result = segmenter.step(noise(96, 128, seed=1))
    assert set(np.unique(result.labels)) <= {0, 2, 5}

    new = np.zeros((96, 128), np.uint8)
    new[30:34, 60:90] = 9
    result = segmenter.step(noise(96, 128, seed=2), new)
    assert result.object_ids == [2, 5, 9]
    assert (result.labels[new == 9] == 9).all() and ((result.labels == 9) == (new == 9)).all()
    assert result.logits.shape[0] == 4


def test_frames_before_any_mask_are_background(model):
    segmenter = Segmenter(model)
    result = segmenter.step(noise(40, 56))
    assert not result.labels.any() and result.object_ids == []
    assert result.logits.shape == (1, 10, 14)
    assert segmenter.memory.empty


@pytest.mark.parametrize("size, max_side", [((90, 130), 0), ((300, 200), 120)])
def test_result_shapes(model, size, max_side):
    height, width = size
    mask = np.zeros(size, np.uint8)
    mask[: height // 2, : width // 2] = 3
    segmenter = Segmenter(model, SegmenterConfig(max_side=max_side))
    segmenter.step(noise(height, width), mask)
    result = segmenter.step(noise(height, width, seed=1))
    ph, pw = processing_size(height, width, max_side)
    assert result.labels.shape == size and result.labels.dtype == np.uint8
    assert result.logits.shape == (2, math.ceil(ph / 4), math.ceil(pw / 4))
    assert result.logits.dtype == torch.float32 and result.logits.device.type == "cpu"


def test_reset_forgets_everything(model):
    segmenter = Segmenter(model)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 1
    segmenter.step(noise(32, 32), mask)
    segmenter.reset()
    assert segmenter.object_ids == [] and segmenter.memory.empty
    assert not segmenter.step(noise(32, 32)).labels.any()


def test_bad_masks(model):
    segmenter = Segmenter(model)
    with pytest.raises(StmaError, match="mask of size 30x32 does not match the frame size 32x32"):
        segmenter.step(noise(32, 32), np.ones((32, 30), np.uint8))
    too_many = np.arange(64 * 64).reshape(64, 64) % (model.config.num_ids + 2)
    with pytest.raises(StmaError, match=f"at most {model.config.num_ids}"):
        segmenter.step(noise(64, 64), too_many.astype(np.uint8))


def test_processing_size():
    assert processing_size(480, 854, 640) == (360, 640)
    assert processing_size(480, 854, 0) == (480, 854)
    assert processing_size(100, 80, 640) == (100, 80)
    assert processing_size(10, 2000, 100) == (16, 100)
