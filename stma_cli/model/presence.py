"""Object presence: does each object appear in the current frame at all?

A per-pixel decoder decides locally; whether an object is in the frame is a global question, and the
one that matters after an occlusion, an exit or a shot change. Each object gets a query (its tokens
in memory, summarised over the memory frames that show it), which attends to the current frame's
target-aware tokens; a small MLP turns the result into a presence logit. The logit is trained against
the object's visibility, and its log-sigmoid is added to the object's logits: a hidden object gets no
mask, a present one is left unchanged (log-sigmoid of a confident logit is about 0).
"""
from __future__ import annotations

import torch
from torch import nn

from stma_cli.model.association import Attention

INITIAL_LOGIT = 4.0
"""Presence logit of an untrained head: sigmoid 0.98, so new weights start as if every object were present."""


class ObjectPresence(nn.Module):
    """Presence logits (B, n) from object queries (B, n, C) and the frame's tokens (B, N, C)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.attention = Attention(dim, heads)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.constant_(self.head[-1].bias, INITIAL_LOGIT)

    def forward(self, queries: torch.Tensor, frame: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = queries + self.attention(queries, frame, key_pos=pos)
        return self.head(x).squeeze(-1)


def object_queries(objects: list[torch.Tensor], visibility: list[torch.Tensor], tokens_per_object: int) -> torch.Tensor:
    """One query per object (B, n, C): its tokens averaged over tokens and over memory frames, weighted
    by how visible the object is in each frame.

    objects: per memory frame (B, n*k, C); visibility: per memory frame (B, n) in [0, 1].
    """
    stacked = torch.stack([o.unflatten(1, (-1, tokens_per_object)).mean(2) for o in objects])  # (m, B, n, C)
    weights = torch.stack(visibility)[..., None] + 1e-3  # (m, B, n, 1): a frame that shows the object counts
    return (stacked * weights).sum(0) / weights.sum(0)
