"""A small DAVIS-2017-layout data set whose predictions carry known kinds of error.

Everything is computed from closed-form shapes and integer hashes (no random generator), so the
masks are identical on every machine and NumPy version; `make_expected.py` scores the same files
with an independent implementation. Needs only NumPy and Pillow.

Sequences (name: frames, height x width, objects, what the prediction gets wrong):
* ``shift``: 8 frames, 120x216, 2 objects; object 1 shifted by 1 pixel, object 2 by a growing
  offset, one frame predicted empty.
* ``morph``: 10 frames, 240x427, 3 objects; object 1 shrinking over time, object 2 grown and still predicted while
  it is hidden in the annotation, object 3 leaving through the right border and missing from
  predicted frames 3-6.
* ``noisy``: 12 frames, 480x854, 2 objects; void (255) ring around object 1 in the annotation,
  salt-and-pepper errors, object 2 predicted as its bounding box, ids swapped on frame 7.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SPLIT = "val"
SEQUENCES = {"shift": (8, 120, 216), "morph": (10, 240, 427), "noisy": (12, 480, 854)}


def _ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _shifted(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


def _hash_noise(shape: tuple[int, int], t: int, modulus: int) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy * 7919 + xx * 104729 + t * 1299709) % modulus == 0


def _labels(shape: tuple[int, int], objects: list[np.ndarray]) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    for index, mask in enumerate(objects):
        labels[mask] = index + 1
    return labels


def _shift(t: int) -> tuple[np.ndarray, np.ndarray]:
    shape = SEQUENCES["shift"][1:]
    first = _ellipse(shape, 50 + 2 * t, 60 + 5 * t, 25, 35)
    second = _ellipse(shape, 80, 170 - 4 * t, 20 + t, 18)
    gt = _labels(shape, [first, second])
    pred = _labels(shape, [_shifted(first, 0, 1), _shifted(second, 1 + t // 2, 0)])
    if t == 4:
        pred[:] = 0
    return gt, pred


def _morph(t: int) -> tuple[np.ndarray, np.ndarray]:
    shape = SEQUENCES["morph"][1:]
    first = (60 + 3 * t, 100 + 6 * t, 40, 55)
    second = (170 - 2 * t, 220, 30 + 2 * t, 45)
    third = (120, 330 + 12 * t, 35, 50)
    nothing = np.zeros(shape, dtype=bool)
    gt_second = nothing if t == 5 else _ellipse(shape, *second)
    gt = _labels(shape, [_ellipse(shape, *first), gt_second, _ellipse(shape, *third)])
    shrunk = _ellipse(shape, first[0], first[1], first[2] - t, first[3] - 2 * t)
    grown = _ellipse(shape, second[0], second[1], second[2] + 4, second[3] + 4)
    pred_third = nothing if t in (3, 4, 5, 6) else _ellipse(shape, *third)
    return gt, _labels(shape, [shrunk, grown, pred_third])


def _noisy(t: int) -> tuple[np.ndarray, np.ndarray]:
    shape = SEQUENCES["noisy"][1:]
    first = _ellipse(shape, 200 + 4 * t, 250 + 10 * t, 90, 120)
    ring = _ellipse(shape, 200 + 4 * t, 250 + 10 * t, 94, 124) & ~_ellipse(shape, 200 + 4 * t, 250 + 10 * t, 86, 116)
    second = _ellipse(shape, 330, 640 - 8 * t, 70, 60) & ~first
    gt = _labels(shape, [first, second])
    gt[ring & ~second] = 255

    rows = np.flatnonzero(second.any(axis=1))
    cols = np.flatnonzero(second.any(axis=0))
    box = np.zeros(shape, dtype=bool)
    box[rows[0] + 3 : rows[-1] - 2, cols[0] + 3 : cols[-1] - 2] = True
    pred_first = first ^ _hash_noise(shape, t, 1009)
    pred_second = box & ~pred_first
    objects = [pred_second, pred_first] if t == 7 else [pred_first, pred_second]
    return gt, _labels(shape, objects)


_MAKERS = {"shift": _shift, "morph": _morph, "noisy": _noisy}


def frame_pair(name: str, t: int) -> tuple[np.ndarray, np.ndarray]:
    """(annotation, prediction) label maps of frame `t` of sequence `name`."""
    return _MAKERS[name](t)


def _save_png(labels: np.ndarray, path: Path) -> None:
    image = Image.fromarray(labels, mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [224, 224, 192] * 252)
    image.save(path)


def write_dataset(root: Path) -> Path:
    """Write the data set under `root` (DAVIS layout) and its predictions under `root/results`."""
    root = Path(root)
    imagesets = root / "ImageSets" / "2017"
    imagesets.mkdir(parents=True)
    (imagesets / f"{SPLIT}.txt").write_text("".join(f"{name}\n" for name in SEQUENCES))
    for name, (frames, height, width) in SEQUENCES.items():
        images = root / "JPEGImages" / "480p" / name
        annotations = root / "Annotations" / "480p" / name
        results = root / "results" / name
        for folder in (images, annotations, results):
            folder.mkdir(parents=True)
        frame = Image.new("RGB", (width, height), (90, 110, 130))
        for t in range(frames):
            gt, pred = frame_pair(name, t)
            frame.save(images / f"{t:05d}.jpg")
            _save_png(gt, annotations / f"{t:05d}.png")
            _save_png(pred, results / f"{t:05d}.png")
    return root / "results"
