"""Small YouTube-VOS-layout data set and image writers shared by the evaluation tests."""
import json
from pathlib import Path

import numpy as np
from PIL import Image


def png(labels, path: Path) -> None:
    """Write object ids as a palette PNG (full 256-colour palette, so every id survives)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [255, 255, 255] * 253)
    image.save(path)


def jpg(path: Path, size=(12, 8)) -> None:
    """Write a black JPEG frame of `size` (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)


def make_youtube(root: Path) -> Path:
    """Video 'v1': object 1 from frame 00000, object 2 appearing at 00010; video 'v0': one object."""
    split = root / "valid"
    for t in range(0, 20, 5):
        jpg(split / "JPEGImages" / "v1" / f"{t:05d}.jpg")
    for t in range(0, 10, 5):
        jpg(split / "JPEGImages" / "v0" / f"{t:05d}.jpg")
    png(np.ones((8, 12)), split / "Annotations" / "v1" / "00000.png")
    png(np.full((8, 12), 2), split / "Annotations" / "v1" / "00010.png")
    png(np.ones((8, 12)), split / "Annotations" / "v0" / "00000.png")
    meta = {
        "videos": {
            "v1": {"objects": {"1": {"frames": ["00000", "00005", "00010"]}, "2": {"frames": ["00010", "00015"]}}},
            "v0": {"objects": {"1": {"frames": ["00000", "00005"]}}},
        }
    }
    (split / "meta.json").write_text(json.dumps(meta))
    return root
