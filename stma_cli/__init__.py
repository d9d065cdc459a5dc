"""stma: semi-supervised video object segmentation with STMA.

The public API (imported on first use, so that `stma --help` stays fast):

    from stma_cli import load_model, Segmenter, SegmenterConfig, STMA, STMAConfig
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "STMA": "stma_cli.model",
    "STMAConfig": "stma_cli.model",
    "Segmenter": "stma_cli.inference.segmenter",
    "SegmenterConfig": "stma_cli.inference.config",
    "load_model": "stma_cli.hub",
    "segment_video": "stma_cli.inference.pipeline",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'stma_cli' has no attribute {name!r}")
