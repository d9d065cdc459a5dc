"""Speed of `stma segment`: frames per second by resolution, number of objects and --mem-size, and the
share of each stage (decode, encoder, association, decoder, writing) so that the slowest one is known.

Run: python benchmarks/segment_speed.py [--full] [--frames N] [--threads N] [--device cpu|cuda]
     [--precisions fp32 fp16] [--json PATH]

Each configuration segments a synthetic H.264 video (K moving ellipses on a textured background, written
with PyAV) through the same code as the CLI (`segment_video`: decoding thread, segmenter, masks, overlay
and logits written to a temporary folder). fps = frames / wall-clock seconds of that call, after a
3-frame warm-up; CPU ms/frame is the process's CPU time (all threads) per frame, steadier than fps on a
machine shared with other jobs. --threads sets torch's intra-op threads (default: torch's default, as
`stma segment` has it). The model is the shipped weights/stma-tiny when installed, else a tiny model
with random weights (speed does not depend on the weights).

Stages, in seconds over the video: resize = the frame to the model's size (Segmenter._prepare);
encoder = model.encode; association = model.memorize + model.segment less the decoder; decoder = the
decoder and ID association inside model.segment; labels = logits to the frame's size and label map
(Segmenter._result); other = the rest of the frame loop (logits for the file, waiting for frames or for
the writer, opening and finishing the output). Shares are of the wall-clock time of that run. Two stages
run in background threads, overlapped with the others, so all shares may add up to more than 100%:
writing = VideoOutput.write (mask PNG, overlay frame, logits) in the writer thread, and decode = one pass
over the video with VideoSource alone (decoding thread). On CUDA every timed call is synchronised, so fps
comes from a second, untimed run.

Default: the resolutions at 2 objects, the object counts and --mem-size at 480p (9 configurations).
--full: the object counts and --mem-size at every resolution (21). The --mem-size rows use --mem-every 1,
so the memory is full from frame --mem-size on and the figures are the steady state of that size.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from stma_cli.hub import DEFAULT_WEIGHTS, load_model, shipped_dir
from stma_cli.inference.pipeline import RunOptions, VideoJob, segment_video
from stma_cli.inference.segmenter import Segmenter, SegmenterConfig
from stma_cli.io.masks import write_mask
from stma_cli.io.output import VideoOutput
from stma_cli.io.video import open_video
from stma_cli.model import STMA, STMAConfig

RESOLUTIONS = {"240p": (426, 240), "480p": (854, 480), "720p": (1280, 720)}
OBJECTS = (1, 2, 5, 10)
MEM_SIZES = (2, 5, 10)
STAGES = ("decode", "resize", "encoder", "association", "decoder", "labels", "writing", "other")


# -- inputs shared by the benchmarks ---------------------------------------------------------------


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


# -- timing ----------------------------------------------------------------------------------------


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
    seconds: float  # wall-clock time of the video (untimed run on CUDA)
    timed_seconds: float  # wall-clock time of the run with the stage timers
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage in the timed run


@contextlib.contextmanager
def timed_stages(model: STMA, device: torch.device) -> Iterator[dict[str, float]]:
    """Accumulate seconds per model call and per VideoOutput.write while the block runs."""
    seconds: dict[str, float] = defaultdict(float)
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    patched: list[tuple[object, str, object]] = []

    def wrap(owner: object, name: str, key: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            sync()
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                sync()
                seconds[key] += time.perf_counter() - start

        patched.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, timed)

    wrap(model, "encode", "encoder")
    wrap(model, "memorize", "memorize")
    wrap(model, "segment", "segment")
    wrap(model.decoder, "forward", "decoder")
    wrap(model.association, "forward", "id_association")
    wrap(Segmenter, "_prepare", "resize")
    wrap(Segmenter, "_result", "labels")
    wrap(VideoOutput, "write", "writing")
    try:
        yield seconds
    finally:
        for owner, name, before in reversed(patched):
            if before is None:
                delattr(owner, name)
            else:
                setattr(owner, name, before)


def run_config(model: STMA, device: torch.device, precision: str, config: Config, frames: int,
               folder: Path) -> Result:
    """Segment one synthetic video with `config`; fps and seconds per stage."""
    width, height = RESOLUTIONS[config.resolution]
    video = folder / f"{config.resolution}-{frames}.mp4"
    if not video.exists():
        synthetic_video(video, frames, width, height)
    mask = first_mask(folder / f"mask-{config.resolution}-{config.objects}.png", width, height, config.objects)
    segmenter = SegmenterConfig(mem_size=config.mem_size, mem_every=config.mem_every, precision=precision)
    options = RunOptions(overwrite=True, model_id="benchmark")

    def segment(source: Path, output: str) -> float:
        report = segment_video(VideoJob(str(source), [(0, mask)], folder / output), model, segmenter, options)
        return report.seconds

    warmup = folder / f"warmup-{config.resolution}.mp4"
    if not warmup.exists():
        synthetic_video(warmup, 3, width, height)
    segment(warmup, "warmup")
    cpu = time.process_time()
    with timed_stages(model, device) as stages:
        timed_seconds = segment(video, "out")
    cpu = time.process_time() - cpu
    seconds = segment(video, "out") if device.type == "cuda" else timed_seconds
    start = time.perf_counter()
    with open_video(video) as source:
        for _ in source:
            pass
    decode = time.perf_counter() - start
    association = stages["memorize"] + stages["segment"] - stages["decoder"] - stages["id_association"]
    decoder = stages["decoder"] + stages["id_association"]
    in_loop = sum(stages[key] for key in ("resize", "encoder", "memorize", "segment", "labels"))
    split = {"decode": decode, "resize": stages["resize"], "encoder": stages["encoder"], "association": association,
             "decoder": decoder, "labels": stages["labels"], "writing": stages["writing"],
             "other": max(timed_seconds - in_loop, 0.0)}
    return Result(config, str(device), precision, torch.get_num_threads(), frames, round(frames / seconds, 2),
                  round(1000 * cpu / frames, 1), round(seconds, 3), round(timed_seconds, 3),
                  {key: round(value, 3) for key, value in split.items()})


def configs(full: bool) -> list[Config]:
    """One factor at a time around (480p, 2 objects, --mem-size 5); every resolution with --full."""
    chosen = [Config(resolution, 2) for resolution in RESOLUTIONS]
    for resolution in list(RESOLUTIONS) if full else ["480p"]:
        chosen += [Config(resolution, objects) for objects in OBJECTS if objects != 2]
        chosen += [Config(resolution, 2, mem_size, mem_every=1) for mem_size in MEM_SIZES]
    return chosen


def table(results: list[Result]) -> str:
    """The results as a Markdown table."""
    lines = ["| device | precision | threads | video | objects | mem-size / every | frames | fps | CPU ms/frame | "
             + " | ".join(STAGES) + " |", "|" + "---|" * (9 + len(STAGES))]
    for r in results:
        width, height = RESOLUTIONS[r.config.resolution]
        shares = " | ".join(f"{100 * r.stages[stage] / r.timed_seconds:.0f}%" for stage in STAGES)
        lines.append(f"| {r.device} | {r.precision} | {r.threads} | {r.config.resolution} ({width}x{height}) "
                     f"| {r.config.objects} | {r.config.mem_size} / {r.config.mem_every} | {r.frames} | {r.fps:.2f} "
                     f"| {r.cpu_ms:.0f} | {shares} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="object counts and --mem-size at every resolution")
    parser.add_argument("--frames", type=int, default=30, help="frames per video [30]")
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
            for config in configs(args.full):
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
    parts += [f"--threads {args.threads}"] if args.threads else []
    parts += ["--full"] if args.full else []
    parts += [f"--precisions {' '.join(args.precisions)}"] if args.precisions != ["auto"] else []
    return " ".join(parts)


if __name__ == "__main__":
    main()
