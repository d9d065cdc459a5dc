"""Thin parts kept at stride 4: label propagation from the given masks on the encoder's ImageNet features.

The decoder learns where each object is at stride 16 only, so a part a few pixels wide (a bicycle's
fork, a ring's rim, a limb), which a patch mostly shows as background, is lost on the first frames and
never comes back. Label propagation on the frozen ImageNet features keeps such parts: each stride-8 cell
takes the labels of its best-matching cells nearby in the frames whose masks were given.

This rule, applied at inference only, lets that propagation add pixels to an object where the network
says background, near the object: within `band` cells of the object's mask on this frame or on the
previous frame (so that a part kept once is kept on), and only where the cell's matches are sure. It
never removes a pixel, never moves one from an object to another, and never gives a mask to an object
that the network does not show on the frame (hidden, out of view, or left behind at a cut).

What it reads is the thin parts of the given masks only (`thin_parts`), never predicted frames: a
prediction's own errors (background that looks like the object) would grow from frame to frame, and the
given outline of an object's wide parts would widen the object once it has shrunk.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stma_cli.model.decoder import label_map

LABEL_STRIDE = 4  # the labels' grid: the logits' (keys are at stride 8, the encoder's f8)
TOP_K = 10
TEMPERATURE = 0.07
"""Each cell reads its `TOP_K` best matches, weighted by a softmax of cosine / `TEMPERATURE`: the values of
the label-propagation protocol (`stma_cli.evaluation.propagation`)."""
THIN = 2
"""A part is thin where an opening by a square of 2 * THIN + 1 stride-4 pixels (20 px) removes it."""
MIN_MATCH = 0.8
"""A pixel is added only where its cell's matches are sure: their softmax-weighted cosine at least this. Without
it, background that looks like the object (a dark door where a walker in dark clothes stood on the annotated
frame) joins the object."""


@dataclass
class FineMemory:
    """A memory frame's background + object labels at stride 4 (B, 1+n, H/4, W/4) and, for a frame with given
    masks, its stride-8 matching keys (B, C, H/8, W/8) and background + the objects' thin parts at stride 4
    (`thin_parts`). A matched cell brings the layout of its 2x2 stride-4 labels, so that a part narrower than
    a cell keeps its place in it."""

    labels: torch.Tensor
    keys: torch.Tensor | None = None
    parts: torch.Tensor | None = None


def fine_keys(f8: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Unit-length stride-8 keys (B, c8 + c16, H/8, W/8): the stride-8 features and the stride-16 part of the
    stride-16 matching keys (`encoder_keys`: B, c8 + c16, h, w), upsampled, each L2-normalised."""
    coarse = F.interpolate(keys[:, f8.shape[1]:].float(), size=f8.shape[-2:], mode="bilinear", align_corners=False)
    both = torch.cat([F.normalize(f8.float(), dim=1), F.normalize(coarse, dim=1)], dim=1)
    return (both * math.sqrt(0.5)).to(keys.dtype)


def fine_labels(masks: torch.Tensor) -> torch.Tensor:
    """Background + object shares (B, 1+n, H/4, W/4) of each stride-4 pixel from object masks (B, n, H, W),
    H and W multiples of 8."""
    objects = F.avg_pool2d(masks.float(), LABEL_STRIDE)
    return torch.cat([(1 - objects.sum(1, keepdim=True)).clamp(min=0), objects], dim=1)


