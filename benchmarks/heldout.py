"""J&F of a model and two baselines on the held-out synthetic set, as a Markdown table.

Run: python benchmarks/heldout.py [--root runs/heldout] [--sequences 12] [--frames 40] [--size 480x854]
     [--weights stma-tiny] [--max-side 640] [--mem-size 5] [--mem-every 5] [--methods model,copy,motion]
     [--device auto] [--workers N]
     [--seed 10000019]

The held-out set (synthetic sequences with 2-3 objects, held-out assets and seed, see
`stma_cli.train.data.write_davis_layout`) is rendered into --root as a DAVIS-2017 layout unless it
is there already. The default seed gives the test set that models are reported on; choose
checkpoints and settings on the validation seed instead (`--seed 10000079 --root runs/validation`).
Each method writes its predictions under ``<root>-predictions/<method>/`` and is scored there
with the DAVIS-2017 metrics (the toolkit's CSV tables land beside the predictions):

* model: the STMA weights --weights (a shipped name, a folder such as a training checkpoint, or a Hub
  repo id), segmenting each sequence from its first-frame mask;
* copy: the first-frame mask repeated on every frame;
* motion: the first-frame mask moved frame by frame by block matching (no learning).

seconds is the time to predict the whole set (loading the model and scoring excluded). The table,
the command line and the seed are printed and written to ``<root>-predictions/results.md``.
"""
from __future__ import annotations

import argparse
import hashlib
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from stma_cli.device import resolve_device
from stma_cli.errors import StmaError
from stma_cli.evaluation.baselines import copy_first_mask, motion_propagation
from stma_cli.evaluation.datasets import DavisDataset, image_size
from stma_cli.evaluation.davis import evaluate_folder
from stma_cli.hub import DEFAULT_WEIGHTS, load_model
from stma_cli.inference.dataset import predict_dataset
from stma_cli.inference.segmenter import SegmenterConfig
from stma_cli.io.atomic import atomic_write_text
from stma_cli.train.data import HELDOUT_SEED, VALIDATION_SEED, write_davis_layout

