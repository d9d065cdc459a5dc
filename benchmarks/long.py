"""J&F and per-event figures on the long set: full occlusions, exits and re-entries, look-alikes.

Run: python benchmarks/long.py [--kind long|cuts] [--root runs/long-test] [--seed 10000103] [--sequences 8]
     [--frames 90] [--size 480x854] [--weights stma-tiny] [--weights OTHER ...] [--mem-sizes 5] [--mem-every 5]
     [--max-side 640] [--no-copy] [--results NAME=DIR ...] [--device auto] [--workers N]

The long set (`write_davis_layout(root, "long", ...)`) is made of event clips rendered from held-out
imagery only, with 2-4 annotated objects each. Every sequence holds a full occlusion of about 10-40
frames by an unannotated occluder, an exit and a re-entry (possibly across another side of the
frame), two look-alike twins, a fast object, a moving camera and a scale change; 40% of them also
hold a crowd of 5-10 look-alikes of which only some are annotated. The default seed gives the test
set, which is only reported; choose checkpoints and settings on the validation seed
(`--seed 10000141 --root runs/long-validation`).

`--kind cuts` scores the cut set instead (`runs/cuts-test`, seed 10000189; validation: `--seed 10000223
--root runs/cuts-validation`): the same kind of clips, with a hard cut to another shot (another background,
the unannotated look-alikes, none of the annotated objects) and a cut back instead of the occlusion and
the exit, so that its absences are the other shot's frames.

Per-event figures come from the ground truth. An object is absent on a frame where it has no pixel
(fully hidden, or out of view). For every run of absent frames after frame 0:
- IoU before: the object's IoU on the (up to) 10 frames before the run;
- absent FP: the share of the run's frames on which the prediction still gives the object a mask
  (the right answer there is an empty mask);
- of which on another object: the share of the run's frames on which that mask lies mostly on another
  annotated object (its id slid onto a neighbour or a look-alike; the rest lies mostly on background);
- IoU after: the object's IoU on the 10 frames after it is back (a run that ends the video has none).
Frames are pooled over runs. A run is put down to the planned event (occlusion, exit, cut) whose frames
it overlaps, else to "other" (an object hidden by another one, or carried out of view by the camera).

`--results NAME=DIR` also scores predictions made elsewhere, e.g. by another version of stma with
`stma eval ROOT --output DIR` (their fps is not known here). The table, the command line and the
set's fingerprint are printed and written to
``<root>-predictions/results.md``; every prediction stays under ``<root>-predictions/``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common import cell, mean_of, publish
from heldout import _size, fingerprint, heldout_set, timed_prediction
from stma_cli.device import resolve_device
from stma_cli.errors import StmaError
from stma_cli.evaluation.baselines import copy_first_mask
from stma_cli.evaluation.datasets import DavisDataset, read_label_map
from stma_cli.evaluation.davis import evaluate_folder
from stma_cli.hub import DEFAULT_WEIGHTS, load_model
from stma_cli.inference.dataset import predict_dataset
from stma_cli.inference.segmenter import SegmenterConfig
from stma_cli.train.data import CUTS_TEST_SEED, CUTS_VALIDATION_SEED, LONG_TEST_SEED, LONG_VALIDATION_SEED

WINDOW = 10
"""Frames before and after an absence that its IoU figures look at."""
KINDS = ("occlusion", "exit", "cut", "other")


@dataclass
class EventFigures:
    """Pooled per-frame values of one kind of absence."""

    runs: int = 0
    before: list[float] = field(default_factory=list)
    absent_fp: list[bool] = field(default_factory=list)
    on_other: list[bool] = field(default_factory=list)
    after: list[float] = field(default_factory=list)

    def add(self, other: "EventFigures") -> None:
        self.runs += other.runs
        self.before += other.before
        self.absent_fp += other.absent_fp
        self.on_other += other.on_other
        self.after += other.after

    def summary(self) -> dict[str, float | int]:
        return {"runs": self.runs, "IoU before": mean_of(self.before), "absent FP": mean_of(self.absent_fp),
                "on another object": mean_of(self.on_other), "IoU after": mean_of(self.after)}


def absence_runs(present: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs [start, end) of frames after frame 0 where `present` (T,) is False."""
    runs, t = [], 1
    while t < len(present):
        if present[t]:
            t += 1
            continue
        start = t
        while t < len(present) and not present[t]:
            t += 1
        runs.append((start, t))
    return runs


