"""Batch scaling: a batch of short videos as one `stma segment` process, and as shards run in parallel.

Run: python benchmarks/batch_scale.py [--videos 50] [--frames 12] [--shards 2] [--threads N] [--device D]
     [--json PATH]

The batch is a folder of `--videos` copies of one synthetic 426x240 H.264 video of `--frames` frames with
2 objects; their masks are in a folder beside it (`--mask-template ../masks/{stem}.png`); default outputs.
The single process uses `--threads` torch threads (default: torch's default, as `stma segment` has it);
the shards (`--shard K/N`, started together) share the cores out between them. Times are wall-clock,
start-up included.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import benchmark_weights, first_mask, synthetic_video, write_record

WIDTH, HEIGHT = 426, 240


@dataclass
class Result:
    layout: str
    processes: int
    threads_per_process: str
    videos: int
    frames: int
    seconds: float


def run(folder: Path, weights: str, device: str, shards: int, threads: int | None, output: Path) -> float:
    """Seconds to segment every video in `folder` with `shards` processes started together."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    base = [sys.executable, "-m", "stma_cli", "segment", str(folder), "--mask-template", "../masks/{stem}.png",
            "--weights", weights, "--device", device, "--output", str(output)]
    logs = [tempfile.TemporaryFile() for _ in range(shards)]
    start = time.perf_counter()
    processes = [subprocess.Popen(base + (["--shard", f"{k}/{shards}"] if shards > 1 else []), env=env,
                                  stdout=subprocess.DEVNULL, stderr=log) for k, log in enumerate(logs)]
    codes = [process.wait() for process in processes]
    seconds = time.perf_counter() - start
    for code, log in zip(codes, logs):
        log.seek(0)
        if code != 0:
            raise RuntimeError("stma segment failed:\n" + log.read().decode(errors="replace"))
    return seconds


def table(results: list[Result]) -> str:
    lines = ["| layout | processes | threads each | videos | frames | seconds | videos/min | frames/s | speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        total = r.videos * r.frames
        lines.append(f"| {r.layout} | {r.processes} | {r.threads_per_process} | {r.videos} | {total} "
                     f"| {r.seconds:.0f} | {60 * r.videos / r.seconds:.1f} | {total / r.seconds:.1f} "
                     f"| {results[0].seconds / r.seconds:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=50, help="videos in the batch [50]")
    parser.add_argument("--frames", type=int, default=12, help="frames per video [12]")
    parser.add_argument("--shards", type=int, default=2, help="shards run in parallel [2]")
    parser.add_argument("--threads", type=int, help="torch threads of the single process [torch's default]")
    parser.add_argument("--device", default="cpu", help="--device of the stma processes [cpu]")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    shard_threads = max(1, cores // args.shards)
    with tempfile.TemporaryDirectory(prefix="stma-batch-") as tmp:
        root = Path(tmp)
        weights, model_name = benchmark_weights(root / "weights")
        print(f"model: {model_name}", flush=True)
        batch, masks = root / "batch", root / "masks"
        batch.mkdir(), masks.mkdir()
        video = synthetic_video(root / "clip.mp4", args.frames, WIDTH, HEIGHT, objects=2)
        mask = first_mask(root / "clip.png", WIDTH, HEIGHT, objects=2)
        for index in range(args.videos):
            shutil.copyfile(video, batch / f"video{index:03d}.mp4")
            shutil.copyfile(mask, masks / f"video{index:03d}.png")
        results = []
        for layout, shards, threads in (("one process", 1, args.threads),
                                        (f"{args.shards} shards in parallel", args.shards, shard_threads)):
            seconds = run(batch, weights, args.device, shards, threads, root / f"out-{shards}")
            results.append(Result(layout, shards, str(threads or "default"), args.videos, args.frames,
                                  round(seconds, 1)))
            print(table(results).splitlines()[-1], flush=True)
    markdown = table(results)
    print()
    print(markdown)
    if args.json:
        command = " ".join(["python benchmarks/batch_scale.py", f"--videos {args.videos}", f"--frames {args.frames}",
                            f"--shards {args.shards}", f"--device {args.device}",
                            *([f"--threads {args.threads}"] if args.threads else [])])
        write_record(args.json, "batch", command, model_name, markdown, results)


if __name__ == "__main__":
    main()
