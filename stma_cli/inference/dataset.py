"""Predictions for a DAVIS or YouTube-VOS split, written in the layout `stma eval` scores or packs."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.evaluation.datasets import VideoSequence, VosDataset, image_size
from stma_cli.inference.passes import plan_passes, run_pass
from stma_cli.inference.segmenter import Segmenter, SegmenterConfig
from stma_cli.io.exports import COCO_FILE, CocoWriter, write_object_masks
from stma_cli.io.masks import read_label_map, write_mask
from stma_cli.io.video import read_frame
from stma_cli.model import STMA


def predict_dataset(dataset: VosDataset, output_dir: Path, model: STMA, segmenter_config: SegmenterConfig,
                    progress: Callable[[str], None] | None = None, mask_formats: Sequence[str] = ("png",),
                    copy_model: bool = True) -> None:
    """Segment every sequence of `dataset` from its given masks; write `dataset.prediction_path(...)` PNGs.

    Each sequence is one forward pass (`run_pass`, as `stma segment` runs it) from its first given mask, and
    each object starts on the frame whose given mask introduces it; only the dataset's output frames
    are written, with the palette of the sequence's first given mask (DAVIS palette if it has none).
    The palette PNGs are always written (they are what is scored); `mask_formats` may add, beside them in
    each sequence's folder, "coco" (masks.json) and "objects" (<id>/FRAME.png), as `stma segment` writes them.
    `progress` is called with each sequence name when it is done. `copy_model` False tunes `model` for
    inference in place (see `Segmenter`), so that a model loaded only for this is held once in memory.
    """
    segmenter = Segmenter(model, segmenter_config, copy_model=copy_model)
    for name in dataset.sequence_names:
        _predict_sequence(dataset, dataset.sequence(name), Path(output_dir), segmenter, mask_formats)
        if progress is not None:
            progress(name)


def _predict_sequence(dataset: VosDataset, sequence: VideoSequence, output_dir: Path, segmenter: Segmenter,
                      mask_formats: Sequence[str]) -> None:
    masks = _given_masks(sequence)
    object_ids = sorted(sequence.first_appearance)
    palette = _palette(sequence.given_masks[sequence.frames[min(masks)]])
    outputs = set(sequence.output_frames)
    folder = dataset.prediction_path(output_dir, sequence.name, "frame").parent
    coco: CocoWriter | None = None
    for index, labels in _labels(sequence, masks, outputs, segmenter):
        frame = sequence.frames[index]
        if frame in outputs:
            folder.mkdir(parents=True, exist_ok=True)
            write_mask(dataset.prediction_path(output_dir, sequence.name, frame), labels, palette)
            if "objects" in mask_formats:
                write_object_masks(folder, frame, labels, object_ids)
            if "coco" in mask_formats:
                coco = coco or CocoWriter(folder / COCO_FILE, (labels.shape[1], labels.shape[0]), object_ids)
                coco.write(index, frame, labels)
    if coco is not None:
        coco.close()


def _labels(sequence: VideoSequence, masks: dict[int, np.ndarray], outputs: set[str],
            segmenter: Segmenter) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, labels): empty for the output frames before the first given mask, then every frame of
    the forward pass from it."""
    plan = plan_passes("forward", masks)[0]
    paths = sequence.frame_paths
    for index, path in enumerate(paths[:plan.start]):
        if sequence.frames[index] in outputs:
            yield index, np.zeros(image_size(path), np.uint8)
    frames = ((index, read_frame(paths[index])) for index in range(plan.start, len(paths)))
    for index, _, result in run_pass(plan, frames, segmenter, str(paths[0].parent)):
        yield index, result.labels


def _given_masks(sequence: VideoSequence) -> dict[int, np.ndarray]:
    """The given masks by frame index, each with only the objects it introduces: other ids (objects already
    tracked, void 255) become 0."""
    introduced: dict[str, list[int]] = {}
    for object_id, frame in sequence.first_appearance.items():
        introduced.setdefault(frame, []).append(object_id)
    masks = {}
    for frame, path in sequence.given_masks.items():
        index = sequence.frames.index(frame)
        frame_path = sequence.frame_paths[index]
        labels = read_label_map(path)
        size = image_size(frame_path)
        if labels.shape != size:
            raise StmaError(f"{path}: mask is {labels.shape[1]}x{labels.shape[0]}, the frame {frame_path.name} is "
                            f"{size[1]}x{size[0]}")
        masks[index] = np.where(np.isin(labels, introduced.get(frame, [])), labels, 0).astype(np.uint8)
    return masks


def _palette(path: Path) -> list[int] | None:
    with Image.open(path) as image:
        return image.getpalette() if image.mode == "P" else None
