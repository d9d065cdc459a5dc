"""Held-out J&F during training, with the same engine and metrics as `stma segment` / `stma eval`."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from stma_cli.evaluation.datasets import DavisDataset
from stma_cli.evaluation.davis import evaluate_folder
from stma_cli.inference.dataset import predict_dataset
from stma_cli.inference.segmenter import SegmenterConfig
from stma_cli.model import STMA
from stma_cli.train.data import VALIDATION_SEED, write_davis_layout


@dataclass
class HeldOutEvaluator:
    """Renders `sequences` validation sequences once (DAVIS layout under `root`), then scores a model.

    The sequences use the validation seed and held-out imagery, never seen in training; the test
    sequences (HELDOUT_SEED) stay out of checkpoint selection.
    """

    root: Path
    sequences: int = 6
    frames: int = 30
    size: tuple[int, int] = (240, 426)
    seed: int = VALIDATION_SEED

    def __call__(self, model: STMA, out: Path) -> dict[str, float]:
        if not (self.root / "ImageSets" / "2017" / "val.txt").exists():
            shutil.rmtree(self.root, ignore_errors=True)
            write_davis_layout(self.root, "synthetic", self.sequences, self.seed, self.frames, self.size)
        dataset = DavisDataset(self.root, "val")
        predictions = Path(out) / "heldout-predictions"
        shutil.rmtree(predictions, ignore_errors=True)
        predict_dataset(dataset, predictions, model, SegmenterConfig(max_side=max(self.size)))
        return evaluate_folder(dataset, predictions, workers=1).global_scores()
