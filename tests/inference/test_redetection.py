"""The shipped model on a short clip with a full occlusion and an exit: while an object is hidden or out
of view it gets an empty mask, and it is found again when it comes back (the exit's object on the
other side of the frame, far from where the previous frames had it)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stma_cli.hub import load_model
from stma_cli.inference.segmenter import Segmenter

FRAMES, HEIGHT, WIDTH = 32, 192, 256
HIDDEN = range(8, 15)  # frames on which the occluder covers the disc completely
OUT = range(10, 20)  # frames on which the square is out of view


def _smooth(rng: np.random.Generator, cells: tuple[int, int], channels: int = 3) -> np.ndarray:
    coarse = torch.from_numpy(rng.random((1, channels, *cells), dtype=np.float32))
    return F.interpolate(coarse, size=(HEIGHT, WIDTH), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()


def occlusion_clip() -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) uint8 frames and (T, H, W) labels: object 1, a striped disc drifting right, is fully
    covered by a wide slab that slides over it on frames 8-14 and off again; object 2, a checkered
    square, leaves across the right side, is out of view on frames 10-19, and comes back across the left."""
    rng = np.random.default_rng(7)
    background = 0.35 + 0.3 * _smooth(rng, (6, 8)) + 0.05 * rng.random((HEIGHT, WIDTH, 3))
    ys, xs = np.mgrid[:HEIGHT, :WIDTH]
    frames = np.empty((FRAMES, HEIGHT, WIDTH, 3), np.uint8)
    labels = np.zeros((FRAMES, HEIGHT, WIDTH), np.uint8)
    for t in range(FRAMES):
        image = background.copy()
        cx, cy = 70 + 2 * t, 96
        disc = (xs - cx) ** 2 + (ys - cy) ** 2 < 26 ** 2
        stripes = ((xs + ys) // 6) % 2 == 0
        image[disc] = np.where(stripes[disc, None], [0.9, 0.2, 0.1], [0.95, 0.85, 0.2])
        sx = 150 + 14 * t if t < OUT.stop else -20 + 10 * (t - OUT.stop)
        square = (abs(xs - sx) < 22) & (abs(ys - 50) < 22)
        checks = ((xs // 8 + ys // 8) % 2 == 0)
        image[square] = np.where(checks[square, None], [0.1, 0.3, 0.8], [0.9, 0.9, 0.95])
        # The slab slides in from the left, parks over the disc on HIDDEN, then leaves downwards.
        if t < HIDDEN.start:
            left, top = cx - 45 - 14 * (HIDDEN.start - t), cy - 45
        elif t in HIDDEN:
            left, top = cx - 45, cy - 45
        else:
            left, top = cx - 45, cy - 45 + 16 * (t - HIDDEN.stop + 1)
        slab = (xs >= left) & (xs < left + 90) & (ys >= top) & (ys < top + 90)
        image[slab] = [0.35, 0.55, 0.4]
        frames[t] = (np.clip(image, 0, 1) * 255).astype(np.uint8)
        labels[t][disc & ~slab] = 1
        labels[t][square & ~slab] = 2
    return frames, labels


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_a_hidden_object_gets_no_mask_and_is_found_again() -> None:
    frames, labels = occlusion_clip()
    assert all((labels[t] == 1).sum() == 0 for t in HIDDEN) and (labels[HIDDEN.stop + 3] == 1).sum() > 1000
    assert all((labels[t] == 2).sum() == 0 for t in OUT) and (labels[OUT.stop + 4] == 2).sum() > 1500
    model, _ = load_model()
    segmenter = Segmenter(model)
    predicted = np.stack([segmenter.step(frame, labels[0] if t == 0 else None).labels
                          for t, frame in enumerate(frames)])
    for t in HIDDEN:
        assert (predicted[t] == 1).sum() == 0, f"frame {t}: the hidden disc still has a mask"
    for t in OUT:
        assert (predicted[t] == 2).sum() == 0, f"frame {t}: the square out of view still has a mask"
    disc_back = range(HIDDEN.stop + 3, FRAMES)  # fully out from under the slab
    assert np.mean([_iou(predicted[t] == 1, labels[t] == 1) for t in disc_back]) > 0.6
    square_back = range(OUT.stop + 4, FRAMES)  # fully back in view
    assert np.mean([_iou(predicted[t] == 2, labels[t] == 2) for t in square_back]) > 0.6
