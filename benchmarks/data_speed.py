"""Time the generation of training clips on one CPU thread (the budget: 40 ms per 5-frame 384x384 clip).

Run: python benchmarks/data_speed.py [--clips N] [--frames T] [--size H W]
Asset loading (once per process) is excluded; the figures are means over N consecutive items, as wall-clock
and as CPU time of this process (the CPU time is the steadier one on a machine shared with other jobs).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import Dataset

from stma_cli.train.assets import asset_bank
from stma_cli.train.pseudo import PseudoVideos
from stma_cli.train.synthetic import SyntheticVideos


def time_dataset(dataset: Dataset, clips: int) -> tuple[float, float]:
    """Mean wall-clock and CPU milliseconds per item over the first `clips` items."""
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(clips):
        dataset[index]
    return 1000.0 * (time.perf_counter() - wall) / clips, 1000.0 * (time.process_time() - cpu) / clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--size", type=int, nargs=2, default=(384, 384), metavar=("H", "W"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    asset_bank("train")
    print(f"asset loading: {time.perf_counter() - start:.1f} s (once per process)")
    size = tuple(args.size)
    for name, dataset in (
        ("synthetic", SyntheticVideos(seed=0, length=args.clips, num_frames=args.frames, size=size)),
        ("pseudo", PseudoVideos(seed=0, length=args.clips, num_frames=args.frames, size=size)),
    ):
        dataset[0]
        wall, cpu = time_dataset(dataset, args.clips)
        print(f"{name:9s} {args.frames} frames {size[0]}x{size[1]}: {wall:.1f} ms/clip wall, {cpu:.1f} ms/clip CPU")


if __name__ == "__main__":
    main()
