"""The files in examples/: the clip and its mask fit together, the API example runs, the shell example parses."""
from __future__ import annotations

import importlib.util
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stma_cli.io.masks import read_mask
from stma_cli.io.video import count_frames, open_video

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_clip_and_mask():
    with open_video(EXAMPLES / "carphone.mp4") as video:
        assert (video.width, video.height, count_frames(video)) == (176, 144, 60)
    assert (EXAMPLES / "carphone.mp4").stat().st_size < 300_000
    mask = read_mask(EXAMPLES / "carphone_mask.png", size=(176, 144))
    assert mask.object_ids == [1]
    assert 0.2 < (mask.labels == 1).mean() < 0.6  # head and upper body, not the whole frame


def test_api_example(tmp_path: Path, tiny_weights: Callable[[int], Path], capsys: pytest.CaptureFixture[str]):
    spec = importlib.util.spec_from_file_location("api_example", EXAMPLES / "api.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "out"
    example.main([str(EXAMPLES / "carphone.mp4"), str(EXAMPLES / "carphone_mask.png"), str(out),
                  "--weights", str(tiny_weights(0))])

    assert sorted(p.name for p in out.iterdir()) == [f"{t:05d}.png" for t in range(60)]
    with Image.open(out / "00000.png") as first:
        assert first.mode == "P"
        np.testing.assert_array_equal(np.asarray(first), read_mask(EXAMPLES / "carphone_mask.png").labels)
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"60 masks written to {out}")


def test_shell_example_parses():
    subprocess.run(["bash", "-n", str(EXAMPLES / "segment_folder.sh")], check=True)