def object_figures(truth: np.ndarray, predicted: np.ndarray, events: list[dict],
                   others: np.ndarray | None = None) -> dict[str, EventFigures]:
    """Figures of one object: `truth` and `predicted` (T, H, W) bool masks; `events` its planned events;
    `others` (T, H, W) bool: where the other annotated objects are (None: nowhere)."""
    present = truth.any((1, 2))
    intersection = (truth & predicted).sum((1, 2))
    union = (truth | predicted).sum((1, 2))
    iou = np.where(union > 0, intersection / np.maximum(union, 1), 1.0)
    shown = predicted.any((1, 2))
    on_other = (np.zeros_like(shown) if others is None
                else 2 * (predicted & others).sum((1, 2)) > predicted.sum((1, 2)))  # False where nothing is shown
    figures = {kind: EventFigures() for kind in KINDS}
    for start, end in absence_runs(present):
        kind = next((e["kind"] for e in events if e["start"] < end and start < e["end"]), "other")
        f = figures[kind]
        f.runs += 1
        f.before += [float(iou[t]) for t in range(max(1, start - WINDOW), start) if present[t]]
        f.absent_fp += [bool(v) for v in shown[start:end]]
        f.on_other += [bool(v) for v in on_other[start:end]]
        f.after += [float(iou[t]) for t in range(end, min(len(present), end + WINDOW)) if present[t]]
    return figures


