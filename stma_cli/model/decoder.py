"""Prediction: an upsampling decoder, ID association and soft aggregation.

The decoder turns the multi-level target-aware test tokens (stride 16) into a per-pixel embedding
at stride 4, using the encoder's stride-8 and stride-4 features on the way up. Objects are then
separated by ID association: the logit of object j at a pixel is the similarity of the pixel's
embedding to object j's ID embedding; the background has an ID of its own. A softmax over
background + n objects (soft aggregation) gives each pixel one label.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class UpBlock(nn.Module):
    """x2 bilinear upsampling, fused with a skip feature, then refined."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(cin, cout, 1)
        self.skip = nn.Conv2d(skip, cout, 1)
        self.refine = ResBlock(cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.reduce(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine(x + self.skip(skip))


class Decoder(nn.Module):
    """Multi-level stride-16 tokens + stride-16 priors + stride-8/4 skips -> per-pixel embedding at stride 4.

    Two ID maps at stride 16 enter through zero-initialised projections: the prior (where each object
    is expected: propagated from the previous frame, or read from memory for the objects the previous
    frame does not hold) and the memory readout alone, so that the decoder can learn how the two differ.
    """

    def __init__(self, in_channels: int, skip_channels: tuple[int, int], widths: tuple[int, int, int], embed_dim: int,
                 prior_channels: int) -> None:
        super().__init__()
        c4, c8 = skip_channels
        w16, w8, w4 = widths
        self.fuse = nn.Sequential(nn.Conv2d(in_channels, w16, 1), ResBlock(w16))  # [0] projects, [1] refines
        self.prior = nn.Conv2d(prior_channels, w16, 1)
        self.readout = nn.Conv2d(prior_channels, w16, 1, bias=False)
        for weight in (self.prior.weight, self.prior.bias, self.readout.weight):
            nn.init.zeros_(weight)
        self.up8 = UpBlock(w16, c8, w8)
        self.up4 = UpBlock(w8, c4, w4)
        self.embed = nn.Conv2d(w4, embed_dim, 1)

    def forward(self, x16: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor, prior: torch.Tensor,
                readout: torch.Tensor) -> torch.Tensor:
        x = self.fuse[1](self.fuse[0](x16) + self.prior(prior) + self.readout(readout))
        x = self.up4(self.up8(x, f8), f4)
        return self.embed(F.relu(x))


class IDAssociation(nn.Module):
    """Per-object logits from pixel embeddings (B, D, H, W) and ID embeddings (B, 1+n, C)."""

    def __init__(self, id_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(id_dim, embed_dim)
        self.scale = embed_dim**-0.5

    def forward(self, embedding: torch.Tensor, id_embeddings: torch.Tensor) -> torch.Tensor:
        keys = self.project(id_embeddings)
        return torch.einsum("bdhw,bkd->bkhw", embedding, keys) * self.scale


def soft_aggregate(logits: torch.Tensor) -> torch.Tensor:
    """Probabilities over background + n objects: each pixel's shares sum to one."""
    return logits.softmax(dim=1)


def label_map(logits: torch.Tensor) -> torch.Tensor:
    """(B, H, W): the channel of the largest of (B, C, H, W) logits. Channels-last makes the reduction run over
    adjacent values: on the CPU many times faster than over the channel stride (1 ms against 0.06 ms for 3 channels
    at 160x92), with the same result."""
    return logits.contiguous(memory_format=torch.channels_last).argmax(1)