METHODS = ("model", "copy", "motion")
COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "F-Mean", "F-Recall", "J-Decay")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/heldout"), help="held-out set folder")
    parser.add_argument("--sequences", type=int, default=12)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=_size, default=(480, 854), help="HEIGHTxWIDTH (default 480x854)")
    parser.add_argument("--seed", type=int, default=HELDOUT_SEED,
                        help=f"{HELDOUT_SEED} (default): the test set; {VALIDATION_SEED}: the validation set that "
                             "chooses checkpoints and settings")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--max-side", type=int, default=640, help="longest side the model sees")
    parser.add_argument("--mem-size", type=int, default=SegmenterConfig.mem_size, help="memory frames of the model")
    parser.add_argument("--mem-every", type=int, default=SegmenterConfig.mem_every, help="working-memory interval")
    parser.add_argument("--methods", type=_methods, default=METHODS, help="comma-separated: model,copy,motion")
    parser.add_argument("--device", default="auto", help="device of the model: auto, cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=int, default=None, help="scoring processes (default: one per CPU)")
    args = parser.parse_args(argv)
    if args.sequences < 1 or args.frames < 3:
        parser.error("need --sequences >= 1 and --frames >= 3 (scoring leaves out the first and last frame)")
    return args


def _size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    if not (height.isdigit() and width.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHTxWIDTH, e.g. 480x854")
    return int(height), int(width)


def _methods(text: str) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated subset of {','.join(METHODS)}")
    return methods


def heldout_set(root: Path, sequences: int, frames: int, size: tuple[int, int], seed: int,
                kind: str = "synthetic") -> DavisDataset:
    """The set of `kind` and `seed` in `root`, rendered first if `root` does not hold one."""
    if not (root / "ImageSets" / "2017" / "val.txt").is_file():
        print(f"rendering {sequences} {kind} sequences of {frames} frames (seed {seed}) into {root}", file=sys.stderr)
        write_davis_layout(root, kind, sequences, seed, frames, size)
    dataset = DavisDataset(root)
    expected = [f"{kind}-{seed}-{index:04d}" for index in range(sequences)]
    first = dataset.frame_paths(dataset.sequence_names[0]) if dataset.sequence_names else []
    if dataset.sequence_names != expected or len(first) != frames or image_size(first[0]) != size:
        raise StmaError(f"{root}: holds another set than {sequences} sequences (seed {seed}) of {frames} frames at "
                        f"{size[0]}x{size[1]}; remove it or choose another --root")
    return dataset


def fingerprint(dataset: DavisDataset) -> str:
    """SHA-256 (first 12 hex digits) of the set's frames and annotations, to tell renders apart."""
    digest = hashlib.sha256()
    for name in dataset.sequence_names:
        for path in dataset.frame_paths(name) + dataset.annotation_paths(name):
            digest.update(path.relative_to(dataset.root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def predictor(method: str, args: argparse.Namespace) -> tuple[str, Callable[[DavisDataset, Path], None], str]:
    """The table name, the prediction function and a note on how it runs."""
    if method == "copy":
        return "copy-first-mask", copy_first_mask, "numpy, one process"
    if method == "motion":
        return "motion-propagation", motion_propagation, "numpy, one process"
    device = resolve_device(args.device)
    model, _ = load_model(args.weights, device=device)
    config = SegmenterConfig(mem_size=args.mem_size, mem_every=args.mem_every, max_side=args.max_side)
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    note = f"{device}{threads}, --max-side {args.max_side}, --mem-size {args.mem_size}, --mem-every {args.mem_every}"
    return f"model ({args.weights})", lambda dataset, out: predict_dataset(dataset, out, model, config), note


def timed_prediction(predict: Callable[[DavisDataset, Path], None], dataset: DavisDataset, out: Path) -> float:
    """Predict `dataset` into `out`, emptied first; returns the seconds it took."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    start = time.perf_counter()
    predict(dataset, out)
    return time.perf_counter() - start


def report(args: argparse.Namespace, argv: list[str], dataset: DavisDataset,
           rows: list[tuple[str, dict[str, float], float, str]]) -> str:
    """The Markdown report: what was measured, the table, the command line."""
    height, width = args.size
    num_objects = sum(dataset.num_objects(name) for name in dataset.sequence_names)
    lines = [
        f"Held-out synthetic set: {len(dataset.sequence_names)} sequences x {args.frames} frames at {width}x{height}, "
        f"{num_objects} objects, seed {args.seed} ({args.root}, fingerprint {fingerprint(dataset)}). "
        "DAVIS-2017 metrics over frames 1 .. N-2 of each sequence.",
        "",
        "| method | " + " | ".join(COLUMNS) + " | seconds |",
        "|---|" + "---:|" * (len(COLUMNS) + 1),
    ]
    for name, scores, seconds, _ in rows:
        lines.append(f"| {name} | " + " | ".join(f"{scores[c]:.3f}" for c in COLUMNS) + f" | {seconds:.1f} |")
    lines += ["", "seconds: predicting the whole set; " + "; ".join(f"{name}: {note}" for name, _, _, note in rows),
              "", f"Command: `python benchmarks/heldout.py {shlex.join(argv)}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    predictors = {method: predictor(method, args) for method in args.methods}
    dataset = heldout_set(args.root, args.sequences, args.frames, args.size, args.seed)
    predictions = Path(f"{args.root}-predictions")
    rows = []
    for method, (name, predict, note) in predictors.items():
        out = predictions / method
        seconds = timed_prediction(predict, dataset, out)
        results = evaluate_folder(dataset, out, args.workers)
        rows.append((name, results.global_scores(), seconds, note))
        print(f"{name}: J&F-Mean {rows[-1][1]['J&F-Mean']:.3f} in {seconds:.1f} s", file=sys.stderr)
    text = report(args, argv, dataset, rows)
    atomic_write_text(predictions / "results.md", text)
    print(text, end="")


if __name__ == "__main__":
    try:
        main()
    except StmaError as error:
        sys.exit(f"error: {error}")
