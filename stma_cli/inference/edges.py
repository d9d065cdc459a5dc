"""Labels at the input size that follow the frame's colour edges, from logits at stride 4.

Bilinear upsampling of stride-4 logits rounds an object's border off and cuts its narrow parts
short: a part a few pixels wide is a fraction of one stride-4 cell, and its logits are averaged with
the background's around it. Near the borders only (a band one stride-4 cell wide on each side of
where the coarse labels change), each background pixel weighs the background against the likeliest
object there by a joint bilateral average of its neighbours' probabilities within `radius` pixels:
neighbours of a similar colour count more, so an object grows up to the colour edge nearby. Twice,
so that the average reaches across the band. An object's own pixels stay its own (taking them away
lost the thin parts of real objects, whose colour the background nearby often shares), pixels away
from the borders keep the bilinear labels, and no object appears where the coarse labels have none
of it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

COLOUR_SIGMA = 15.0  # RGB distance (0-255) at which a neighbour's weight falls to exp(-1/2)
SPACE_SIGMA = 3.0  # pixels
ROUNDS = 2


def edge_labels(full: torch.Tensor, coarse: torch.Tensor, image: torch.Tensor, radius: int) -> torch.Tensor:
    """(H, W) channel indices for the (H, W, 3) uint8 `image`: the argmax of `full`, (1+K, H', W') logits
    upsampled from the stride-4 logits `coarse` (1+K, h, w) and overhanging the image by a few pixels at most
    (`segmenter.frame_result`), with the background pixels near `coarse`'s borders given to the likeliest object
    there where a colour-weighted average over `radius` pixels favours it."""
    height, width = image.shape[:2]
    overhanging, full = full.shape[1:], full[:, :height, :width]
    labels = full.argmax(0)
    if radius <= 0:
        return labels
    band = _border_band(coarse, overhanging)[:height, :width]
    rows, cols = torch.nonzero(band & (labels == 0), as_tuple=True)
    if not len(rows):
        return labels
    steps = torch.arange(-radius, radius + 1, device=full.device)
    dy, dx = (offset.flatten() for offset in torch.meshgrid(steps, steps, indexing="ij"))
    pixels = rows * width + cols  # (N,) background pixels of the band
    neighbours = (rows[:, None] + dy).clamp(0, height - 1) * width + (cols[:, None] + dx).clamp(0, width - 1)
    colours = image.reshape(-1, 3).float()
    distance = (colours[neighbours] - colours[pixels][:, None]).square().sum(-1)  # (N, M)
    weights = torch.exp(-distance / (2 * COLOUR_SIGMA ** 2) - (dy.square() + dx.square()) / (2 * SPACE_SIGMA ** 2))
    weights = weights / weights.sum(1, keepdim=True)
    probs = full.float().softmax(0).reshape(full.shape[0], -1)
    # Each pixel weighs the background against one object, the likeliest there: the cost does not grow with the
    # number of objects.
    candidate = probs[1:, pixels].argmax(0) + 1  # (N,)
    for _ in range(ROUNDS):
        background = (probs[0, neighbours] * weights).sum(-1)
        chosen = (probs[candidate[:, None], neighbours] * weights).sum(-1)
        probs[0, pixels], probs[candidate, pixels] = background, chosen
    labels = labels.flatten()
    labels[pixels] = torch.where(chosen > background, candidate, 0)
    return labels.reshape(height, width)


def _border_band(coarse: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Bool of `size`: the pixels of the stride-4 cells that have a cell of another label among their 8
    neighbours, with the cells stretched onto `size` as the upsampling to it stretches them."""
    labels = coarse.argmax(0)[None, None].float()
    changes = F.max_pool2d(labels, 3, 1, 1) != -F.max_pool2d(-labels, 3, 1, 1)
    return F.interpolate(changes.float(), size=tuple(size), mode="nearest")[0, 0] > 0
