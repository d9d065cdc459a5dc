"""Spatial-temporal multi-level association (STML).

The joint attention over test-frame tokens, reference tokens and object tokens is split into
three cheaper attentions, each a separate module:

- `ObjectSelfAttention`: object tokens attend to each other (objects learn about each other);
- `ReferenceObjectEnhancement`: reference tokens attend to the object tokens of their frame, so
  that they become target-aware;
- `TestReferenceCorrelation`: test tokens attend to the enhanced reference tokens and object
  tokens of every memory frame, carrying target information into the current frame.

An `STMLBlock` holds one level of all three. The reference side (`memorize`) does not depend on the
test frame, so it runs once when a frame enters the memory and its per-level outputs are cached, as
are their keys and values for the test side (`correlation.project_frame`); the test side (`read`)
runs once per frame against that cache.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Pre-norm multi-head cross-attention on `scaled_dot_product_attention`.

    `query_pos` / `key_pos` are added to queries and keys only (not to values).
    `key_mask` (B, Nk) bool marks the keys that may be attended to.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        query_pos: torch.Tensor | None = None,
        key_pos: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.attend(x, *self.project(context, key_pos), query_pos=query_pos, key_mask=key_mask)

    def project(self, context: torch.Tensor, key_pos: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, Nk, C) of `context`: token by token, so the projections of parts of a context,
        concatenated, are those of the whole (what lets memory frames be projected once)."""
        xkv = self.norm_kv(context)
        return self.k(xkv if key_pos is None else xkv + key_pos), self.v(xkv)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_pos: torch.Tensor | None = None,
               key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`x` (B, N, C) attends to projected keys and values (B, Nk, C)."""
        xq = self.norm_q(x)
        q = self.q(xq if query_pos is None else xq + query_pos)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v), attn_mask=mask)
        b, n = x.shape[:2]
        return self.out(out.transpose(1, 2).reshape(b, n, -1))


class ObjectSelfAttention(Attention):
    """Object tokens (B, n*k, C) attend to each other; padded objects are masked out."""

    def forward(self, objects: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(objects, objects, key_mask=valid)


class ReferenceObjectEnhancement(Attention):
    """Reference tokens (B, N, C) attend to the object tokens (B, n*k, C) of the same frame."""

    def forward(  # type: ignore[override]
        self, reference: torch.Tensor, objects: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        return super().forward(reference, objects, query_pos=pos, key_mask=valid)


class TestReferenceCorrelation(Attention):
    """Test tokens (B, N, C) attend to memory tokens: every memory frame's reference tokens, then their
    object tokens, projected once per memory frame (`project_frame`) and concatenated per read.

    `memory_mask` (B, Nk) is False for padded objects.
    """

    def project_frame(self, reference: torch.Tensor, objects: torch.Tensor,
                      pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys and values of one memory frame: of its reference tokens (B, N, C) at their positions `pos`,
        and of its object tokens (B, n*k, C), which have none."""
        return *self.project(reference, pos), *self.project(objects)

    def forward(  # type: ignore[override]
        self,
        test: torch.Tensor,
        pos: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.attend(test, keys, values, query_pos=pos, key_mask=memory_mask)


class FrameSelfAttention(Attention):
    """Patch tokens of one frame attend to each other (feature extraction in the ViT config)."""

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(tokens, tokens, query_pos=pos, key_pos=pos)


class TokenMLP(nn.Module):
    """Pre-norm two-layer MLP for object tokens."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvMLP(nn.Module):
    """Pre-norm MLP for patch tokens with a 3x3 depthwise convolution for spatial context."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, n, _ = x.shape
        h = self.fc1(self.norm(x))
        h = self.dwconv(h.transpose(1, 2).reshape(b, -1, *size)).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(h))


class STMLBlock(nn.Module):
    """One level of spatial-temporal multi-level association."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, frame_self_attention: bool) -> None:
        super().__init__()
        self.frame_attention = FrameSelfAttention(dim, heads) if frame_self_attention else None
        self.object_attention = ObjectSelfAttention(dim, heads)
        self.enhancement = ReferenceObjectEnhancement(dim, heads)
        self.correlation = TestReferenceCorrelation(dim, heads)
        self.patch_mlp = ConvMLP(dim, mlp_ratio)
        self.object_mlp = TokenMLP(dim, mlp_ratio)

    def memorize(
        self,
        reference: torch.Tensor,
        objects: torch.Tensor,
        pos: torch.Tensor,
        size: tuple[int, int],
        object_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference side: (B, N, C) patch tokens and (B, n*k, C) object tokens of one frame."""
        if self.frame_attention is not None:
            reference = reference + self.frame_attention(reference, pos)
        objects = objects + self.object_attention(objects, object_mask)
        objects = objects + self.object_mlp(objects)
        reference = reference + self.enhancement(reference, objects, pos, object_mask)
        reference = reference + self.patch_mlp(reference, size)
        return reference, objects

    def read(
        self,
        test: torch.Tensor,
        pos: torch.Tensor,
        size: tuple[int, int],
        keys: torch.Tensor,
        values: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Test side: (B, N, C) test tokens against this level's projected memory (`correlation.project_frame`)."""
        if self.frame_attention is not None:
            test = test + self.frame_attention(test, pos)
        test = test + self.correlation(test, pos, keys, values, memory_mask)
        return test + self.patch_mlp(test, size)


def sine_position_embedding(height: int, width: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """2-D sine/cosine position embedding, (height*width, dim), coordinates normalised to [0, 1]."""
    quarter = dim // 4
    freqs = torch.exp(torch.arange(quarter, device=device, dtype=torch.float32) * (-math.log(1000.0) / quarter))
    ys = torch.linspace(0, 1, height, device=device)[:, None] * freqs * 2 * math.pi * 8
    xs = torch.linspace(0, 1, width, device=device)[:, None] * freqs * 2 * math.pi * 8
    ys = torch.cat([ys.sin(), ys.cos()], dim=1)[:, None, :].expand(height, width, 2 * quarter)
    xs = torch.cat([xs.sin(), xs.cos()], dim=1)[None, :, :].expand(height, width, 2 * quarter)
    emb = torch.cat([ys, xs], dim=2).reshape(height * width, 4 * quarter)
    return F.pad(emb, (0, dim - 4 * quarter))
