"""Segment a video from its first-frame mask with the Python API.

    python examples/api.py examples/carphone.mp4 examples/carphone_mask.png out_dir

Writes out_dir/00000.png, 00001.png, ...: one palette PNG of object ids per frame.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from stma_cli.device import resolve_device
from stma_cli.hub import load_model
from stma_cli.inference.segmenter import Segmenter, SegmenterConfig
from stma_cli.io.masks import read_mask, write_mask
from stma_cli.io.video import open_video


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Segment a video from its first-frame mask.")
    parser.add_argument("video", help="video file or folder of frames")
    parser.add_argument("mask", help="palette PNG of the first frame's objects")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--weights", help="weights folder, shipped name or Hub repo id (default: stma-tiny)")
    args = parser.parse_args(argv)

    model, weights = load_model(args.weights, device=resolve_device("auto"))
    segmenter = Segmenter(model, SegmenterConfig())  # the defaults of `stma segment`
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with open_video(args.video) as video:
        first = read_mask(args.mask, size=(video.width, video.height))
        for index, frame in enumerate(video):
            # The mask goes in on frame 0 only; after that the segmenter carries the objects in its memory.
            result = segmenter.step(frame, first.labels if index == 0 else None)
            write_mask(args.out_dir / f"{index:05d}.png", result.labels, first.palette)
            areas = {object_id: int((result.labels == object_id).sum()) for object_id in result.object_ids}
            print(f"frame {index}: object pixels {areas}")
    print(f"{index + 1} masks written to {args.out_dir} with {weights.model_id}")


if __name__ == "__main__":
    main()
