"""Masks that were read wrongly or crashed the batch, and video names that led outside the output folder.

One `stma segment --json` process gets every case between two good videos, `a_good` (first) and `z_good`
(last). Each case is checked as the user sees it: its JSON line and its one stderr line, the files in its
output folder, and that nothing changed outside the output folder.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from badinput_corpus import (
    FRAMES,
    HEIGHT,
    WIDTH,
    Run,
    assert_clean_stderr,
    changed_outside,
    finished_frames,
    object_mask,
    run_stma,
    temporary_files,
    tree,
    write_bomb_png,
    write_frame_folder,
    write_mask,
    write_video,
)
from PIL import Image

from stma_cli.io.masks import DAVIS_PALETTE
from stma_cli.io.logits import read_logits


def _binary() -> np.ndarray:
    return object_mask()  # 0/255, one rectangle


def _save(path: Path, array: np.ndarray, mode: str | None = None, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path, **options)


def _palette(path: Path, labels: np.ndarray) -> None:
    image = Image.fromarray(labels, "P")
    image.putpalette(DAVIS_PALETTE)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _two_ids() -> np.ndarray:
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[4:14, 4:20], labels[30:44, 40:60] = 1, 2
    return labels


def _with_void(labels: np.ndarray) -> np.ndarray:
    labels = labels.copy()
    labels[20:26, :] = 255  # a DAVIS void band
    return labels


def _rgba(colour: np.ndarray) -> np.ndarray:
    return np.dstack([colour, _binary()])


def _anti_aliased() -> np.ndarray:
    """A red and a green box side by side on black, with a one-pixel anti-aliased edge: 8 colours, 2 objects."""
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    rgb[9:31, 9:30], rgb[9:31, 30:51] = (140, 0, 0), (0, 140, 0)  # the blend with black around each box
    rgb[10:30, 10:30], rgb[10:30, 30:50] = (255, 0, 0), (0, 255, 0)
    rgb[10:30, 29] = (200, 55, 0)  # where red meets green
    rgb[(9, 9, 30, 30), (9, 50, 9, 50)] = [(60, 0, 0), (0, 60, 0), (60, 0, 0), (0, 60, 0)]  # the corners
    return rgb


def _json(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _labelme(group_id: int) -> str:
    return json.dumps({"shapes": [{"label": "x", "points": [[4, 4], [20, 20]], "group_id": group_id,
                                   "shape_type": "rectangle"}], "imageWidth": WIDTH, "imageHeight": HEIGHT})


# stem: (writes masks/<stem>.png; the content decides the format, as Pillow reads it, expected objects or error)
# Masks that are good now: each gives `ok` with these objects.
GOOD_MASKS: dict[str, tuple[Callable[[Path], object], list[int]]] = {
    # The binary mask saved as JPEG became 26 objects: now one object, with a warning.
    "jpeg_binary": (lambda p: _save(p, _binary(), format="JPEG", quality=75), [1]),
    # The object only in alpha became a whole-frame object.
    "rgba_alpha": (lambda p: _save(p, _rgba(np.full((HEIGHT, WIDTH, 3), 255, np.uint8)), "RGBA"), [1]),
    "la_alpha": (lambda p: _save(p, np.dstack([np.zeros((HEIGHT, WIDTH), np.uint8), _binary()]), "LA"), [1]),
    "cutout_photo": (lambda p: _save(p, _rgba(np.random.default_rng(3).integers(0, 256, (HEIGHT, WIDTH, 3),
                                                                                 dtype=np.uint8)), "RGBA"), [1]),
    # DAVIS void (255) was tracked as an object.
    "palette_void": (lambda p: _palette(p, _with_void(_two_ids())), [1, 2]),
    # 16-bit PNG masks crashed the batch.
    "png16_binary": (lambda p: _save(p, _binary().astype(np.uint16) * 257), [1]),
    "png16_ids": (lambda p: _save(p, _two_ids().astype(np.uint16)), [1, 2]),
    "tiff32_ids": (lambda p: _save(p, _two_ids().astype(np.int32), format="TIFF"), [1, 2]),
    # Each blended edge colour became an object of its own.
    "anti_aliased": (lambda p: _save(p, _anti_aliased()), [1, 2]),
}
# stem: (writer, the file the error names, what it says)
BAD_MASKS: dict[str, tuple[Callable[[Path], object], str]] = {
    "jpeg_colours": (lambda p: _save(p, np.asarray(DAVIS_PALETTE, np.uint8).reshape(256, 3)[_two_ids()],
                                     format="JPEG"), "JPEG is a lossy format and this mask is not black and white"),
    "png16_beyond_255": (lambda p: _save(p, _two_ids().astype(np.uint16) * 1000),
                         "mask values range over 0..2000, object ids must be 0..254"),
    # Object 255 was written as 255, which is void when read back.
    "gray_object_255": (lambda p: _save(p, np.where(_two_ids() == 2, 255, _two_ids()).astype(np.uint8)),
                        "mask values range over 0..255, object ids must be 0..254 (255 is void when read back)"),
    "labelme_group_255": (lambda p: _json(p, _labelme(255)), "LabelMe group ids are object ids and must be 1..254"),
    # A RecursionError, reported as the video's error.
    "nested_json": (lambda p: _json(p, '{"shapes": ' + "[" * 100_000 + "]" * 100_000 + "}"),
                    "the mask is nested too deeply to be read"),
    "only_void": (lambda p: _palette(p, np.full((HEIGHT, WIDTH), 255, np.uint8)), "mask has no object"),
    "bomb": (write_bomb_png, "image too large to be a mask"),
}
# Video names: (path under inputs/, writer, what the error says); the error names the video.
BAD_VIDEOS: dict[str, tuple[str, Callable[[Path], object], str]] = {
    "dot_dot": ("...mp4", write_video, "its name gives the output folder name '..', which is not a folder inside"),
    "dot": ("..mp4", write_video, "its name gives the output folder name '.', which is not a folder inside"),
    "name_too_long": ("x" * 300 + ".mp4", lambda p: None, "File name too long"),
    "frame_bomb": ("frame_bomb", lambda p: (write_frame_folder(p, 2), write_bomb_png(p / "00002.png")),
                   "image too large"),
}
GOOD = ("a_good", "z_good")


@dataclass
class Batch:
    run: Run
    reports: dict[str, dict]  # video path: its JSON report
    inputs: Path
    output: Path
    changed_outside: list[str]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, random_weights: Path) -> Batch:
    root = tmp_path_factory.mktemp("masks-and-names")
    inputs, masks = root / "inputs", root / "inputs" / "masks"
    masks.mkdir(parents=True)
    videos = [write_video(inputs / "a_good.mp4")]
    for stem, (writer, _) in {**GOOD_MASKS, **BAD_MASKS}.items():
        videos.append(write_video(inputs / f"{stem}.mp4"))
        writer(masks / f"{stem}.png")
    for name, writer, _ in BAD_VIDEOS.values():
        writer(inputs / name)
        videos.append(inputs / name)
    # An output folder that already holds a folder named overlay.mp4 (an OSError on the rename, before).
    videos.append(write_video(inputs / "overlay_is_a_folder.mp4"))
    (root / "out" / "overlay_is_a_folder" / "overlay.mp4").mkdir(parents=True)
    videos.append(write_video(inputs / "z_good.mp4"))
    for stem in ("a_good", "z_good", "overlay_is_a_folder", "frame_bomb"):
        write_mask(masks / f"{stem}.png")
    before = tree(root)
    run = run_stma(["segment", *map(str, videos), "--mask-template", "masks/{stem}.png",
                    "--weights", str(random_weights), "--output", str(root / "out"), "--json"], root)
    reports = {report["video"]: report for report in map(json.loads, run.stdout.splitlines())}
    return Batch(run, reports, inputs, root / "out", changed_outside(before, tree(root), "out"))


def test_exit_code_summary_and_one_line_each(batch: Batch) -> None:
    failed = len(BAD_MASKS) + len(BAD_VIDEOS) + 1
    assert batch.run.returncode == 1
    assert f"stma: {len(GOOD_MASKS) + 2} done, 0 skipped, {failed} failed" in batch.run.stderr.splitlines()
    assert len(batch.run.error_lines) == failed
    assert_clean_stderr(batch.run)
    assert len(batch.reports) == len(GOOD_MASKS) + failed + 2  # every video has its JSON line


def test_nothing_changed_outside_the_output_folder(batch: Batch) -> None:
    """`...mp4` (stem `..`) wrote masks, overlay, logits and manifest into the output's parent: now nothing."""
    assert batch.changed_outside == []
    assert sorted(p.name for p in batch.output.iterdir()) == sorted([*GOOD, *GOOD_MASKS, "overlay_is_a_folder"])


