"""benchmarks/real.py --encoder: one propagation row per ImageNet encoder, the shipped one unchanged."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import real as benchmark  # noqa: E402


def test_one_propagation_row_per_encoder(tmp_path: Path) -> None:
    args = benchmark.parse_args(["--root", str(tmp_path / "real"), "--encoder", "mobilenetv2",
                                 "--encoder", "efficientnet-lite2", "--results", f"other={tmp_path}"])
    rows = [(name, folder.name) for name, folder, _ in benchmark.methods(args)]
    assert rows == [("ImageNet propagation", "propagation"),
                    ("ImageNet propagation (efficientnet-lite2)", "propagation-efficientnet-lite2"),
                    ("copy-first-mask", "copy"), ("other", tmp_path.name)]
    default = benchmark.parse_args(["--root", str(tmp_path / "real"), "--results", f"other={tmp_path}"])
    assert [name for name, _, _ in benchmark.methods(default)][0] == "ImageNet propagation"


def test_unknown_encoder_is_refused() -> None:
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--encoder", "resnet50"])
