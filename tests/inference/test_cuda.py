"""The CUDA path: autocast precisions, pinned memory, agreement with the CPU (skipped without CUDA)."""
import numpy as np
import pytest
import torch

from stma_cli.inference.segmenter import Segmenter, SegmenterConfig
from stma_cli.model import STMA, STMAConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _frames(count: int = 6, size=(96, 128)):
    rng = np.random.default_rng(0)
    background = (rng.random((*size, 3)) * 255).astype(np.uint8)
    frames, masks = [], []
    for t in range(count):
        frame = background.copy()
        mask = np.zeros(size, np.uint8)
        frame[20 + t:50 + t, 10 + 2 * t:40 + 2 * t] = (230, 40, 40)
        mask[20 + t:50 + t, 10 + 2 * t:40 + 2 * t] = 1
        frames.append(frame)
        masks.append(mask)
    return frames, masks


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_matches_cpu(precision):
    torch.manual_seed(0)
    model = STMA(STMAConfig.preset("tiny")).eval()
    frames, masks = _frames()
    cpu = Segmenter(model, SegmenterConfig(precision="fp32"))
    cpu_results = [cpu.step(f, masks[0] if i == 0 else None) for i, f in enumerate(frames)]
    gpu = Segmenter(model.to("cuda"), SegmenterConfig(precision=precision))
    gpu_results = [gpu.step(f, masks[0] if i == 0 else None) for i, f in enumerate(frames)]
    for a, b in zip(cpu_results, gpu_results):
        assert b.logits.device.type == "cpu" and b.logits.dtype == torch.float32
        agreement = (a.labels == b.labels).mean()
        assert agreement > (0.999 if precision == "fp32" else 0.98)
