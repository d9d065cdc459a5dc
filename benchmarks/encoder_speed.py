"""Forward time of the ImageNet encoders up to stride 16: MobileNetV2 (the shipped encoder),
EfficientNet-Lite0 and EfficientNet-Lite2.

    python benchmarks/encoder_speed.py [--sizes 640x360,576x324] [--repeats 15] [--threads 1]

Each encoder runs as `STMA.for_inference` runs MobileNetV2: BatchNorm folded into the convolutions,
channels-last memory, inference mode. The encoders take turns frame by frame, so that a busy machine
slows them alike; printed: the median ms/frame of each at each size and its ratio to MobileNetV2 at
the first size. Only the architecture is timed: no checkpoint is needed.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn

from stma_cli.model.efficientnet_lite import LITE0, LITE2, EfficientNetLiteEncoder
from stma_cli.model.encoder import MobileNetEncoder


def encoders() -> dict[str, nn.Module]:
    """The encoders to time, each made ready for inference."""
    made = {"mobilenetv2": MobileNetEncoder(), "efficientnet-lite0": EfficientNetLiteEncoder(LITE0),
            "efficientnet-lite2": EfficientNetLiteEncoder(LITE2)}
    for encoder in made.values():
        encoder.eval().fold_batchnorm()
        encoder.to(memory_format=torch.channels_last)
    return made


def median_ms(models: dict[str, nn.Module], height: int, width: int, repeats: int) -> dict[str, float]:
    """Median forward time (ms) of each model on one (1, 3, height, width) frame, after two warm-up runs."""
    image = torch.rand(1, 3, height, width)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(repeats + 2):
            for name, model in models.items():
                start = time.perf_counter()
                model(image)
                times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(values[2:]) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="640x360", help="comma-separated WIDTHxHEIGHT frame sizes")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")]
    models = encoders()
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}; "
          f"median of {args.repeats} frames")
    print("| encoder (to stride 16) | size | ms/frame | x MobileNetV2 |")
    print("|---|---|---:|---:|")
    reference = None
    for width, height in sizes:
        for name, ms in median_ms(models, height, width, args.repeats).items():
            reference = reference or ms
            print(f"| {name} | {width}x{height} | {ms:.1f} | {ms / reference:.2f} |")


if __name__ == "__main__":
    main()