def set_figures(dataset: DavisDataset, predictions: Path, events: dict[str, list[dict]]) -> dict[str, EventFigures]:
    """Event figures of a whole prediction folder, per kind of absence and "all"."""
    totals = {kind: EventFigures() for kind in (*KINDS, "all")}
    for name in dataset.sequence_names:
        annotations = dataset.annotation_paths(name)
        truth = np.stack([read_label_map(p) for p in annotations])
        predicted = np.stack([read_label_map(dataset.prediction_path(predictions, name, p.stem)) for p in annotations])
        for obj in range(1, dataset.num_objects(name) + 1):
            planned = [e for e in events.get(name, []) if e["object"] == obj]
            others = (truth > 0) & (truth != obj)
            for kind, figures in object_figures(truth == obj, predicted == obj, planned, others).items():
                totals[kind].add(figures)
                totals["all"].add(figures)
    return totals


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("long", "cuts"), default="long",
                        help="long (occlusions and exits) or cuts (a cut to another shot and back)")
    parser.add_argument("--root", type=Path, default=None, help="set folder (default runs/long-test, runs/cuts-test)")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"the test set by default ({LONG_TEST_SEED}, cuts {CUTS_TEST_SEED}); the validation set: "
                             f"{LONG_VALIDATION_SEED} (cuts {CUTS_VALIDATION_SEED})")
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--size", type=_size, default=(480, 854), help="HEIGHTxWIDTH (default 480x854)")
    parser.add_argument("--weights", action="append", help=f"weights to score (repeatable; default {DEFAULT_WEIGHTS}, or none with --results)")
    parser.add_argument("--mem-sizes", default=str(SegmenterConfig.mem_size),
                        help="comma-separated --mem-size values to score each model with")
    parser.add_argument("--mem-every", type=int, default=SegmenterConfig.mem_every)
    parser.add_argument("--max-side", type=int, default=640, help="longest side the model sees")
    parser.add_argument("--no-copy", action="store_true", help="leave out the copy-first-mask baseline")
    parser.add_argument("--results", action="append", default=[], metavar="NAME=DIR",
                        help="also score the predictions in DIR under the name NAME (repeatable)")
    parser.add_argument("--device", default="auto", help="device of the model: auto, cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=int, default=None, help="scoring processes (default: one per CPU)")
    args = parser.parse_args(argv)
    args.root = args.root or Path(f"runs/{args.kind}-test")
    if args.seed is None:
        args.seed = LONG_TEST_SEED if args.kind == "long" else CUTS_TEST_SEED
    args.weights = args.weights or ([] if args.results else [DEFAULT_WEIGHTS])
    try:
        args.mem_sizes = [int(m) for m in args.mem_sizes.split(",")]
    except ValueError:
        parser.error(f"--mem-sizes {args.mem_sizes}: expected comma-separated integers")
    if any("=" not in item for item in args.results):
        parser.error("--results expects NAME=DIR")
    if args.sequences < 1 or args.frames < 3:
        parser.error("need --sequences >= 1 and --frames >= 3 (scoring leaves out the first and last frame)")
    return args


def methods(args: argparse.Namespace) -> list[tuple[str, str | Path, Callable[[DavisDataset, Path], None] | None]]:
    """(table name, folder, predict(dataset, out)) of every method to score: a folder name under the
    predictions folder, or the path of existing predictions (predict None)."""
    device = resolve_device(args.device)
    rows = []
    for weights in args.weights:
        model, _ = load_model(weights, device=device)
        for mem_size in args.mem_sizes:
            config = SegmenterConfig(mem_size=mem_size, mem_every=args.mem_every, max_side=args.max_side)
            folder = f"{Path(weights).name}-mem{mem_size}"
            rows.append((f"{weights}, --mem-size {mem_size}", folder,
                         lambda dataset, out, model=model, config=config: predict_dataset(dataset, out, model, config)))
    if not args.no_copy:
        rows.append(("copy-first-mask", "copy", copy_first_mask))
    for item in args.results:
        name, _, folder = item.partition("=")
        rows.append((name, Path(folder), None))
    return rows


def report(args: argparse.Namespace, argv: list[str], dataset: DavisDataset, results: list[dict]) -> str:
    height, width = args.size
    objects = sum(dataset.num_objects(name) for name in dataset.sequence_names)
    threads = f", {torch.get_num_threads()} CPU threads" if resolve_device(args.device).type == "cpu" else ""
    lines = [
        f"{args.kind.capitalize()} set: {len(dataset.sequence_names)} sequences x {args.frames} frames at "
        f"{width}x{height}, {objects} objects, seed {args.seed} ({args.root}, fingerprint {fingerprint(dataset)}). "
        "J&F: DAVIS-2017 metrics over frames 1 .. N-2. Event figures over runs of frames where an object is absent "
        "(see benchmarks/long.py).",
        "",
        "| method | J&F | J | F | IoU before | absent FP | on another object | IoU after | fps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        e = r["events"]["all"]
        cells = [cell(r[key], 3) for key in ("J&F-Mean", "J-Mean", "F-Mean")]
        cells += [cell(e[key]) for key in ("IoU before", "absent FP", "on another object", "IoU after")]
        cells.append(cell(r["fps"], 1))
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    kinds = [kind for kind in KINDS if kind == "other" or any(r["events"][kind]["runs"] for r in results)]
    lines += ["", "By kind of absence (runs; IoU before / absent FP / IoU after):", "",
              "| method | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for r in results:
        cells = [f"{e['runs']}: " + " / ".join(cell(e[key]) for key in ("IoU before", "absent FP", "IoU after"))
                 for e in (r["events"][kind] for kind in kinds)]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    lines += ["", f"fps: predicting the set at --max-side {args.max_side}, reading JPEGs and writing PNGs "
                  f"included ({resolve_device(args.device)}{threads}).",
              "", f"Command: `python benchmarks/long.py {shlex.join(argv)}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    rows = methods(args)
    dataset = heldout_set(args.root, args.sequences, args.frames, args.size, args.seed, kind=args.kind)
    events = json.loads((args.root / "events.json").read_text())
    predictions = Path(f"{args.root}-predictions")
    frames = args.sequences * args.frames
    results = []
    for name, folder, predict in rows:
        fps = None  # not known for predictions made elsewhere
        if predict is None:
            out = Path(folder)
        else:
            out = predictions / folder
            fps = frames / timed_prediction(predict, dataset, out)
        scores = evaluate_folder(dataset, out, args.workers).global_scores()
        figures = {kind: f.summary() for kind, f in set_figures(dataset, out, events).items()}
        results.append({"name": name, **scores, "events": figures, "fps": fps})
        print(f"{name}: J&F-Mean {scores['J&F-Mean']:.3f}, IoU after {cell(figures['all']['IoU after'])}, "
              f"absent FP {cell(figures['all']['absent FP'])} (on another object "
              f"{cell(figures['all']['on another object'])})", file=sys.stderr)
    return publish(predictions, report(args, argv, dataset, results), results)


if __name__ == "__main__":
    try:
        main()
    except StmaError as error:
        sys.exit(f"error: {error}")
