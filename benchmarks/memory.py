"""Peak memory of `stma segment` against video length at a fixed --mem-size: it should stay flat.

Run: python benchmarks/memory.py [--full | --runs WxH:FRAMES ...] [--mem-size N] [--threads N]
     [--device cpu|cuda] [--json PATH]

Each run is a fresh `stma segment` process (the CLI's own entry point, with its default outputs: masks,
overlay.mp4 and logits.h5) on a synthetic H.264 video decoded as a stream. Peak RSS is the process's
ru_maxrss (from wait4); on CUDA the process also records torch.cuda.max_memory_allocated at exit.

Default: 160x120 at 100 and 1,000 frames, 854x480 at 100 and 300 frames (a few minutes).
--full: 160x120 at 100, 1,000 and 10,000 frames, 854x480 at 100 and 3,000 frames.
--runs: any such list, e.g. --runs 854x480:100 854x480:3000.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import benchmark_weights, first_mask, synthetic_video, write_record

DEFAULT_RUNS = [((160, 120), 100), ((160, 120), 1000), ((854, 480), 100), ((854, 480), 300)]
FULL_RUNS = [((160, 120), 100), ((160, 120), 1000), ((160, 120), 10000), ((854, 480), 100), ((854, 480), 3000)]

# Runs the CLI as `python -m stma_cli` does, and writes the peak CUDA memory to the file named in argv[1].
_CLI_WITH_CUDA_PEAK = """
import atexit, runpy, sys
from pathlib import Path
import torch
peak_file = Path(sys.argv.pop(1))
atexit.register(lambda: peak_file.write_text(
    str(torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else 0)))
sys.argv[0] = "stma"
runpy.run_module("stma_cli", run_name="__main__")
"""


@dataclass
class Result:
    width: int
    height: int
    frames: int
    mem_size: int
    device: str
    peak_rss_mib: float
    peak_cuda_mib: float
    seconds: float


def measure(video: Path, mask: Path, weights: str, mem_size: int, device: str, env: dict[str, str],
            folder: Path) -> tuple[float, float, float]:
    """(peak RSS MiB, peak CUDA MiB, seconds) of one `stma segment` process."""
    peak_file = folder / "cuda-peak.txt"
    command = [sys.executable, "-c", _CLI_WITH_CUDA_PEAK, str(peak_file), "segment", str(video), "--mask", str(mask),
               "--weights", weights, "--mem-size", str(mem_size), "--device", device,
               "--output", str(folder / f"out-{video.stem}"), "--overwrite"]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"stma segment failed on {video}:\n{stderr.decode(errors='replace')}")
    cuda = int(peak_file.read_text()) if peak_file.exists() else 0
    return usage.ru_maxrss / 1024, cuda / 2**20, seconds


def _row(r: Result) -> str:
    return (f"| {r.device} | {r.width}x{r.height} | {r.frames:,} | {r.mem_size} | {r.peak_rss_mib:.0f} "
            f"| {r.peak_cuda_mib:.0f} | {r.seconds:.0f} |")


def table(results: list[Result]) -> str:
    """The results as a Markdown table, and per frame size the spread of peak RSS over the lengths."""
    lines = ["| device | video | frames | mem-size | peak RSS (MiB) | peak CUDA (MiB) | seconds (with start-up) |",
             "|---|---|---|---|---|---|---|", *map(_row, results), ""]
    for size in sorted({(r.width, r.height) for r in results}):
        rss = [r.peak_rss_mib for r in results if (r.width, r.height) == size]
        lengths = [r.frames for r in results if (r.width, r.height) == size]
        if len(lengths) < 2:
            continue
        lines.append(f"- {size[0]}x{size[1]}: peak RSS from {min(lengths):,} to {max(lengths):,} frames varies by "
                     f"{100 * (max(rss) - min(rss)) / min(rss):.1f}% ({min(rss):.0f} to {max(rss):.0f} MiB)")
    return "\n".join(lines)


def _run_spec(text: str) -> tuple[tuple[int, int], int]:
    """`WxH:FRAMES` -> ((W, H), FRAMES)."""
    size, frames = text.split(":")
    width, height = size.split("x")
    return (int(width), int(height)), int(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="up to 10,000 frames at 160x120 and 3,000 at 854x480")
    parser.add_argument("--runs", nargs="+", type=_run_spec, metavar="WxH:FRAMES", help="the runs to make")
    parser.add_argument("--mem-size", type=int, default=5, help="--mem-size of every run [5]")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the stma processes [torch's default]")
    parser.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="stma-memory-") as tmp:
        folder = Path(tmp)
        weights, model_name = benchmark_weights(folder / "weights")
        print(f"model: {model_name}", flush=True)
        for (width, height), frames in args.runs or (FULL_RUNS if args.full else DEFAULT_RUNS):
            video = synthetic_video(folder / f"{width}x{height}-{frames}.mp4", frames, width, height, objects=2)
            mask = first_mask(folder / f"{width}x{height}.png", width, height, objects=2)
            rss, cuda, seconds = measure(video, mask, weights, args.mem_size, args.device, env, folder)
            video.unlink()
            results.append(Result(width, height, frames, args.mem_size, args.device, round(rss, 1), round(cuda, 1),
                                  round(seconds, 1)))
            print(_row(results[-1]), flush=True)
    markdown = table(results)
    print()
    print(markdown)
    if args.json:
        runs = [f"--runs {' '.join(f'{w}x{h}:{n}' for (w, h), n in args.runs)}"] if args.runs else []
        command = " ".join(["python benchmarks/memory.py", *(["--full"] if args.full else []), *runs,
                            f"--mem-size {args.mem_size}", f"--device {args.device}",
                            *([f"--threads {args.threads}"] if args.threads else [])])
        write_record(args.json, "memory", command, model_name, markdown, results)


if __name__ == "__main__":
    main()
