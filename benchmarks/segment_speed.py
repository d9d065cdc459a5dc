"""Speed of `stma segment`: frames per second by resolution, number of objects and --mem-size, and the
share of each stage (decode, encoder, association, decoder, writing) so that the slowest one is known.

Run: python benchmarks/segment_speed.py [--full] [--frames N] [--resolutions 240p 480p 720p] [--threads N]
     [--device cpu|cuda] [--precisions fp32 fp16] [--json PATH]

Each configuration segments a synthetic H.264 video (K moving ellipses on a textured background, written
with PyAV) through the same code as the CLI (`segment_video`: decoding thread, segmenter, masks, overlay
and logits written to a temporary folder), after a 3-frame warm-up. fps = frames / wall-clock seconds of
a plain run; CPU ms/frame is the process's CPU time (all threads) per frame of that run, steadier than
fps on a machine shared with other jobs. --threads sets torch's intra-op threads (default: torch's
default, as `stma segment` has it). The model is the shipped weights/stma-tiny when installed, else a
tiny model with random weights (speed does not depend on the weights).

Stages come from a second run under `torch.profiler`, which sums the time spent inside the ranges the
library labels with `torch.profiler.record_function` (all threads): resize = "stma.resize" (the frame to
the model's size); encoder = "stma.encoder"; association = "stma.memorize" + "stma.association" (the
memory side and the reading of the memory); propagation = "stma.propagation" (the local prior from the
previous frame and the matching against every memory frame); decoder = "stma.decoder" (decoder, ID
association and object presence); refinement = "stma.refine" (thin parts from the given masks, in models
with `refine_radius`); labels = "stma.labels" (logits to the frame's size and label map);
writing = "stma.writing" (mask PNG, overlay frame and logits, in the writer thread); other = the rest of
the profiled run's wall-clock time outside the main thread's stages (waiting for frames or for the
writer, opening and finishing the output). decode = one pass over the video with the reader alone (it
runs in the decoding thread during segmentation). Shares are of the profiled run's wall-clock time; the
two background stages overlap the others, so all shares may add up to more than 100%. On CUDA the ranges
are CPU time: kernels run asynchronously and are waited for where the labels are copied to the CPU, so
GPU time shows under "labels".

Default: the resolutions at 2 objects, the object counts and --mem-size at 480p (9 configurations).
--full: the object counts and --mem-size at every resolution (21). The --mem-size rows use --mem-every 1,
so the memory is full from frame --mem-size on and the figures are the steady state of that size.
--resolutions keeps only those resolutions (without 480p and --full: no sweeps, one run per resolution).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from common import benchmark_weights, first_mask, machine, synthetic_video, write_record
from torch.profiler import ProfilerActivity, profile

from stma_cli.hub import load_model
from stma_cli.inference.jobs import VideoJob
from stma_cli.inference.pipeline import RunOptions, segment_video
from stma_cli.inference.segmenter import Segmenter, SegmenterConfig
from stma_cli.io.video import open_video
from stma_cli.model import STMA

RESOLUTIONS = {"240p": (426, 240), "480p": (854, 480), "720p": (1280, 720)}
OBJECTS = (1, 2, 5, 10)
MEM_SIZES = (2, 5, 10)
STAGES = ("decode", "resize", "encoder", "association", "propagation", "decoder", "refinement", "labels", "writing",
          "other")
# The labelled ranges that make up each stage (see the module docstring).
LABELS = {"resize": ("stma.resize",), "encoder": ("stma.encoder",),
          "association": ("stma.memorize", "stma.association"), "propagation": ("stma.propagation",),
          "decoder": ("stma.decoder",), "refinement": ("stma.refine",), "labels": ("stma.labels",),
          "writing": ("stma.writing",)}
MAIN_THREAD_STAGES = ("resize", "encoder", "association", "propagation", "decoder", "refinement", "labels")


@dataclass
class Config:
    resolution: str
    objects: int
    mem_size: int = 5
    mem_every: int = 5


@dataclass
class Result:
    config: Config
    device: str
    precision: str
    threads: int
    frames: int
    fps: float
    cpu_ms: float  # process CPU time per frame
    seconds: float  # wall-clock time of the plain run
    profiled_seconds: float  # wall-clock time of the run under the profiler
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage in the profiled run


def labelled_seconds(run) -> tuple[float, dict[str, float]]:  # noqa: ANN001
    """(wall-clock seconds of `run()`, seconds inside each "stma.*" range) under the profiler, all threads."""
    # profile_all_threads: the writer thread's ranges count too (an experimental profiler option).
    options = torch.profiler._ExperimentalConfig(profile_all_threads=True)
    with profile(activities=[ProfilerActivity.CPU], experimental_config=options) as profiler:
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
    totals: dict[str, float] = defaultdict(float)
    for event in profiler.events():
        if event.name.startswith("stma."):
            totals[event.name] += event.cpu_time_total / 1e6
    return seconds, totals


def run_config(model: STMA, device: torch.device, precision: str, config: Config, frames: int,
               folder: Path) -> Result:
    """Segment one synthetic video with `config`; fps and seconds per stage."""
    width, height = RESOLUTIONS[config.resolution]
    video = folder / f"{config.resolution}-{frames}.mp4"
    if not video.exists():
        synthetic_video(video, frames, width, height)
    mask = first_mask(folder / f"mask-{config.resolution}-{config.objects}.png", width, height, config.objects)
    segmenter = Segmenter(model, SegmenterConfig(mem_size=config.mem_size, mem_every=config.mem_every,
                                                 precision=precision))
    options = RunOptions(overwrite=True, model_id="benchmark")

    def segment(source: Path, output: str) -> float:
        report = segment_video(VideoJob(str(source), [(0, mask)], folder / output), segmenter, options)
        return report.seconds

    warmup = folder / f"warmup-{config.resolution}.mp4"
    if not warmup.exists():
        synthetic_video(warmup, 3, width, height)
    segment(warmup, "warmup")
    cpu = time.process_time()
    seconds = segment(video, "out")
    cpu = time.process_time() - cpu
    profiled_seconds, labelled = labelled_seconds(lambda: segment(video, "out"))
    start = time.perf_counter()
    with open_video(video) as source:
        for _ in source:
            pass
    split = {"decode": time.perf_counter() - start}
    split.update({stage: sum(labelled[label] for label in labels) for stage, labels in LABELS.items()})
    split["other"] = max(profiled_seconds - sum(split[stage] for stage in MAIN_THREAD_STAGES), 0.0)
    return Result(config, str(device), precision, torch.get_num_threads(), frames, round(frames / seconds, 2),
                  round(1000 * cpu / frames, 1), round(seconds, 3), round(profiled_seconds, 3),
                  {key: round(value, 3) for key, value in split.items()})


def configs(full: bool, resolutions: list[str], mem_sizes: tuple[int, ...] = MEM_SIZES) -> list[Config]:
    """One factor at a time around (480p, 2 objects, --mem-size 5); every resolution with --full."""
    chosen = [Config(resolution, 2) for resolution in resolutions]
    for resolution in resolutions if full else [r for r in resolutions if r == "480p"]:
        chosen += [Config(resolution, objects) for objects in OBJECTS if objects != 2]
        chosen += [Config(resolution, 2, mem_size, mem_every=1) for mem_size in mem_sizes]
    return chosen


def table(results: list[Result]) -> str:
    """The results as a Markdown table."""
    lines = ["| device | precision | threads | video | objects | mem-size / every | frames | fps | CPU ms/frame | "
             + " | ".join(STAGES) + " |", "|" + "---|" * (9 + len(STAGES))]
    for r in results:
        width, height = RESOLUTIONS[r.config.resolution]
        shares = " | ".join(f"{100 * r.stages[stage] / r.profiled_seconds:.0f}%" for stage in STAGES)
        lines.append(f"| {r.device} | {r.precision} | {r.threads} | {r.config.resolution} ({width}x{height}) "
                     f"| {r.config.objects} | {r.config.mem_size} / {r.config.mem_every} | {r.frames} | {r.fps:.2f} "
                     f"| {r.cpu_ms:.0f} | {shares} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="object counts and --mem-size at every resolution")
    parser.add_argument("--frames", type=int, default=30, help="frames per video [30]")
    parser.add_argument("--resolutions", nargs="+", choices=list(RESOLUTIONS), default=list(RESOLUTIONS),
                        help="resolutions to run [all]")
    parser.add_argument("--mem-sizes", default=",".join(map(str, MEM_SIZES)),
                        help="--mem-size of the memory rows, with --mem-every 1 [2,5,10]; e.g. 2,5,10,20,50 "
                             "with --frames 60 for the cost of a large memory")
    parser.add_argument("--threads", type=int, help="torch intra-op threads [torch's default]")
    parser.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    parser.add_argument("--precisions", nargs="+", default=["auto"], help="e.g. fp32 fp16 on CUDA [auto]")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="stma-speed-") as tmp:
        folder = Path(tmp)
        weights, model_name = benchmark_weights(folder / "weights")
        model, _ = load_model(weights, device=device)
        print(f"model: {model_name}; machine: {machine()}", flush=True)
        results = []
        for precision in args.precisions:
            for config in configs(args.full, args.resolutions, tuple(int(m) for m in args.mem_sizes.split(","))):
                result = run_config(model, device, precision, config, args.frames, folder)
                results.append(result)
                print(table([result]).splitlines()[-1], flush=True)
    markdown = table(results)
    print()
    print(markdown)
    if args.json:
        write_record(args.json, "speed", _command(args), model_name, markdown, results)


def _command(args: argparse.Namespace) -> str:
    parts = ["python benchmarks/segment_speed.py", f"--frames {args.frames}", f"--device {args.device}"]
    parts += [f"--resolutions {' '.join(args.resolutions)}"] if args.resolutions != list(RESOLUTIONS) else []
    parts += [f"--threads {args.threads}"] if args.threads else []
    parts += ["--full"] if args.full else []
    parts += [f"--precisions {' '.join(args.precisions)}"] if args.precisions != ["auto"] else []
    return " ".join(parts)


if __name__ == "__main__":
    main()
