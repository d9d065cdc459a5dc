"""The masks of a job, read in frame order and checked against its video: one label map per annotated
frame, the palette to reuse, and how stma numbered the objects of colour and JSON masks."""
from __future__ import annotations

import numpy as np

from stma_cli.errors import StmaError
from stma_cli.inference.jobs import VideoJob
from stma_cli.io.masks import Numbering, palette_keeping_colours, read_mask
from stma_cli.io.video import VideoSource


def read_job_masks(job: VideoJob, video: VideoSource) -> tuple[dict[int, np.ndarray], list[int] | None,
                                                               dict[str, dict[str, int]]]:
    """Masks by frame index (checked against the frame size), the palette to reuse, and how stma numbered
    the objects of colour and JSON masks (by mask file; the masks are read in frame order, see Numbering)."""
    if not job.masks:
        raise StmaError(f"{job.source}: no mask given (use --mask or --mask-template)")
    masks: dict[int, np.ndarray] = {}
    palette = None
    numbering, legends = Numbering(), {}
    start, stop = job.frames
    for frame, path in sorted(job.masks, key=lambda given: given[0]):
        if frame < start or (stop is not None and frame >= stop):
            raise StmaError(f"{path}: mask for frame {frame}, outside --frames {start}:{'' if stop is None else stop}")
        if video.num_frames is not None and frame >= video.num_frames:
            raise StmaError(f"{path}: mask for frame {frame}, but the video has {video.num_frames} frames")
        names = video.frame_names
        mask = read_mask(path, size=(video.width, video.height), numbering=numbering, frame_index=frame,
                         frame_name=names[frame] if names is not None and frame < len(names) else None,
                         coco_image_id=job.coco_image_id)
        if mask.legend:
            legends[str(path)] = mask.legend
        if frame in masks:
            merged = masks[frame].copy()
            merged[mask.labels != 0] = mask.labels[mask.labels != 0]
            masks[frame] = merged
        else:
            masks[frame] = mask.labels
        palette = palette or mask.palette
    return masks, palette_keeping_colours(palette, legends.values()), legends


def objects_in_order(masks: dict[int, np.ndarray]) -> list[int]:
    """Object ids in order of first appearance (frame, then id)."""
    ids: list[int] = []
    for frame in sorted(masks):
        ids += [int(i) for i in np.unique(masks[frame]) if i != 0 and int(i) not in ids]
    return ids
