"""Masks in the formats other tools read: COCO run-length encoding, and one binary PNG per object.

    masks.json           COCO: one image per frame, one annotation per object present on it, its
                         segmentation a compressed RLE (pycocotools, FiftyOne and CVAT decode it), its
                         category the object id
    masks/<id>/NAME.png  one black-and-white PNG per object and frame (255 inside the object)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stma_cli.io.atomic import atomic_path, atomic_write_text

COCO_FILE = "masks.json"


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO's compressed RLE of a boolean (H, W) mask: {"size": [H, W], "counts": str}.

    Runs are counted down the columns (Fortran order) and start with background. Each run after the
    second is stored as its difference to the run two before it, in 5-bit groups with a continuation
    bit, offset by 48 into printable characters.
    """
    height, width = mask.shape
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs  # the first run is background, even when empty
    text = []
    for index, run in enumerate(runs):
        value = run - runs[index - 2] if index > 2 else run
        more = True
        while more:
            chunk = value & 0x1F
            value >>= 5
            more = not ((value == 0 and not chunk & 0x10) or (value == -1 and chunk & 0x10))
            text.append(chr(chunk + 48 + (0x20 if more else 0)))
    return {"size": [height, width], "counts": "".join(text)}


def _bbox(mask: np.ndarray) -> list[int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


class CocoWriter:
    """Collects each frame's objects as COCO annotations; `close` writes masks.json atomically."""

    def __init__(self, path: str | Path, size: tuple[int, int], object_ids: list[int]) -> None:
        self.path = Path(path)
        self.width, self.height = size
        self.object_ids = list(object_ids)
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []

    def write(self, index: int, name: str, labels: np.ndarray) -> None:
        """Frame `index` (file stem `name`): one annotation per object present."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": f"{name}.png", "frame_index": index,
                            "width": self.width, "height": self.height})
        for object_id in self.object_ids:
            mask = labels == object_id
            area = int(mask.sum())
            if area:
                self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id,
                                         "category_id": object_id, "object_id": object_id,
                                         "segmentation": rle_encode(mask), "area": area, "bbox": _bbox(mask),
                                         "iscrowd": 0})

    def close(self) -> None:
        """Write masks.json."""
        categories = [{"id": object_id, "name": f"object {object_id}"} for object_id in self.object_ids]
        data = {"images": self.images, "annotations": self.annotations, "categories": categories}
        atomic_write_text(self.path, json.dumps(data, separators=(",", ":")) + "\n")


def write_object_masks(folder: str | Path, name: str, labels: np.ndarray, object_ids: list[int]) -> None:
    """One binary PNG per object, `folder/<id>/<name>.png`, each written atomically."""
    for object_id in object_ids:
        target = Path(folder) / str(object_id) / f"{name}.png"
        target.parent.mkdir(exist_ok=True)
        with atomic_path(target) as tmp:
            Image.fromarray(np.where(labels == object_id, 255, 0).astype(np.uint8)).save(tmp, format="PNG",
                                                                                        optimize=False)
