"""YouTube-VOS submission: check the predictions and pack them for the evaluation server."""
from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.evaluation.datasets import YouTubeVOSDataset, image_size
from stma_cli.io.atomic import atomic_path

SUBMISSION_NAME = "submission.zip"


@dataclass(frozen=True)
class Submission:
    """A written submission archive."""

    path: Path
    videos: int
    frames: int


def _check_prediction(path: Path, expected_size: tuple[int, int]) -> None:
    try:
        with Image.open(path) as image:
            file_format, mode, (width, height) = image.format, image.mode, image.size
    except FileNotFoundError:
        raise StmaError(f"{path}: prediction not found") from None
    except OSError as error:
        raise StmaError(f"{path}: cannot read prediction ({error})") from None
    if file_format != "PNG" or mode not in ("P", "L"):
        raise StmaError(f"{path}: prediction must be an indexed (palette) or grayscale PNG, found {file_format} {mode}")
    if (height, width) != expected_size:
        raise StmaError(f"{path}: prediction is {width}x{height}, the frame is {expected_size[1]}x{expected_size[0]}")


def write_submission(
    dataset: YouTubeVOSDataset,
    results_dir: Path,
    zip_path: Path | None = None,
    on_video_done: Callable[[str], None] | None = None,
) -> Submission:
    """Zip ``RESULTS/Annotations/VID/FRAME.png`` for every frame meta.json lists, as ``Annotations/VID/FRAME.png``.

    Every listed frame must have a prediction of the frame's size; anything else in the folder is
    left out. The archive goes to `zip_path` (default ``RESULTS/submission.zip``).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise StmaError(f"{results_dir}: results folder not found")
    zip_path = Path(zip_path) if zip_path is not None else results_dir / SUBMISSION_NAME
    entries: list[tuple[Path, str]] = []
    for name in dataset.sequence_names:
        sequence = dataset.sequence(name)
        frame_paths = dict(zip(sequence.frames, sequence.frame_paths))
        for frame in sequence.output_frames:
            prediction = dataset.prediction_path(results_dir, name, frame)
            _check_prediction(prediction, image_size(frame_paths[frame]))
            entries.append((prediction, f"Annotations/{name}/{frame}.png"))
        if on_video_done is not None:
            on_video_done(name)

    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            for source, arcname in entries:
                archive.write(source, arcname)
    return Submission(path=zip_path, videos=len(dataset.sequence_names), frames=len(entries))
