"""Finished output folders with known masks and a source video, written without the model."""
from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from review_folders import HEIGHT, WIDTH, scene
from stma_cli.io.output import VideoOutput
from stma_cli.io.video_writer import VideoWriter

FolderFactory = Callable[..., Path]


@pytest.fixture
def make_folder(tmp_path: Path) -> FolderFactory:
    """`make_folder(labels, cut=None, presence=None, name="video")`: a finished folder whose masks are
    `labels` (T, H, W), with a source video that cuts to another shot at frame `cut`."""

    def make(labels: np.ndarray, cut: int | None = None, presence: np.ndarray | None = None,
             name: str = "video") -> Path:
        video = tmp_path / f"{name}.mp4"
        with VideoWriter(video, Fraction(10), WIDTH, HEIGHT, crf=10) as writer:
            for t in range(len(labels)):
                writer.write(scene(t, cut))
        folder = tmp_path / "out" / name
        ids = sorted(int(i) for i in np.unique(labels) if i)
        with VideoOutput(folder, frame_names=None, fps=Fraction(10), size=(WIDTH, HEIGHT), palette=None,
                         object_ids=ids, overlay=False, logits=False) as output:
            for t, frame_labels in enumerate(labels):
                output.write(t, scene(t, cut), frame_labels.astype(np.uint8), np.ones(len(ids), np.float32))
            output.finish({"provenance": {"input": {"path": str(video.resolve())}}})
        if presence is not None:
            import h5py

            with h5py.File(folder / "logits.h5", "w") as file:
                file["presence"] = presence
        return folder

    return make
