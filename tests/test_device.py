"""--device and --precision."""
import pytest
import torch

from stma_cli.device import SlowPrecisionWarning, autocast_dtype
from stma_cli.errors import StmaError


def test_precisions_on_the_cpu() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") is None and autocast_dtype(cpu, "fp32") is None
    with pytest.warns(SlowPrecisionWarning, match="bf16 on the CPU is many times slower than fp32"):
        assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    with pytest.raises(StmaError, match="fp16 needs a CUDA device"):
        autocast_dtype(cpu, "fp16")
    with pytest.raises(StmaError, match="--precision 'fp8': expected one of"):
        autocast_dtype(cpu, "fp8")
