"""Inference settings. Kept free of torch, so that the command line shows their defaults without loading it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SegmenterConfig:
    """Inference settings (same names as the CLI flags)."""

    mem_size: int = 20  # the annotated frame, up to 18 working frames (the older pooled) and the previous frame
    mem_every: int = 5
    mem_full: int = 4  # the newest working frames kept at full resolution; older ones are pooled 2x2
    max_side: int = 640  # longest side the model sees; 0 keeps the input size
    precision: str = "auto"
