"""What the benchmark scripts share: synthetic inputs, the model to time, the machine, and the JSON record.

The scripts import it as a sibling module (`from common import ...`); run them from anywhere as
`python benchmarks/NAME.py`.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from stma_cli.hub import DEFAULT_WEIGHTS, shipped_dir
from stma_cli.io.atomic import atomic_write_text
from stma_cli.io.masks import write_mask
from stma_cli.model import STMA, STMAConfig


def _ellipses(width: int, height: int, objects: int, t: int) -> np.ndarray:
    """Labels (H, W) of `objects` ellipses, ids 1..objects, drifting with time `t`."""
    yy, xx = np.ogrid[:height, :width]
    labels = np.zeros((height, width), np.uint8)
    rng = np.random.default_rng(7)
    for object_id in range(1, objects + 1):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.15, 0.85) * width
        vy, vx = rng.uniform(-1, 1, 2) * 0.002 * (height, width)
        ry, rx = rng.uniform(0.05, 0.12) * height, rng.uniform(0.04, 0.09) * width
        cy, cx = cy + vy * t, cx + vx * t
        labels[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = object_id
    return labels


def synthetic_video(path: Path, frames: int, width: int, height: int, objects: int = 10) -> Path:
    """Write an H.264 MP4 of `frames` frames with `objects` moving ellipses on a textured background."""
    rng = np.random.default_rng(0)
    background = rng.integers(40, 200, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    background = np.kron(background, np.ones((8, 8, 1), np.uint8))[:height, :width]
    colours = rng.integers(0, 256, (objects + 1, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25), options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            labels = _ellipses(width, height, objects, t)
            frame = np.where(labels[..., None] > 0, colours[labels], background)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def first_mask(path: Path, width: int, height: int, objects: int) -> Path:
    """The first-frame mask of `synthetic_video`, with its first `objects` objects."""
    write_mask(path, _ellipses(width, height, objects, 0))
    return path


def benchmark_weights(folder: Path) -> tuple[str, str]:
    """(`--weights` value, description): the shipped default model if installed, else random weights."""
    if (shipped_dir() / DEFAULT_WEIGHTS / "config.json").is_file():
        return DEFAULT_WEIGHTS, f"shipped {DEFAULT_WEIGHTS}"
    torch.manual_seed(0)
    STMA(STMAConfig.preset("tiny")).save_pretrained(folder)
    return str(folder), f"tiny preset, random weights ({DEFAULT_WEIGHTS} not installed; speed does not depend on them)"


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    info: dict[str, object] = {
        "cpu": _cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_record(path: Path, benchmark: str, command: str, model_name: str, markdown: str,
                 results: list) -> None:
    """The JSON record `run_all.py` reads: what ran, on what, the table and the raw results."""
    record = {"benchmark": benchmark, "command": command, "model": model_name, "machine": machine(),
              "markdown": markdown, "results": [asdict(r) for r in results]}
    path.write_text(json.dumps(record, indent=2) + "\n")


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def mean_of(values: list) -> float | None:
    """The mean of `values`, None if there are none."""
    return float(np.mean(values)) if values else None


def cell(value: float | None, digits: int = 2) -> str:
    """A table cell: the value rounded, or a dash for an unknown value."""
    return "–" if value is None else f"{value:.{digits}f}"


def publish(folder: Path, text: str, results: list) -> str:
    """Write the report (results.md) and the raw results (results.json) into `folder`; print the report."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "results.md", text)
    atomic_write_text(folder / "results.json", json.dumps(results, indent=1))
    print(text, end="")
    return text