def refine(logits: torch.Tensor, keys: torch.Tensor, given: list[FineMemory], previous: torch.Tensor | None,
           radius: int, band: int) -> torch.Tensor:
    """Logits (B, 1+n, H/4, W/4) with pixels added to objects near their masks where label propagation from
    the `given` frames (within `radius` stride-8 cells) gives them the object; `keys` (B, C, H/8, W/8) of the
    frame, `previous` the previous frame's labels (B, 1+n, H/4, W/4) or None.

    A pixel changes only where the network's label is background, propagation's label is an object that
    the network shows on the frame, the object's mask here or on the previous frame lies within `band`
    cells, and the cell's matches are sure: there its logits become the log of propagation's shares. Every
    other pixel keeps the network's logits.
    """
    probs = logits.float().softmax(1)
    out = []
    for b in range(logits.shape[0]):
        owner = label_map(probs[b:b + 1])[0]
        shown = _object_masks(owner[None], probs.shape[1])[0]  # (n, H/4, W/4)
        if previous is not None:
            masks = torch.maximum(shown, _object_masks(label_map(previous[b:b + 1]), probs.shape[1])[0])
        else:
            masks = shown
        masks = masks * (shown.flatten(1).amax(1) > 0)[:, None, None]
        objects = F.max_pool2d(masks[None], 2)  # (1, n, H/8, W/8): cells holding some of the object
        near = F.max_pool2d(objects, 2 * band + 1, stride=1, padding=band)[0] > 0
        thin = torch.stack([F.max_pool2d(m.parts[b:b + 1, 1:], 2).amax(1) for m in given]).amax(0)  # (1, H/8, W/8)
        reach = F.max_pool2d(thin[None], 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0
        cells = near.any(0) & reach  # elsewhere no match can bring a thin part
        if not cells.any():
            out.append(logits[b])
            continue
        fine, sure = F.pixel_unshuffle(probs[b:b + 1], 2)[0], torch.zeros_like(near[0], dtype=probs.dtype)
        parts = [(m.keys[b], F.pixel_unshuffle(m.parts[b:b + 1], 2)[0]) for m in given]
        read, match = _propagate(keys[b], parts, cells, radius)
        fine[:, cells], sure[cells] = read.to(fine.dtype), (match >= MIN_MATCH).to(fine.dtype)
        fine = F.pixel_shuffle(fine[None], 2)[0]  # (1+n, H/4, W/4)
        sure = F.interpolate(sure[None, None], size=probs.shape[-2:])[0, 0] > 0
        label = label_map(fine[None])[0]
        allowed = F.interpolate(F.pad(near, (0, 0, 0, 0, 1, 0))[None].float(), size=probs.shape[-2:])[0] > 0
        grant = (owner == 0) & (label > 0) & allowed.gather(0, label[None])[0] & sure
        out.append(torch.where(grant, fine.clamp(min=1e-4).log().to(logits.dtype), logits[b]))
    return torch.stack(out)


def thin_parts(labels: torch.Tensor) -> torch.Tensor:
    """Background + the objects' thin parts (B, 1+n, H/4, W/4) of stride-4 labels (B, 1+n, H/4, W/4): the pixels of
    each object's mask that an opening by a square of 2 * THIN + 1 pixels removes (parts narrower than about a
    patch). The rest of an object is the network's to follow."""
    objects = _object_masks(label_map(labels), labels.shape[1])
    size = 2 * THIN + 1
    opened = F.max_pool2d(-F.max_pool2d(-objects, size, stride=1, padding=THIN), size, stride=1, padding=THIN)
    thin = objects * (1 - opened)
    return torch.cat([1 - thin.sum(1, keepdim=True), thin], dim=1)


def _object_masks(owner: torch.Tensor, channels: int) -> torch.Tensor:
    """The objects' masks (B, n, H, W) of a label map (B, H, W) over background + n objects (`channels` = 1+n)."""
    return F.one_hot(owner, channels).permute(0, 3, 1, 2)[:, 1:].float()


def _propagate(keys: torch.Tensor, memory: list[tuple[torch.Tensor, torch.Tensor]], cells: torch.Tensor,
               radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (L, Nc) of the frame's `cells` (H/8, W/8 bool, Nc true) read from the memory frames' (keys
    (C, H/8, W/8), labels (L, H/8, W/8)) within `radius` cells, and how sure each read is (Nc,): the softmax-
    weighted cosine of its matches. Only the box around the cells is compared."""
    ys, xs = cells.nonzero(as_tuple=True)
    height, width = cells.shape
    top, bottom = max(int(ys.min()) - radius, 0), min(int(ys.max()) + radius + 1, height)
    left, right = max(int(xs.min()) - radius, 0), min(int(xs.max()) + radius + 1, width)
    box_y, box_x = torch.meshgrid(torch.arange(top, bottom, device=keys.device),
                                  torch.arange(left, right, device=keys.device), indexing="ij")
    far = (ys[:, None] - box_y.flatten()[None]).abs().maximum((xs[:, None] - box_x.flatten()[None]).abs()) > radius
    query = keys[:, ys, xs].T.float()  # (Nc, C)
    similarity, labels = [], []
    for memory_keys, memory_labels in memory:
        box = memory_keys[:, top:bottom, left:right].flatten(1).float()  # (C, M)
        similarity.append((query @ box).masked_fill(far, float("-inf")))
        labels.append(memory_labels[:, top:bottom, left:right].flatten(1).float())
    similarity, labels = torch.cat(similarity, 1), torch.cat(labels, 1)  # (Nc, mM), (1+n, mM)
    best, index = similarity.topk(min(TOP_K, similarity.shape[1]), dim=1)
    weights = (best / TEMPERATURE).softmax(1)  # every cell has its own place in its window: never all -inf
    return (labels.T[index] * weights[..., None]).sum(1).T, (best.clamp(min=-1) * weights).sum(1)
