"""Object masks: reading the user's masks and writing palette PNGs.

A mask is an (H, W) uint8 array of object ids, 0 being background. Ids are kept exactly as given:
a mask with ids 1, 3 and 7 produces outputs with ids 1, 3 and 7. A mask file is read by its content,
whatever its name:

- palette PNGs (DAVIS), grayscale images of ids (8 or 16 bits), binary 0/255 images (object 1);
- colour images (RGB, RGBA): DAVIS palette colours are their palette ids; any other colours are
  objects numbered in the order they first appear, row by row from the top left (black and
  transparent pixels are background);
- LabelMe JSON (polygons, rectangles, circles): a shape's integer group id is its object id (shapes
  that share one are one object); shapes without one are objects numbered in file order;
- COCO JSON (polygons, RLE compressed or not) of the image that is the mask's frame: each annotation
  is an object, numbered in file order.

Objects numbered by stma (colours, shapes without group id, COCO annotations) take ids after the
highest id the video's earlier masks used, and a colour keeps its id across a video's masks (see
`Numbering`); the numbering is reported with a MaskIdsWarning and kept in the manifest.

One rule for ids and void, for every reader and writer: object ids are 1..254 (`MAX_ID`), and 255 is
DAVIS's void, which is not an object. 255 in a palette mask (or the DAVIS void colour in an RGB mask) is
void and read as background; any other way of naming object 255 or more (a grayscale value, a LabelMe
group id, more objects than 254) is refused, naming the mask, since written out as 255 the object would
be void when read back. So `write_mask` writes 255 only as void.
"""
from __future__ import annotations

import itertools
import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from stma_cli.errors import StmaError
from stma_cli.io.atomic import atomic_path
from stma_cli.io.safe_fs import read_json, require_regular


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
    """Object ids per pixel and the palette they came with (None: the DAVIS palette is used on output).

    `legend` says how stma numbered the objects of a colour or JSON mask ("#ff0000": 1, ...), else None.
    """

    labels: np.ndarray
    palette: list[int] | None = None
    legend: dict[str, int] | None = None

    @property
    def object_ids(self) -> list[int]:
        """Sorted non-zero ids present in the mask."""
        return [int(i) for i in np.unique(self.labels) if i != 0]


def palette_keeping_colours(palette: list[int] | None, legends: Iterable[dict[str, int]]) -> list[int] | None:
    """`palette` (None: DAVIS) with each object that a colour mask numbered in its own colour, so that the
    output masks and overlay show the colours the user painted; None when no mask was a colour mask."""
    colours = [(key, object_id) for legend in legends for key, object_id in legend.items()
               if re.fullmatch(r"#[0-9a-f]{6}", key)]
    if not colours:
        return palette
    full = full_palette(palette if palette is not None else DAVIS_PALETTE)
    for key, object_id in colours:
        full[3 * object_id:3 * object_id + 3] = [int(key[i:i + 2], 16) for i in (1, 3, 5)]
    return full


def full_palette(palette: list[int] | None) -> list[int]:
    """Pad or trim a palette to exactly 256 RGB triplets."""
    if not palette:
        return list(DAVIS_PALETTE)
    return (list(palette) + [0] * 768)[:768]


@dataclass
class Numbering:
    """The ids stma gives across the masks of one video: a colour keeps its id from mask to mask; any
    other object stma numbers (a new colour, a LabelMe shape without group id, a COCO annotation) takes
    the id after the highest used so far by any of the video's masks."""

    colours: dict[int, int] = field(default_factory=dict)  # 0xRRGGBB -> object id
    highest: int = 0

    def new_id(self, path: Path) -> int:
        if self.highest >= MAX_ID:
            raise StmaError(f"{path}: more than {MAX_ID} objects; object ids must be 1..{MAX_ID} ({VOID} is void)")
        self.highest += 1
        return self.highest


class MaskIdsWarning(UserWarning):
    """How stma numbered the objects of a colour or JSON mask (once per mask file)."""


