"""Object masks: reading the user's masks and writing palette PNGs.

A mask is an (H, W) uint8 array of object ids, 0 being background. Ids are kept exactly as given:
a mask with ids 1, 3 and 7 produces outputs with ids 1, 3 and 7.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stma_cli.errors import StmaError
from stma_cli.io.atomic import atomic_path


def _davis_palette() -> list[int]:
    """The DAVIS palette (the PASCAL VOC colour map): 256 RGB triplets, flattened."""
    palette: list[int] = []
    for index in range(256):
        red = green = blue = 0
        code = index
        for bit in range(7, -1, -1):
            red |= (code & 1) << bit
            green |= ((code >> 1) & 1) << bit
            blue |= ((code >> 2) & 1) << bit
            code >>= 3
        palette += [red, green, blue]
    return palette


DAVIS_PALETTE: list[int] = _davis_palette()


@dataclass(eq=False)
class Mask:
    """Object ids per pixel and the palette they came with (None: the DAVIS palette is used on output)."""

    labels: np.ndarray
    palette: list[int] | None = None

    @property
    def object_ids(self) -> list[int]:
        """Sorted non-zero ids present in the mask."""
        return [int(i) for i in np.unique(self.labels) if i != 0]


def _full_palette(palette: list[int] | None) -> list[int]:
    """Pad or trim a palette to exactly 256 RGB triplets."""
    if not palette:
        return list(DAVIS_PALETTE)
    return (list(palette) + [0] * 768)[:768]


def _gray_ids(values: np.ndarray, path: Path) -> np.ndarray:
    """Grayscale values as ids; a mask made only of 0 and 255 is binary and becomes id 1."""
    if values.min(initial=0) < 0 or values.max(initial=0) > 255:
        raise StmaError(f"{path}: mask values range over {values.min()}..{values.max()}, object ids must be 0..255")
    values = values.astype(np.uint8)
    if np.isin(values, (0, 255)).all():
        return (values == 255).astype(np.uint8)
    return values


def _colour_ids(rgb: np.ndarray, path: Path) -> np.ndarray:
    """An RGB mask: gray levels are ids, otherwise every colour must be a DAVIS palette colour."""
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return _gray_ids(rgb[..., 0], path)
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    davis = np.asarray(DAVIS_PALETTE, dtype=np.int32).reshape(256, 3)
    davis_codes = (davis[:, 0] << 16) | (davis[:, 1] << 8) | davis[:, 2]
    lookup = dict(zip(davis_codes.tolist(), range(256)))
    unique, inverse = np.unique(codes, return_inverse=True)
    unknown = [code for code in unique.tolist() if code not in lookup]
    if unknown:
        red, green, blue = unknown[0] >> 16, (unknown[0] >> 8) & 255, unknown[0] & 255
        raise StmaError(
            f"{path}: colour ({red}, {green}, {blue}) is not in the DAVIS palette; "
            "save the mask as a palette or grayscale PNG"
        )
    ids = np.array([lookup[code] for code in unique.tolist()], dtype=np.uint8)
    return ids[inverse].reshape(codes.shape)


def read_mask(path: str | Path, size: tuple[int, int] | None = None) -> Mask:
    """Read a mask image; `size` = (width, height) of the frames it must match.

    Palette PNGs keep their indices as ids and their palette; grayscale images keep their values as ids,
    except a binary 0/255 image, which is object 1; RGB images must be gray or use DAVIS palette colours.
    """
    path = Path(path)
    palette: list[int] | None = None
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "P":
                labels = np.asarray(image, dtype=np.uint8)
                palette = _full_palette(image.getpalette())
            elif image.mode == "1":
                labels = np.asarray(image, dtype=np.uint8)
            elif image.mode in ("L", "LA", "I", "I;16"):
                labels = _gray_ids(np.asarray(image.getchannel(0)), path)
            elif image.mode in ("RGB", "RGBA"):
                labels = _colour_ids(np.asarray(image.convert("RGB")), path)
            else:
                raise StmaError(f"{path}: unsupported mask image mode {image.mode}; use a palette or grayscale PNG")
    except FileNotFoundError:
        raise StmaError(f"{path}: mask file not found") from None
    except UnidentifiedImageError:
        raise StmaError(f"{path}: not an image") from None
    except OSError as exc:
        raise StmaError(f"{path}: cannot read the mask image ({exc})") from None
    height, width = labels.shape
    if size is not None and (width, height) != tuple(size):
        raise StmaError(f"{path}: mask is {width}x{height} but the frames are {size[0]}x{size[1]}")
    if not labels.any():
        raise StmaError(f"{path}: mask has no object (every pixel is background 0)")
    return Mask(labels=np.ascontiguousarray(labels), palette=palette)


def write_mask(path: str | Path, labels: np.ndarray, palette: list[int] | None = None) -> None:
    """Write (H, W) uint8 ids as a palette PNG, atomically; `palette` None means the DAVIS palette."""
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be a 2-D uint8 array, got {labels.dtype} {labels.shape}")
    height, width = labels.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(labels).tobytes())
    image.putpalette(_full_palette(palette))
    try:
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
    except OSError as exc:
        raise StmaError(f"{path}: cannot write the mask ({exc.strerror or exc})") from None


def parse_mask_arg(arg: str) -> tuple[int, Path]:
    """Split a `--mask` value: "FRAME:PATH" gives (FRAME, PATH) with 0-based FRAME; "PATH" gives (0, PATH)."""
    match = re.fullmatch(r"(\d+):(.*)", arg)
    if match is None:
        if not arg:
            raise StmaError("--mask: empty value; give PATH or FRAME:PATH")
        return 0, Path(arg)
    if not match[2]:
        raise StmaError(f"--mask {arg}: missing the mask path after the frame number")
    return int(match[1]), Path(match[2])
