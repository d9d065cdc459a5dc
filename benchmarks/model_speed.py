"""Forward time of the STMA network alone: one frame against a 5-frame memory.

    python benchmarks/model_speed.py [--config tiny] [--height 480 --width 854] [--objects 2] [--memory 5]

Prints seconds per frame for encode + segment + memorize (what the engine does for every frame),
at the full input size and at the engine's default processing size (--max-side 640).
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from stma_cli.inference.segmenter import SegmenterConfig, processing_size
from stma_cli.model import STMA, STMAConfig


def seconds_per_frame(model: STMA, height: int, width: int, objects: int, memory: int, repeats: int) -> float:
    ids = torch.arange(1, objects + 1)[None]
    image = torch.rand(1, 3, height, width)
    masks = torch.rand(1, objects, height, width) / objects
    with torch.inference_mode():
        features = model.encode(image)
        bank = [model.memorize(features, masks, ids) for _ in range(memory)]
        times = []
        for _ in range(repeats + 2):
            start = time.perf_counter()
            features = model.encode(image)
            logits = model.segment(features, bank, ids)
            model.memorize(features, masks, ids)
            times.append(time.perf_counter() - start)
            del logits
    return sorted(times[2:])[len(times[2:]) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--memory", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    network = STMA(STMAConfig.preset(args.config))
    model = network.for_inference()  # what the engine runs
    print(f"{args.config}: {network.num_parameters() / 1e6:.2f} M parameters; torch {torch.__version__}, "
          f"{args.threads} threads, {platform.processor() or platform.machine()}")
    sizes = {(args.height, args.width)}
    sizes.add(processing_size(args.height, args.width, SegmenterConfig.max_side))
    for height, width in sorted(sizes, reverse=True):
        s = seconds_per_frame(model, height, width, args.objects, args.memory, args.repeats)
        print(f"{width}x{height}, {args.objects} objects, {args.memory}-frame memory: {s:.3f} s/frame "
              f"({1 / s:.1f} fps, median of {args.repeats})")


if __name__ == "__main__":
    main()