VOID = 255  # "void" in palette masks (DAVIS): pixels that belong to no object and are not tracked
MAX_ID = 254  # the highest object id: 255 is void
MAX_COLOURS = 64  # more distinct colours than this is an anti-aliased or lossy image, not a mask
MIN_PIXELS_PER_COLOUR = 4  # fewer, on average, is a photo or noise, not flat object colours
MAX_FRAME_DIGITS = 18  # fits in 64 bits
LOSSY_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "JPEG2000": "JPEG 2000"}
MAX_COORDINATE = 1e9  # pixels: far beyond any frame, and small enough that polygon filling cannot overflow
EDGE_REACH = 2  # anti-aliasing blends colours over at most this many pixels
BLEND_TOLERANCE = 16.0  # RGB distance from a mix of two or three colours within which a colour is that mix
_DAVIS_IDS = {(red << 16) | (green << 8) | blue: index
              for index, (red, green, blue) in enumerate(zip(*[iter(DAVIS_PALETTE)] * 3))}  # 0xRRGGBB -> index


def _gray_ids(values: np.ndarray, path: Path) -> np.ndarray:
    """Grayscale values as ids; a two-level mask (0 and the largest value of its depth) is binary: id 1."""
    low, high = int(values.min(initial=0)), int(values.max(initial=0))
    if low >= 0 and high in (255, 65535) and np.isin(values, (0, high)).all():
        return (values == high).astype(np.uint8)
    if low < 0 or high > MAX_ID:
        raise StmaError(f"{path}: mask values range over {low}..{high}, object ids must be 0..{MAX_ID} ({VOID} is "
                        "void when read back); renumber the objects, or save DAVIS void as a palette PNG")
    return values.astype(np.uint8)


def _colour_ids(rgb: np.ndarray, path: Path, numbering: Numbering) -> tuple[np.ndarray, dict[str, int] | None]:
    """An RGB mask: gray levels are ids; DAVIS palette colours their palette ids; other colours objects
    numbered by `numbering` in the order they first appear (row by row), black being background."""
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return _gray_ids(rgb[..., 0], path), None
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    unique, inverse = np.unique(codes.ravel(), return_inverse=True)
    davis = _davis_ids(unique, inverse, codes.shape)
    if davis is not None:
        return davis, None
    coloured = int((codes != 0).sum())
    if len(unique) - 1 > MAX_COLOURS or coloured < MIN_PIXELS_PER_COLOUR * (len(unique) - 1):
        raise StmaError(f"{path}: {len(unique)} colours, more than a mask has ({MAX_COLOURS} at most, each on "
                        f"{MIN_PIXELS_PER_COLOUR} pixels or more on average); draw each object in one flat colour "
                        "without anti-aliasing, and save as PNG")
    snapped = _snap_edge_colours(codes, path)
    if snapped is not None:
        codes = snapped
        unique, inverse = np.unique(codes.ravel(), return_inverse=True)
        davis = _davis_ids(unique, inverse, codes.shape)
        if davis is not None:
            return davis, None
    first_pixel = np.full(len(unique), codes.size)
    np.minimum.at(first_pixel, inverse, np.arange(codes.size))
    ids = np.zeros(len(unique), np.uint8)
    legend = {}
    for position in np.argsort(first_pixel, kind="stable").tolist():
        code = int(unique[position])
        if code == 0:
            continue  # black is background
        if code not in numbering.colours:
            numbering.colours[code] = numbering.new_id(path)
        ids[position] = numbering.colours[code]
        legend[f"#{code:06x}"] = int(ids[position])
    return ids[inverse].reshape(codes.shape), legend


