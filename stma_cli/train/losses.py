"""Training losses: hard-pixel cross-entropy plus soft Dice on soft-aggregated logits; object presence."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hard_pixel_cross_entropy(logits: torch.Tensor, target: torch.Tensor, top_fraction: float) -> torch.Tensor:
    """Cross-entropy over the `top_fraction` hardest pixels of each sample (bootstrapped CE)."""
    loss = F.cross_entropy(logits, target, reduction="none").flatten(1)
    if top_fraction >= 1.0:
        return loss.mean()
    k = max(1, int(loss.shape[1] * top_fraction))
    return loss.topk(k, dim=1, sorted=False).values.mean()


def soft_dice(probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean (1 - soft Dice) over the real objects; probs (B, 1+n, H, W), target labels (B, H, W)."""
    n = probs.shape[1] - 1
    onehot = F.one_hot(target, n + 1).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
    p = probs[:, 1:].flatten(2)
    g = onehot.flatten(2)
    dice = (2 * (p * g).sum(-1) + 1) / (p.sum(-1) + g.sum(-1) + 1)
    return ((1 - dice) * valid).sum() / valid.sum().clamp(min=1)


def vos_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, top_fraction: float) -> dict[str, torch.Tensor]:
    """Loss terms for one frame: logits (B, 1+n, H, W), target (B, H, W) in 0..n, valid (B, n)."""
    ce = hard_pixel_cross_entropy(logits.float(), target, top_fraction)
    dice = soft_dice(logits.float().softmax(1), target, valid.float())
    return {"loss": ce + dice, "ce": ce, "dice": dice}


def presence_loss(presence: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of presence logits (B, n) against whether each object shows in the labels
    (B, H, W) at all; padded objects (valid False) are left out."""
    n = presence.shape[1]
    shown = torch.stack([(target == k + 1).flatten(1).any(1) for k in range(n)], dim=1).to(presence.dtype)
    loss = F.binary_cross_entropy_with_logits(presence.float(), shown.float(), reduction="none")
    return (loss * valid).sum() / valid.sum().clamp(min=1)
