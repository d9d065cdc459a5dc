"""Local mask propagation: the previous frame's masks carried to the current frame by local matching.

Global attention over every memory patch finds an object wherever something looks like it, which
confuses similar objects and leaks onto similar-looking background. Objects move little between two
consecutive frames, so each stride-16 patch of the current frame also compares its key with the keys
of the previous frame's patches in a (2r+1) x (2r+1) window around the same place; the softmax of those
similarities weights the previous frame's per-object coverage. The result is a coarse per-object
prior, local by construction, that the prediction module refines (`STMA.segment`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LocalPropagation(nn.Module):
    """Per-object prior (B, 1+n, h, w) from local matching against the previous frame.

    `weight` scales the log-prior that is added to the final logits. It starts at one: the softmax
    of logits plus log-prior is the network's probabilities times the prior, renormalised, and
    training then learns how far to trust the prior.
    """

    def __init__(self, dim: int, key_dim: int, radius: int) -> None:
        super().__init__()
        self.radius = radius
        self.norm = nn.LayerNorm(dim)
        self.key = nn.Linear(dim, key_dim)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(10.0)))  # scale of the cosine similarity
        self.weight = nn.Parameter(torch.ones(()))

    def keys(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Unit-length matching keys (B, key_dim, h, w) from stride-16 tokens (B, h*w, C)."""
        keys = F.normalize(self.key(self.norm(tokens)), dim=-1)
        return keys.transpose(1, 2).reshape(keys.shape[0], -1, *grid)

    def forward(self, keys: torch.Tensor, previous_keys: torch.Tensor, previous_coverage: torch.Tensor) -> torch.Tensor:
        """Prior (B, m, h, w) from keys (B, d, h, w) and the previous frame's keys and coverage (B, m, h, w)."""
        b, d, h, w = keys.shape
        size = 2 * self.radius + 1
        windows = F.unfold(previous_keys, size, padding=self.radius).view(b, d, size * size, h * w)
        # A broadcast product and a sum: einsum turns this into many tiny matrix products, 10x slower on CPU.
        similarity = (keys.flatten(2)[:, :, None] * windows).sum(1) * self.log_temperature.exp()
        inside = F.unfold(keys.new_ones(1, 1, h, w), size, padding=self.radius) > 0  # (1, k, h*w)
        weights = similarity.masked_fill(~inside, float("-inf")).softmax(dim=1)
        m = previous_coverage.shape[1]
        coverage = F.unfold(previous_coverage, size, padding=self.radius).view(b, m, size * size, h * w)
        return (coverage * weights[:, None]).sum(2).view(b, m, h, w)

    def log_prior(self, prior: torch.Tensor, scale: int) -> torch.Tensor:
        """The weighted log-prior at `scale` times the prior's resolution, to add to logits."""
        prior = F.interpolate(prior, scale_factor=scale, mode="bilinear", align_corners=False)
        return self.weight * torch.log(prior.clamp(min=1e-2))