def _davis_ids(unique: np.ndarray, inverse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """The ids of a colour mask (its colour codes `unique`, and `inverse` as from np.unique) whose colours are
    all DAVIS palette colours: their palette indices, the void colour being background; None otherwise."""
    ids = [_DAVIS_IDS.get(code) for code in unique.tolist()]
    if None in ids:
        return None
    return np.array([0 if i == VOID else i for i in ids], dtype=np.uint8)[inverse].reshape(shape)


class EdgeColourWarning(UserWarning):
    """Anti-aliased edge colours of a colour mask were read as the object colours they blend."""


def _snap_edge_colours(codes: np.ndarray, path: Path) -> np.ndarray | None:
    """Colour codes (H, W) with the blends of anti-aliased edges replaced by the colour each holds most of, with
    one EdgeColourWarning; None when there are none.

    An edge colour lies only on edges (none of its pixels has all four neighbours of its colour) and is,
    within BLEND_TOLERANCE, a mix of two or three solid colours (ones with such inner pixels) found within
    EDGE_REACH pixels of it, or of black, the background: what anti-aliasing draws between two objects, an
    object and the background, or where three meet. A small or thin object in a colour of its own is no
    such mix, and stays an object.
    """
    height, width = codes.shape
    padded = np.pad(codes, 1, mode="edge")
    inner = np.ones(codes.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        inner &= padded[dy:dy + height, dx:dx + width] == codes
    solid = np.union1d(codes[inner], [0])
    ys, xs = np.nonzero(~np.isin(codes, solid))
    if not len(ys):
        return None
    edges = codes[ys, xs].astype(np.int64)
    pairs = []  # edge colour << 24 | a solid colour within EDGE_REACH of one of its pixels
    for dy in range(-EDGE_REACH, EDGE_REACH + 1):
        for dx in range(-EDGE_REACH, EDGE_REACH + 1):
            around = codes[np.clip(ys + dy, 0, height - 1), np.clip(xs + dx, 0, width - 1)]
            keep = np.isin(around, solid)
            pairs.append(np.unique((edges[keep] << 24) | around[keep]))
    near: dict[int, list[int]] = {int(edge): [] for edge in np.unique(edges)}
    for pair in np.unique(np.concatenate(pairs)).tolist():
        near[pair >> 24].append(pair & 0xFFFFFF)
    snaps = {edge: target for edge, solids in near.items()
             if (target := _blended(edge, sorted({0, *solids}))) is not None}  # black: the background
    if not snaps:
        return None
    counts = {edge: int((edges == edge).sum()) for edge in snaps}
    shown = ", ".join(f"#{edge:06x} ({counts[edge]} px) -> #{target:06x}" for edge, target in snaps.items())
    warnings.warn(f"{path}: {len(snaps)} anti-aliased edge colours read as the colours they blend: {shown}",
                  EdgeColourWarning, stacklevel=2)
    snapped = codes.copy()
    for edge, target in snaps.items():
        snapped[codes == edge] = target
    return snapped


def _blended(code: int, candidates: list[int]) -> int | None:
    """The colour that weighs most in the mix of two or three `candidates` that gives `code` (within
    BLEND_TOLERANCE; three meet at corners), the closest mix winning; None if no mix gives it."""
    colour = _rgb(code)
    best: tuple[float, int] | None = None
    for mix in (*itertools.combinations(candidates, 2), *itertools.combinations(candidates, 3)):
        corners = np.stack([_rgb(c) for c in mix])
        shares, *_ = np.linalg.lstsq((corners[1:] - corners[0]).T, colour - corners[0], rcond=None)
        weights = np.concatenate([[1 - shares.sum()], shares])
        distance = float(np.linalg.norm(weights @ corners - colour))
        if weights.min() >= 0 and distance <= BLEND_TOLERANCE and (best is None or distance < best[0]):
            best = distance, mix[int(np.argmax(weights))]
    return None if best is None else best[1]


def _rgb(code: int) -> np.ndarray:
    return np.array([(code >> 16) & 255, (code >> 8) & 255, code & 255], dtype=np.float64)


def _alpha_ids(image: Image.Image, path: Path, numbering: Numbering) -> tuple[np.ndarray, dict[str, int] | None]:
    """An image with an alpha channel (LA, RGBA, PA).

    When the colour channels carry no mask (one colour all over), the alpha channel is the mask:
    opaque (alpha >= 128) is object 1. Otherwise the colours are read as ids and transparent pixels are
    background; colours that are no mask (a cut-out photo) leave the alpha as the mask.
    """
    alpha = np.asarray(image.getchannel("A"))
    colour = np.asarray(image.convert("RGB")).copy()
    opaque = (alpha >= 128).astype(np.uint8)
    if (alpha == 255).all():
        return _colour_ids(colour, path, numbering)
    if (colour == colour[0, 0]).all():
        return opaque, None
    colour[alpha == 0] = 0  # transparent is background, whatever colour it hides
    trial = Numbering(dict(numbering.colours), numbering.highest)
    try:
        labels, legend = _colour_ids(colour, path, trial)
    except StmaError:
        return opaque, None
    numbering.colours, numbering.highest = trial.colours, trial.highest
    return labels, legend


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


def _labels(image: Image.Image, path: Path, numbering: Numbering) -> tuple[np.ndarray, list[int] | None,
                                                                          dict[str, int] | None]:
    """Object ids (H, W) uint8, the palette and the legend (see `Mask`) of an opened mask image."""
    if image.format in LOSSY_FORMATS:
        return _lossy_ids(image, path, LOSSY_FORMATS[image.format]), None, None
    mode = image.mode
    if mode == "P" and "A" not in image.getbands():
        labels = np.array(image, dtype=np.uint8)
        labels[labels == VOID] = 0
        return labels, full_palette(image.getpalette()), None
    if mode == "1":
        return np.asarray(image, dtype=np.uint8), None, None
    if mode in ("L", "I", "I;16", "I;16L", "I;16B", "I;16N"):
        return _gray_ids(np.asarray(image), path), None, None
    if "A" in image.getbands():
        labels, legend = _alpha_ids(image, path, numbering)
        return labels, None, legend
    if mode == "RGB":
        labels, legend = _colour_ids(np.asarray(image), path, numbering)
        return labels, None, legend
    raise StmaError(f"{path}: unsupported mask image mode {mode}; use a palette or grayscale PNG")


def read_mask(path: str | Path, size: tuple[int, int] | None = None, *, numbering: Numbering | None = None,
              frame_index: int = 0, frame_name: str | None = None, coco_image_id: int | None = None) -> Mask:
    """Read a mask file, an image or a LabelMe/COCO JSON file (see the module docs); `size` = (width,
    height) of the frames it must match.

    Palette PNGs keep their indices as ids (255 is void: not an object) and their palette; grayscale
    images (8 or 16 bits) keep their values as ids, except a two-level 0/max image, which is object 1;
    an alpha channel is the mask when the colours carry none. A JPEG mask is cleaned into one object,
    with a warning, if it is black and white, and refused otherwise. `numbering` carries stma's ids from
    one mask of a video to the next (a fresh one if None). A COCO file's image is chosen by
    `coco_image_id`, else as its only image, else by its file name: the frame's file stem `frame_name`
    (frame folders), or a name ending in the frame number `frame_index`.
    """
    path = Path(path)
    numbering = numbering if numbering is not None else Numbering()
    palette: list[int] | None = None
    try:
        if _is_json(path):
            labels, legend = _json_labels(path, size, numbering, frame_index, frame_name, coco_image_id)
        else:
            with Image.open(path) as image:
                width, height = image.size
                if size is not None and (width, height) != tuple(size):
                    raise StmaError(f"{path}: mask is {width}x{height} but the frames are {size[0]}x{size[1]}")
                image.load()
                labels, palette, legend = _labels(image, path, numbering)
    except FileNotFoundError:
        raise StmaError(f"{path}: mask file not found") from None
    except UnidentifiedImageError:
        raise StmaError(f"{path}: not an image, nor a LabelMe or COCO JSON file") from None
    except Image.DecompressionBombError:
        raise StmaError(f"{path}: image too large to be a mask (more than {2 * Image.MAX_IMAGE_PIXELS} pixels)") from None
    except OSError as exc:
        raise StmaError(f"{path}: cannot read the mask image ({exc.strerror or exc})") from None
    if not labels.any():
        raise StmaError(f"{path}: mask has no object (every pixel is background 0)")
    numbering.highest = max(numbering.highest, int(labels.max()))
    if legend:
        shown = ", ".join(f"{name} -> {object_id}" for name, object_id in legend.items())
        warnings.warn(f"{path}: objects numbered by stma: {shown}", MaskIdsWarning, stacklevel=2)
    return Mask(labels=np.ascontiguousarray(labels), palette=palette, legend=legend)


# -- LabelMe and COCO JSON ------------------------------------------------------------------------


def _is_json(path: Path) -> bool:
    """Whether the file holds a JSON object (its first non-blank byte is '{'), whatever its name. This is where
    a mask is first opened: a FIFO or a device is refused here, not waited on (a missing file is left to open)."""
    if path.exists():
        require_regular(path, "mask")
    with path.open("rb") as file:
        head = file.read(256)
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


def _json_labels(path: Path, size: tuple[int, int] | None, numbering: Numbering, frame_index: int,
                 frame_name: str | None, coco_image_id: int | None) -> tuple[np.ndarray, dict[str, int]]:
    data = read_json(path, "mask")  # an object: the file starts with '{' (`_is_json`)
    kind = "LabelMe" if isinstance(data.get("shapes"), list) else "COCO"
    try:
        if kind == "LabelMe":
            return _labelme(data, path, size, numbering)
        if isinstance(data.get("images"), list) and isinstance(data.get("annotations"), list):
            return _coco(data, path, size, numbering, frame_index, frame_name, coco_image_id)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as error:
        raise StmaError(f"{path}: malformed {kind} file ({type(error).__name__}: {error})") from None
    raise StmaError(f"{path}: a JSON file that is neither LabelMe (\"shapes\") nor COCO (\"images\" and "
                    "\"annotations\")")


def _frame_size(path: Path, size: tuple[int, int] | None, width: Any, height: Any, what: str) -> tuple[int, int]:
    """(width, height) of a JSON mask: the frames' `size`, checked against the file's own if it gives one, which
    must be whole numbers of pixels, no more than an image mask may have."""
    if width is None or height is None:
        if size is None:
            raise StmaError(f"{path}: {what} does not say its size")
        return size
    pixels = _pixels(width), _pixels(height)
    if None in pixels or (Image.MAX_IMAGE_PIXELS and pixels[0] * pixels[1] > 2 * Image.MAX_IMAGE_PIXELS):
        raise StmaError(f"{path}: {what} is {width!r:.24}x{height!r:.24}, not a frame size in pixels")
    if size is not None and pixels != tuple(size):
        raise StmaError(f"{path}: {what} is {width}x{height} but the frames are {size[0]}x{size[1]}")
    return pixels


def _pixels(value: Any) -> int | None:
    """A whole positive number of pixels (640, or 640.0), else None."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def _labelme(data: dict, path: Path, size: tuple[int, int] | None,
             numbering: Numbering) -> tuple[np.ndarray, dict[str, int]]:
    """LabelMe shapes drawn in file order (later on top); object ids from integer group ids, else numbered."""
    width, height = _frame_size(path, size, data.get("imageWidth"), data.get("imageHeight"), "the LabelMe image")
    labels = np.zeros((height, width), np.uint8)
    shapes = data["shapes"]
    grouped = {int(s["group_id"]) for s in shapes if s.get("group_id") is not None}
    if any(not 1 <= group <= MAX_ID for group in grouped):
        raise StmaError(f"{path}: LabelMe group ids are object ids and must be 1..{MAX_ID} ({VOID} is void; found "
                        f"{sorted(grouped)})")
    numbering.highest = max([numbering.highest, *grouped])
    legend: dict[str, int] = {}
    for number, shape in enumerate(shapes):
        label, kind = shape.get("label", ""), shape.get("shape_type") or "polygon"
        points = _points(shape["points"], path, f"shape {number} ({label!r})")
        region = np.zeros_like(labels, dtype=bool)
        if kind == "polygon" and len(points) >= 3:
            _fill_polygon(region, points)
        elif kind == "rectangle" and len(points) == 2:
            (x0, y0), (x1, y1) = points
            _fill_polygon(region, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
        elif kind == "circle" and len(points) == 2:
            _fill_disc(region, points[0], float(np.hypot(*(points[1] - points[0]))))
        else:
            raise StmaError(f"{path}: shape {number} ({label!r}) is a {kind!r} of {len(points)} points, which has no "
                            "area; masks take polygons, rectangles and circles")
        if shape.get("group_id") is not None:
            object_id = int(shape["group_id"])
            legend[f"{label} (group {object_id})"] = object_id
        else:
            object_id = numbering.new_id(path)
            legend[f"{label} (shape {number})"] = object_id
        labels[region] = object_id
    return labels, legend


def _coco(data: dict, path: Path, size: tuple[int, int] | None, numbering: Numbering, frame_index: int,
          frame_name: str | None, coco_image_id: int | None) -> tuple[np.ndarray, dict[str, int]]:
    """The annotations of one COCO image, drawn in file order (later on top), each an object numbered in order."""
    image = _coco_image(data["images"], path, frame_index, frame_name, coco_image_id)
    width, height = _frame_size(path, size, image.get("width"), image.get("height"), f"COCO image {image['id']!r}")
    categories = {c["id"]: c.get("name", c["id"]) for c in data.get("categories", []) if isinstance(c, dict)}
    labels = np.zeros((height, width), np.uint8)
    legend: dict[str, int] = {}
    for annotation in (a for a in data["annotations"] if a["image_id"] == image["id"]):
        segmentation = annotation["segmentation"]
        region = np.zeros_like(labels, dtype=bool)
        if isinstance(segmentation, dict):
            region = rle_region(segmentation, path, (height, width))
        else:
            for polygon in segmentation:
                _fill_polygon(region, _points(polygon, path, f"annotation {annotation.get('id')}"), toggle=True)
        object_id = numbering.new_id(path)
        category = categories.get(annotation.get("category_id"), annotation.get("category_id"))
        legend[f"annotation {annotation.get('id')} ({category})"] = object_id
        labels[region] = object_id
    return labels, legend


def _coco_image(images: list[dict], path: Path, frame_index: int, frame_name: str | None,
                coco_image_id: int | None) -> dict:
    """The COCO image that is the mask's frame (see `read_mask`)."""
    if coco_image_id is not None:
        chosen = [image for image in images if image["id"] == coco_image_id]
        if not chosen:
            raise StmaError(f"{path}: no image with id {coco_image_id} (ids: {_ids(images)})")
        return chosen[0]
    if len(images) == 1:
        return images[0]

    def names_the_frame(image: dict) -> bool:
        stem = Path(str(image.get("file_name", ""))).stem
        if frame_name is not None:
            return stem == frame_name
        digits = re.search(r"(\d+)$", stem)
        return digits is not None and int(digits[1]) == frame_index

    chosen = [image for image in images if names_the_frame(image)]
    if len(chosen) != 1:
        frame = frame_name if frame_name is not None else f"number {frame_index}"
        found = "none is" if not chosen else f"{len(chosen)} are"
        raise StmaError(f"{path}: {len(images)} images and {found} named after frame {frame}; choose one with "
                        f"--coco-image-id (ids: {_ids(images)})")
    return chosen[0]


def _ids(images: list[dict]) -> str:
    ids = [repr(image.get("id")) for image in images]
    return ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")


def _points(values: Any, path: Path, what: str) -> np.ndarray:
    """(x, y) points (N, 2) of a JSON shape; StmaError naming `what` unless each is within MAX_COORDINATE."""
    points = np.asarray(values, dtype=np.float64).reshape(-1, 2)
    if not (np.abs(points) <= MAX_COORDINATE).all():  # also False for NaN
        raise StmaError(f"{path}: {what} has points that are not numbers from -{MAX_COORDINATE:g} to "
                        f"{MAX_COORDINATE:g}")
    return points


def _fill_polygon(region: np.ndarray, points: np.ndarray, toggle: bool = False) -> None:
    """Set the pixels of `region` whose centre lies inside the polygon `points` (x, y) (even-odd rule).

    `toggle` flips them instead, so that the polygons of one COCO annotation cut holes in each other.
    """
    height, width = region.shape
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for row in range(max(0, math.floor(y0.min())), min(height, math.ceil(y0.max()) + 1)):
        centre = row + 0.5
        crossing = (y0 <= centre) != (y1 <= centre)
        if not crossing.any():
            continue
        at = (centre - y0[crossing]) / (y1[crossing] - y0[crossing])
        xs = np.sort(x0[crossing] + at * (x1[crossing] - x0[crossing]))
        for left, right in zip(xs[0::2], xs[1::2]):
            start, stop = max(0, math.ceil(left - 0.5)), min(width, math.ceil(right - 0.5))
            if toggle:
                region[row, start:stop] ^= True
            else:
                region[row, start:stop] = True


def _fill_disc(region: np.ndarray, centre: np.ndarray, radius: float) -> None:
    """Set the pixels of `region` whose centre lies within `radius` of `centre` (x, y)."""
    ys, xs = np.ogrid[: region.shape[0], : region.shape[1]]
    region |= (xs + 0.5 - centre[0]) ** 2 + (ys + 0.5 - centre[1]) ** 2 <= radius**2


def rle_region(rle: dict, path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A COCO run-length encoding (counts as a list, or compressed as a string) as a boolean (H, W) array."""
    if [int(n) for n in rle["size"]] != list(shape):
        raise StmaError(f"{path}: RLE of size {rle['size']} in an image of size {list(shape)} (height, width)")
    counts = rle["counts"]
    runs = _rle_counts(counts) if isinstance(counts, str) else [int(n) for n in counts]
    if any(n < 0 for n in runs):
        raise StmaError(f"{path}: RLE counts hold a negative run ({min(runs)}), which no mask has")
    if sum(runs) != shape[0] * shape[1]:
        raise StmaError(f"{path}: RLE counts cover {sum(runs)} pixels, but the image has {shape[0] * shape[1]}")
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)  # runs alternate background, object, ...
    return flat.reshape(shape[1], shape[0]).T  # column by column


def _rle_counts(text: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string: 5 bits per character (offset 48), a continuation
    bit (0x20), a sign bit on the last character of a number, and each run after the second stored as
    the difference to the run two before it."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            code = ord(text[position]) - 48
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


_LABEL_MODES = ("P", "L", "1", "I", "I;16")


def read_label_map(path: Path) -> np.ndarray:
    """A dataset's annotation or prediction: a PNG of object ids (indexed or grayscale) as a 2-D integer array,
    read as it is (255 stays DAVIS's void). Masks that users give go through `read_mask` instead."""
    try:
        with Image.open(path) as image:
            if image.mode not in _LABEL_MODES:
                raise StmaError(f"{path}: mask must be an indexed (palette) or grayscale PNG, found mode {image.mode}")
            return np.asarray(image)
    except FileNotFoundError:
        raise StmaError(f"{path}: file not found") from None
    except (OSError, Image.DecompressionBombError) as error:
        raise StmaError(f"{path}: cannot read mask ({error})") from None


def write_mask(path: str | Path, labels: np.ndarray, palette: list[int] | None = None) -> None:
    """Write (H, W) uint8 ids as a palette PNG, atomically; `palette` None means the DAVIS palette. 255 is void
    when read back (the readers give stma no object above MAX_ID to write)."""
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be a 2-D uint8 array, got {labels.dtype} {labels.shape}")
    height, width = labels.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(labels).tobytes())
    image.putpalette(full_palette(palette))
    try:
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
    except OSError as exc:
        raise StmaError(f"{path}: cannot write the mask ({exc.strerror or exc})") from None


def parse_mask_arg(arg: str, default_frame: int = 0) -> tuple[int, Path]:
    """Split a `--mask` value: "FRAME:PATH" gives (FRAME, PATH) with 0-based FRAME; "PATH" gives
    (`default_frame`, PATH): the first frame, or the first of --frames."""
    match = re.fullmatch(r"([0-9]+):(.*)", arg, re.DOTALL)
    if match is None:
        if not arg:
            raise StmaError("--mask: empty value; give PATH or FRAME:PATH")
        return default_frame, Path(arg)
    if not match[2]:
        raise StmaError(f"--mask {arg}: missing the mask path after the frame number")
    if len(match[1]) > MAX_FRAME_DIGITS:
        raise StmaError(f"--mask {match[1][:20]}...: a frame number of {len(match[1])} digits is out of range")
    return int(match[1]), Path(match[2])
