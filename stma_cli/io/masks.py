"""Object masks: reading the user's masks and writing palette PNGs.

A mask is an (H, W) uint8 array of object ids, 0 being background. Ids are kept exactly as given:
a mask with ids 1, 3 and 7 produces outputs with ids 1, 3 and 7.
"""
from __future__ import annotations

import re
import warnings
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


VOID = 255  # "void" in palette masks (DAVIS): pixels that belong to no object and are not tracked
MAX_FRAME_DIGITS = 18  # fits in 64 bits
LOSSY_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "JPEG2000": "JPEG 2000"}


def _gray_ids(values: np.ndarray, path: Path) -> np.ndarray:
    """Grayscale values as ids; a two-level mask (0 and the largest value of its depth) is binary: id 1."""
    low, high = int(values.min(initial=0)), int(values.max(initial=0))
    if low >= 0 and high in (255, 65535) and np.isin(values, (0, high)).all():
        return (values == high).astype(np.uint8)
    if low < 0 or high > 255:
        raise StmaError(f"{path}: mask values range over {low}..{high}, object ids must be 0..255")
    return values.astype(np.uint8)


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


def _alpha_ids(image: Image.Image, path: Path) -> np.ndarray:
    """An image with an alpha channel (LA, RGBA, PA).

    When the colour channels carry no mask (one colour all over), the alpha channel is the mask:
    opaque (alpha >= 128) is object 1. Otherwise the colours are read as ids and transparent pixels are
    background; colours that are no mask (a cut-out photo) leave the alpha as the mask.
    """
    alpha = np.asarray(image.getchannel("A"))
    colour = np.asarray(image.convert("RGB"))
    opaque = (alpha >= 128).astype(np.uint8)
    if (alpha == 255).all():
        return _colour_ids(colour, path)
    if (colour == colour[0, 0]).all():
        return opaque
    try:
        labels = _colour_ids(colour, path)
    except StmaError:
        return opaque
    labels[alpha == 0] = 0
    return labels


def _lossy_ids(image: Image.Image, path: Path, kind: str) -> np.ndarray:
    """A mask saved in a lossy format: a two-tone (black and white) image is cleaned into object 1 with a
    warning; anything else is refused, since compression noise would turn into dozens of objects."""
    rgb = np.asarray(image.convert("RGB")).astype(np.int16)
    gray = rgb.mean(axis=2)
    colourless = (rgb.max(axis=2) - rgb.min(axis=2) <= 24).mean() >= 0.99
    two_tone = ((gray <= 64) | (gray >= 192)).mean() >= 0.99
    if not (colourless and two_tone):
        raise StmaError(
            f"{path}: {kind} is a lossy format and this mask is not black and white, so its object ids "
            "cannot be read exactly; save it as a PNG"
        )
    warnings.warn(f"{path}: {kind} is a lossy format: read as one object (pixels brighter than 50%); "
                  "save masks as PNG to keep them exact", LossyMaskWarning, stacklevel=3)
    return (gray >= 128).astype(np.uint8)


class LossyMaskWarning(UserWarning):
    """A mask was read from a lossy format (JPEG) and cleaned into a binary mask."""


def _labels(image: Image.Image, path: Path) -> tuple[np.ndarray, list[int] | None]:
    """Object ids (H, W) uint8 and the palette of an opened mask image."""
    if image.format in LOSSY_FORMATS:
        return _lossy_ids(image, path, LOSSY_FORMATS[image.format]), None
    mode = image.mode
    if mode == "P" and "A" not in image.getbands():
        labels = np.array(image, dtype=np.uint8)
        labels[labels == VOID] = 0
        return labels, _full_palette(image.getpalette())
    if mode == "1":
        return np.asarray(image, dtype=np.uint8), None
    if mode in ("L", "I", "I;16", "I;16L", "I;16B", "I;16N"):
        return _gray_ids(np.asarray(image), path), None
    if "A" in image.getbands():
        return _alpha_ids(image, path), None
    if mode == "RGB":
        return _colour_ids(np.asarray(image), path), None
    raise StmaError(f"{path}: unsupported mask image mode {mode}; use a palette or grayscale PNG")


def read_mask(path: str | Path, size: tuple[int, int] | None = None) -> Mask:
    """Read a mask image; `size` = (width, height) of the frames it must match.

    Palette PNGs keep their indices as ids (255 is void: not an object) and their palette; grayscale
    images (8 or 16 bits) keep their values as ids, except a two-level 0/max image, which is object 1;
    RGB images must be gray or use DAVIS palette colours; an alpha channel is the mask when the colours
    carry none. A JPEG mask is cleaned into one object, with a warning, if it is black and white, and
    refused otherwise.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            if size is not None and (width, height) != tuple(size):
                raise StmaError(f"{path}: mask is {width}x{height} but the frames are {size[0]}x{size[1]}")
            image.load()
            labels, palette = _labels(image, path)
    except FileNotFoundError:
        raise StmaError(f"{path}: mask file not found") from None
    except UnidentifiedImageError:
        raise StmaError(f"{path}: not an image") from None
    except Image.DecompressionBombError:
        raise StmaError(f"{path}: image too large to be a mask (more than {2 * Image.MAX_IMAGE_PIXELS} pixels)") from None
    except OSError as exc:
        raise StmaError(f"{path}: cannot read the mask image ({exc.strerror or exc})") from None
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


def parse_mask_arg(arg: str, default_frame: int = 0) -> tuple[int, Path]:
    """Split a `--mask` value: "FRAME:PATH" gives (FRAME, PATH) with 0-based FRAME; "PATH" gives
    (`default_frame`, PATH): the first frame, or the first of --frames."""
    match = re.fullmatch(r"(\d+):(.*)", arg, re.DOTALL)
    if match is None:
        if not arg:
            raise StmaError("--mask: empty value; give PATH or FRAME:PATH")
        return default_frame, Path(arg)
    if not match[2]:
        raise StmaError(f"--mask {arg}: missing the mask path after the frame number")
    if len(match[1]) > MAX_FRAME_DIGITS:
        raise StmaError(f"--mask {arg[:40]}...: frame number {match[1][:20]}... is out of range")
    return int(match[1]), Path(match[2])
