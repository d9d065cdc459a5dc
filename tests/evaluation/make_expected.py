"""Produce tests/evaluation/data/expected_davis.json, the reference scores of the synthetic data set.

Not run by pytest. The numbers come from an implementation independent of stma: the per-frame J
and F of vos-benchmark 0.1.0 (PyPI `vos-benchmark`, whose Evaluator reproduces the official DAVIS
2017 toolkit's db_eval_iou and f_measure with OpenCV's dilation and scikit-image's disk). It ran
in a scratch virtual environment, never in the project's:

    python3 -m venv /tmp/vosb
    /tmp/vosb/bin/pip install vos-benchmark==0.1.0
    /tmp/vosb/bin/python tests/evaluation/make_expected.py

vos-benchmark reports per-object J and F means only; Recall and Decay are computed below from its
per-frame scores with the toolkit's db_statistics definitions. The data set is built so that
vos-benchmark's bookkeeping equals the toolkit's semi-supervised protocol: every object is
present in the annotation of frame 1, annotations are fed with void (255) set to background as
the toolkit does, and frames are scored from the second to the second-to-last.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from vos_benchmark.evaluator import Evaluator

import synthetic_davis

OUTPUT = Path(__file__).parent / "data" / "expected_davis.json"


def db_statistics(values: list[float]) -> tuple[float, float, float]:
    """Mean, Recall (> 0.5) and Decay over four overlapping quarters, as in davis2017/utils.py."""
    values = np.asarray(values, dtype=float)
    mean = float(np.nanmean(values))
    recall = float(np.nanmean(values > 0.5))
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.uint8)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def main() -> None:
    per_object: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results = synthetic_davis.write_dataset(Path(tmp))
        annotations = Path(tmp) / "Annotations" / "480p"
        for name in synthetic_davis.SEQUENCES:
            frames = sorted(p.name for p in (annotations / name).iterdir())[1:-1]
            evaluator = Evaluator(name=name)
            for frame in frames:
                gt = np.array(Image.open(annotations / name / frame))
                gt[gt == 255] = 0
                pred = np.array(Image.open(results / name / frame))
                evaluator.feed_frame(pred, gt)
            j_means, f_means = evaluator.conclude()
            assert sorted(j_means) == list(range(1, len(j_means) + 1)), f"{name}: objects {sorted(j_means)}"
            for obj in sorted(j_means):
                jm, jr, jd = db_statistics(evaluator.object_iou[obj])
                fm, fr, fd = db_statistics(evaluator.boundary_f[obj])
                assert abs(jm - j_means[obj] / 100) < 1e-12 and abs(fm - f_means[obj] / 100) < 1e-12
                per_object[f"{name}_{obj}"] = {
                    "J-Mean": jm, "J-Recall": jr, "J-Decay": jd, "F-Mean": fm, "F-Recall": fr, "F-Decay": fd,
                }

    def column(key: str) -> float:
        return float(np.mean([scores[key] for scores in per_object.values()]))

    overall = {key: column(key) for key in ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")}
    overall = {"J&F-Mean": (overall["J-Mean"] + overall["F-Mean"]) / 2, **overall}
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(json.dumps({"global": overall, "per_object": per_object}, indent=2) + "\n")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
