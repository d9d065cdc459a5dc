"""DAVIS-2017 semi-supervised scoring of a predictions folder, as the official toolkit does it.

For each sequence every annotated frame except the first and the last is scored. Object k of a
frame is the set of pixels equal to k, for k = 1 .. number of objects (the largest id of the first
annotation); an object absent from a prediction is an empty mask. A prediction that holds a larger
id, has another size than its annotation, or is missing is an error, as in the toolkit (which
stops); predictions for the first and last frames are not read.

The results go, like the toolkit's, into the predictions folder: ``global_results-SPLIT.csv``
(means over all objects) and ``per-sequence_results-SPLIT.csv`` (one row per object, named
``SEQ_OBJ``), floats written with three decimals.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stma_cli.errors import StmaError
from stma_cli.evaluation.datasets import DavisDataset
from stma_cli.io.masks import read_label_map
from stma_cli.evaluation.metrics import BOUNDARY_THRESHOLD, Statistics, boundary_f_measure, region_similarity, statistics
from stma_cli.io.atomic import atomic_path

GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")


def global_csv_name(split: str) -> str:
    """File name of the global results table for `split`."""
    return f"global_results-{split}.csv"


def sequence_csv_name(split: str) -> str:
    """File name of the per-object results table for `split`."""
    return f"per-sequence_results-{split}.csv"


@dataclass(frozen=True)
class ObjectResult:
    """J and F statistics of one object of one sequence."""

    sequence: str
    object_id: int
    j: Statistics
    f: Statistics

    @property
    def name(self) -> str:
        """The toolkit's row name, ``SEQ_OBJ``."""
        return f"{self.sequence}_{self.object_id}"


@dataclass(frozen=True)
class SequenceScores:
    """Per-frame J and F of one sequence, arrays of shape (objects, scored frames)."""

    j: np.ndarray
    f: np.ndarray

    def object_results(self, sequence: str) -> list[ObjectResult]:
        """Statistics of each object, ids counted from 1."""
        return [
            ObjectResult(sequence, index + 1, statistics(self.j[index]), statistics(self.f[index]))
            for index in range(self.j.shape[0])
        ]


