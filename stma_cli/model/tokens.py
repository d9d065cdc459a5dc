"""Object tokens and ID embeddings.

Every object carries an ID (an index into a learnable table; index 0 is the background), so that
all objects go through one forward pass and stay distinct. An object's ID follows the object, not
its position in the batch, which makes the network treat objects as a set.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BACKGROUND_ID = 0


class IDEmbedding(nn.Module):
    """A table of `num_ids` object embeddings plus one background embedding."""

    def __init__(self, num_ids: int, dim: int) -> None:
        super().__init__()
        self.num_ids = num_ids
        self.table = nn.Embedding(num_ids + 1, dim)
        nn.init.orthogonal_(self.table.weight)
        with torch.no_grad():
            self.table.weight.mul_(math.sqrt(dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of `ids` (any shape of indices in [0, num_ids])."""
        return self.table(ids)

    def id_map(self, masks: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Per-patch ID mixture, (B, N, C), from soft object masks (B, n, N) and ids (B, n).

        Each patch gets the sum of its objects' embeddings weighted by their coverage, plus the
        background embedding weighted by what is left.
        """
        background = (1 - masks.sum(1)).clamp(min=0)
        return self.object_map(masks, ids) + background[..., None] * self.table.weight[BACKGROUND_ID]

    def object_map(self, masks: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """`id_map` without the background: the objects' embeddings weighted by their coverage, (B, N, C)."""
        return torch.einsum("bnp,bnc->bpc", masks, self.table(ids))


class ObjectTokenizer(nn.Module):
    """Pools `tokens_per_object` tokens per object from frame features under the object's mask.

    Each token has a learned query; it attends to the patches of the frame with the log of the
    object's mask coverage as an attention bias, so only (mostly) the object's own patches count.
    The object's ID embedding is added to each of its tokens, and so is a learned "absent" embedding
    in the measure that the frame does not show the object (hidden or out of view), so that memory
    frames without the object say so instead of offering tokens pooled from nowhere.
    """

    def __init__(self, dim: int, tokens_per_object: int) -> None:
        super().__init__()
        self.tokens_per_object = tokens_per_object
        self.queries = nn.Parameter(torch.randn(tokens_per_object, dim) * dim**-0.5)
        self.norm = nn.LayerNorm(dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.slot = nn.Parameter(torch.zeros(tokens_per_object, dim))
        self.absent = nn.Parameter(torch.zeros(dim))

    def forward(self, features: torch.Tensor, masks: torch.Tensor, id_embeddings: torch.Tensor) -> torch.Tensor:
        """features (B, N, C), masks (B, n, N) in [0, 1], id_embeddings (B, n, C) -> (B, n*k, C)."""
        b, n, _ = masks.shape
        x = self.norm(features)
        keys = self.key(x)[:, None].expand(b, n, -1, -1)
        values = self.value(x)[:, None].expand(b, n, -1, -1)
        queries = self.queries[None, None].expand(b, n, -1, -1)
        bias = torch.log(masks.clamp(min=1e-4))[:, :, None, :].to(queries.dtype)
        pooled = F.scaled_dot_product_attention(queries, keys, values, attn_mask=bias)  # (B, n, k, C)
        absence = 1 - visibility(masks)
        tokens = pooled + self.slot + id_embeddings[:, :, None, :] + absence[:, :, None, None] * self.absent
        return tokens.reshape(b, n * self.tokens_per_object, -1)


def visibility(masks: torch.Tensor, tau: float = 0.25) -> torch.Tensor:
    """How present each object is, (B, n) in [0, 1), from its coverage (B, n, N) of the patches.

    mass / (mass + tau) with mass the object's area in patches: 0 for an absent object, 0.8 for one patch.
    """
    mass = masks.sum(-1)
    return mass / (mass + tau)
