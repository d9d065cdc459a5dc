"""Device and precision choice shared by inference and training."""
from __future__ import annotations

import contextlib
import warnings
from typing import ContextManager

import torch

from stma_cli.errors import UsageError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
PRECISION_NAMES = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}  # autocast dtype -> name


class SlowPrecisionWarning(UserWarning):
    """A precision that works but is much slower than the default on this device."""


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`; UsageError for any other value or a
    device this machine lacks."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: CUDA is not available on this machine (torch {torch.__version__})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        raise UsageError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")
    return device


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for a precision setting, or None for plain fp32.

    auto: fp16 on CUDA, fp32 on CPU. bf16 is accepted on both (with a warning on the CPU, where it is
    slow); fp16 needs CUDA (UsageError otherwise).
    """
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    if precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA device (use fp32 on CPU)")
    if precision == "bf16" and device.type == "cpu":
        warnings.warn("--precision bf16 on the CPU is many times slower than fp32 (about 18x on a Xeon); "
                      "fp32 is the CPU default", SlowPrecisionWarning)
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """torch.autocast for `dtype`, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
