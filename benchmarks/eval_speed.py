"""Time `stma eval --results` scoring of one 854x480 sequence with 2 objects (30 frames by default).

Run: python benchmarks/eval_speed.py [--frames 30] [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stma_cli.evaluation.datasets import DavisDataset
from stma_cli.evaluation.davis import evaluate_folder

HEIGHT, WIDTH = 480, 854


def _label_map(t: int, shift: int) -> np.ndarray:
    """Two moving ellipses (ids 1 and 2); `shift` displaces them as a prediction error."""
    yy, xx = np.ogrid[:HEIGHT, :WIDTH]
    labels = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    first = ((yy - 200 - shift) / 90.0) ** 2 + ((xx - 200 - 8 * t) / 120.0) ** 2 <= 1
    second = ((yy - 300) / 60.0) ** 2 + ((xx - 600 + 5 * t + shift) / 70.0) ** 2 <= 1
    labels[first] = 1
    labels[second] = 2
    return labels


def _save(labels: np.ndarray, path: Path) -> None:
    image = Image.fromarray(labels, mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [255, 255, 255] * 253)
    image.save(path)


def build(root: Path, frames: int) -> Path:
    """Write the DAVIS-layout sequence and its predictions under `root`; return the results folder."""
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("clip\n")
    images = root / "JPEGImages" / "480p" / "clip"
    annotations = root / "Annotations" / "480p" / "clip"
    results = root / "results" / "clip"
    for folder in (images, annotations, results):
        folder.mkdir(parents=True)
    frame = Image.new("RGB", (WIDTH, HEIGHT))
    for t in range(frames):
        frame.save(images / f"{t:05d}.jpg")
        _save(_label_map(t, 0), annotations / f"{t:05d}.png")
        _save(_label_map(t, 3), results / f"{t:05d}.png")
    return root / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30, help="frames in the sequence [30]")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported [3]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = build(Path(tmp), args.frames)
        dataset = DavisDataset(Path(tmp), "val")
        timings = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            scores = evaluate_folder(dataset, results, workers=1)
            timings.append(time.perf_counter() - start)
    print(f"scored {args.frames} frames x 2 objects at {WIDTH}x{HEIGHT}: best {min(timings):.3f} s of {len(timings)} runs")
    print(f"J&F-Mean {scores.global_scores()['J&F-Mean']:.3f}")


if __name__ == "__main__":
    main()