@pytest.mark.parametrize("stem", GOOD_MASKS)
def test_masks_read_right(batch: Batch, stem: str) -> None:
    report = batch.reports[str(batch.inputs / f"{stem}.mp4")]
    assert report["status"] == "ok" and report["objects"] == GOOD_MASKS[stem][1]
    folder = batch.output / stem
    assert finished_frames(folder) == FRAMES
    first = np.asarray(Image.open(folder / "masks" / "00000.png"))
    assert set(np.unique(first)) == {0, *GOOD_MASKS[stem][1]}  # no void, no noise objects
    assert read_logits(folder / "logits.h5")[0].shape[:2] == (FRAMES, len(GOOD_MASKS[stem][1]) + 1)


def test_alpha_is_the_mask(batch: Batch) -> None:
    for stem in ("rgba_alpha", "la_alpha", "cutout_photo"):
        first = np.asarray(Image.open(batch.output / stem / "masks" / "00000.png"))
        np.testing.assert_array_equal(first, _binary() // 255)


def test_void_is_background_in_the_output(batch: Batch) -> None:
    first = np.asarray(Image.open(batch.output / "palette_void" / "masks" / "00000.png"))
    np.testing.assert_array_equal(first, np.where(_with_void(_two_ids()) == 255, 0, _two_ids()))


def _warnings(batch: Batch, stem: str) -> list[str]:
    mask = batch.inputs / "masks" / f"{stem}.png"
    return [line for line in batch.run.stderr.splitlines() if line.startswith(f"stma: warning: {mask}: ")]


def test_jpeg_mask_warns_once(batch: Batch) -> None:
    mask = batch.inputs / "masks" / "jpeg_binary.png"
    assert _warnings(batch, "jpeg_binary") == [f"stma: warning: {mask}: JPEG is a lossy format: read as one object "
                                               "(pixels brighter than 50%); save masks as PNG to keep them exact"]
    assert len([line for line in batch.run.stderr.splitlines() if line.startswith("stma: warning:")]) == 3


def test_anti_aliased_mask_says_what_it_snapped(batch: Batch) -> None:
    mask = batch.inputs / "masks" / "anti_aliased.png"
    assert _warnings(batch, "anti_aliased") == [
        f"stma: warning: {mask}: 5 anti-aliased edge colours read as the colours they blend: #003c00 (2 px) -> "
        "#000000, #008c00 (60 px) -> #00ff00, #3c0000 (2 px) -> #000000, #8c0000 (60 px) -> #ff0000, #c83700 (20 px) "
        "-> #ff0000",
        f"stma: warning: {mask}: objects numbered by stma: #ff0000 -> 1, #00ff00 -> 2"]


@pytest.mark.parametrize("stem", BAD_MASKS)
def test_bad_masks_are_one_error_line(batch: Batch, stem: str) -> None:
    mask = batch.inputs / "masks" / f"{stem}.png"
    report = batch.reports[str(batch.inputs / f"{stem}.mp4")]
    assert report["status"] == "error"
    assert report["error"].startswith(f"{mask}: ") and BAD_MASKS[stem][1] in report["error"]
    assert f"stma: error: {report['error']}" in batch.run.error_lines
    assert not (batch.output / stem).exists()  # refused before any output


@pytest.mark.parametrize("case", BAD_VIDEOS)
def test_bad_video_names_are_one_error_line(batch: Batch, case: str) -> None:
    name, _, says = BAD_VIDEOS[case]
    video = batch.inputs / name
    report = batch.reports[str(video)]
    assert report["status"] == "error" and report["error"].startswith(f"{video}")
    assert says in report["error"]
    assert f"stma: error: {report['error']}" in batch.run.error_lines


def test_a_folder_named_overlay_mp4_is_kept_and_reported(batch: Batch) -> None:
    folder = batch.output / "overlay_is_a_folder"
    report = batch.reports[str(batch.inputs / "overlay_is_a_folder.mp4")]
    assert report["error"] == f"{folder / 'overlay.mp4'}: is a folder, where stma writes a file; move it away"
    assert sorted(p.name for p in folder.iterdir()) == ["overlay.mp4"] and (folder / "overlay.mp4").is_dir()


def test_good_videos_around_them_are_complete(batch: Batch) -> None:
    for stem in GOOD:
        assert batch.reports[str(batch.inputs / f"{stem}.mp4")]["status"] == "ok"
        assert finished_frames(batch.output / stem) == FRAMES
        assert sorted(p.name for p in (batch.output / stem).iterdir()) == [
            "logits.h5", "manifest.json", "masks", "overlay.mp4"]
    assert temporary_files(batch.output) == []