def score_frame(annotation: np.ndarray, prediction: np.ndarray, num_objects: int, bound_th: float = BOUNDARY_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """J and F of objects 1 .. `num_objects` on one frame, from two label maps of the same shape."""
    if annotation.shape != prediction.shape:
        raise ValueError(f"annotation {annotation.shape} and prediction {prediction.shape} differ in shape")
    if prediction.size and int(prediction.max()) > num_objects:
        raise ValueError(f"prediction holds id {int(prediction.max())} but there are {num_objects} objects")
    j = np.empty(num_objects)
    f = np.empty(num_objects)
    for index in range(num_objects):
        gt_object = annotation == index + 1
        pred_object = prediction == index + 1
        j[index] = region_similarity(gt_object, pred_object)
        f[index] = boundary_f_measure(gt_object, pred_object, bound_th)
    return j, f


def _stack(per_frame: list[tuple[np.ndarray, np.ndarray]], num_objects: int) -> SequenceScores:
    if not per_frame:
        return SequenceScores(np.empty((num_objects, 0)), np.empty((num_objects, 0)))
    return SequenceScores(np.stack([j for j, _ in per_frame], axis=1), np.stack([f for _, f in per_frame], axis=1))


def evaluate_sequence(gt_masks: Iterable[np.ndarray], pred_masks: Iterable[np.ndarray], num_objects: int) -> SequenceScores:
    """Score aligned label maps of the frames to score (the caller leaves out the first and last frame)."""
    per_frame = [score_frame(gt, pred, num_objects) for gt, pred in zip(gt_masks, pred_masks, strict=True)]
    return _stack(per_frame, num_objects)


@dataclass(frozen=True)
class EvaluationResults:
    """Per-object statistics of a split, in sequence order, and their global means."""

    split: str
    objects: tuple[ObjectResult, ...]

    def global_scores(self) -> dict[str, float]:
        """The toolkit's global row: means over all objects, J&F-Mean = (J-Mean + F-Mean) / 2."""
        j_mean = _mean(o.j.mean for o in self.objects)
        f_mean = _mean(o.f.mean for o in self.objects)
        values = (
            (j_mean + f_mean) / 2,
            j_mean,
            _mean(o.j.recall for o in self.objects),
            _mean(o.j.decay for o in self.objects),
            f_mean,
            _mean(o.f.recall for o in self.objects),
            _mean(o.f.decay for o in self.objects),
        )
        return dict(zip(GLOBAL_COLUMNS, values))

    def to_dict(self) -> dict:
        """JSON-ready form (NaN as None): split, global scores, and all statistics per object."""
        return {
            "split": self.split,
            "global": {k: _json_float(v) for k, v in self.global_scores().items()},
            "objects": [
                {
                    "Sequence": o.name,
                    "J-Mean": _json_float(o.j.mean),
                    "J-Recall": _json_float(o.j.recall),
                    "J-Decay": _json_float(o.j.decay),
                    "F-Mean": _json_float(o.f.mean),
                    "F-Recall": _json_float(o.f.recall),
                    "F-Decay": _json_float(o.f.decay),
                }
                for o in self.objects
            ],
        }


def _mean(values: Iterable[float]) -> float:
    collected = list(values)
    return float(np.mean(collected)) if collected else math.nan


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def _csv_float(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.3f}"


def write_csvs(results: EvaluationResults, folder: Path) -> tuple[Path, Path]:
    """Write the global and per-sequence tables into `folder`; return their paths."""
    global_path = Path(folder) / global_csv_name(results.split)
    sequence_path = Path(folder) / sequence_csv_name(results.split)
    scores = results.global_scores()
    with atomic_path(global_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(GLOBAL_COLUMNS)
        writer.writerow([_csv_float(scores[column]) for column in GLOBAL_COLUMNS])
    with atomic_path(sequence_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SEQUENCE_COLUMNS)
        for o in results.objects:
            writer.writerow([o.name, _csv_float(o.j.mean), _csv_float(o.f.mean)])
    return global_path, sequence_path


@dataclass(frozen=True)
class _SequenceJob:
    name: str
    annotations: tuple[Path, ...]
    predictions: tuple[Path, ...]
    num_objects: int


def _plan(dataset: DavisDataset, results_dir: Path, name: str) -> _SequenceJob:
    annotations = dataset.annotation_paths(name)
    frames = dataset.frame_paths(name)
    folder = dataset.annotation_dir / name
    if len(annotations) != len(frames):
        raise StmaError(f"{folder}: {len(annotations)} annotations for {len(frames)} frames; scoring needs every frame annotated")
    if len(annotations) < 3:
        raise StmaError(f"{folder}: {len(annotations)} annotated frames; scoring leaves out the first and last and needs at least 3")
    scored = annotations[1:-1]
    predictions = tuple(dataset.prediction_path(results_dir, name, a.stem) for a in scored)
    for path in predictions:
        if not path.is_file():
            raise StmaError(f"{path}: prediction not found (every frame but the first and last is scored)")
    return _SequenceJob(name, tuple(scored), predictions, dataset.num_objects(name))


def _read_pairs(job: _SequenceJob) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for annotation_path, prediction_path in zip(job.annotations, job.predictions):
        annotation = read_label_map(annotation_path)
        prediction = read_label_map(prediction_path)
        if prediction.shape != annotation.shape:
            raise StmaError(
                f"{prediction_path}: prediction is {prediction.shape[1]}x{prediction.shape[0]}, "
                f"the annotation is {annotation.shape[1]}x{annotation.shape[0]}"
            )
        highest = int(prediction.max())
        if highest > job.num_objects:
            raise StmaError(f"{prediction_path}: holds object id {highest}, but sequence '{job.name}' has {job.num_objects} objects")
        yield annotation, prediction


def _score_job(job: _SequenceJob) -> list[ObjectResult]:
    per_frame = [score_frame(gt, pred, job.num_objects) for gt, pred in _read_pairs(job)]
    return _stack(per_frame, job.num_objects).object_results(job.name)


def evaluate_folder(
    dataset: DavisDataset,
    results_dir: Path,
    workers: int | None = None,
    on_sequence_done: Callable[[str], None] | None = None,
) -> EvaluationResults:
    """Score the predictions in `results_dir` (``SEQ/FRAME.png``) and write the two CSV tables there.

    Sequences are scored in `workers` processes (default: one per CPU, at most one per sequence;
    1 scores in this process). `on_sequence_done` is called with each sequence name as it finishes.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise StmaError(f"{results_dir}: results folder not found")
    jobs = [_plan(dataset, results_dir, name) for name in dataset.sequence_names]
    workers = min(workers or os.cpu_count() or 1, max(len(jobs), 1))

    by_name: dict[str, list[ObjectResult]] = {}
    if workers == 1:
        for job in jobs:
            by_name[job.name] = _score_job(job)
            if on_sequence_done is not None:
                on_sequence_done(job.name)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_score_job, job): job.name for job in jobs}
            try:
                for future in as_completed(futures):
                    name = futures[future]
                    by_name[name] = future.result()
                    if on_sequence_done is not None:
                        on_sequence_done(name)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    objects = tuple(result for job in jobs for result in by_name[job.name])
    results = EvaluationResults(split=dataset.split, objects=objects)
    write_csvs(results, results_dir)
    return results
