"""Validation J&F during training, with the same engine and metrics as `stma segment` / `stma eval`."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from stma_cli.evaluation.datasets import DavisDataset
from stma_cli.evaluation.davis import evaluate_folder
from stma_cli.inference.dataset import predict_dataset
from stma_cli.inference.segmenter import SegmenterConfig
from stma_cli.model import STMA
from stma_cli.train.data import LONG_VALIDATION_SEED, VALIDATION_SEED, write_davis_layout


@dataclass
class ValidationSet:
    """One validation set: `sequences` sequences of `kind` (see `write_davis_layout`) rendered once under `root`."""

    root: Path
    kind: str
    sequences: int
    frames: int
    seed: int
    size: tuple[int, int] = (240, 426)

    def score(self, model: STMA, predictions: Path) -> float:
        """J&F-Mean of `model` with the defaults of `stma segment` (predictions are written to `predictions`)."""
        if not (self.root / "ImageSets" / "2017" / "val.txt").exists():
            shutil.rmtree(self.root, ignore_errors=True)
            write_davis_layout(self.root, self.kind, self.sequences, self.seed, self.frames, self.size)
        dataset = DavisDataset(self.root, "val")
        shutil.rmtree(predictions, ignore_errors=True)
        predict_dataset(dataset, predictions, model, SegmenterConfig(max_side=max(self.size)))
        return evaluate_folder(dataset, predictions, workers=1).global_scores()["J&F-Mean"]


@dataclass
class ValidationEvaluator:
    """Scores a model on a short and a long validation set; their mean is the J&F-Mean that keeps best/.

    Both use validation seeds and held-out imagery, never seen in training; the test sequences
    (HELDOUT_SEED, LONG_TEST_SEED) stay out of checkpoint selection. The short set (30 frames, 2-3
    objects) checks plain tracking; the long one (90 frames of `events` clips) occlusion, exits and
    look-alikes.
    """

    root: Path
    sequences: int = 6
    long_sequences: int = 3

    def __post_init__(self) -> None:
        self.sets = {
            "short": ValidationSet(self.root / "short", "synthetic", self.sequences, 30, VALIDATION_SEED),
            "long": ValidationSet(self.root / "long", "long", self.long_sequences, 90, LONG_VALIDATION_SEED),
        }

    def __call__(self, model: STMA, out: Path) -> dict[str, float]:
        scores = {f"{name} J&F": s.score(model, Path(out) / "validation-predictions" / name)
                  for name, s in self.sets.items() if s.sequences}
        return {"J&F-Mean": sum(scores.values()) / len(scores), **scores}
