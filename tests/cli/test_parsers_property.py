"""Property-based tests of what users type and draw by hand: any input gives a result or one StmaError of one
line, never another exception; and a mask never yields object 255 (void) or an object above 254.

The parsers are called directly; a few `stma segment` runs check that the option parsers' errors exit 2.
"""
from __future__ import annotations

import json
import string
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from typer.testing import CliRunner

from stma_cli.cli.app import app
from stma_cli.errors import StmaError
from stma_cli.inference.jobs import Shard, check_template, mask_from_template, output_folder, parse_ends, parse_frames
from stma_cli.io.masks import MAX_ID, Numbering, parse_mask_arg, read_mask
from stma_cli.io.overlay import palette_colors
from stma_cli.io.render import parse_colors

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# What a user types: digits of every script, separators, signs, spaces and line breaks, and anything else.
TYPED = st.text(st.sampled_from("0123456789:/,=#-+_. \t\n²³٣０½eEnaf{}[]!") | st.characters(), max_size=24)
NUMBERS = st.from_regex(r"\A\s?[0-9]{0,25}\s?\Z", fullmatch=True)  # spaces around are allowed, even line breaks


def outcome(parse: Callable[[], Any]) -> Any:
    """What `parse` returns, or its StmaError, which must be one line; any other exception fails the test."""
    try:
        return parse()
    except StmaError as error:
        assert len(str(error).splitlines()) == 1, repr(str(error))
        return error


# -- options -----------------------------------------------------------------------------------------


@FAST
@given(st.one_of(TYPED, st.builds("{}:{}".format, NUMBERS, NUMBERS)))
@example("²:")  # '²'.isdigit(), but int('²') fails
@example("9\n:3")  # the error shows the numbers, not the line break
def test_frames(text: str) -> None:
    result = outcome(lambda: parse_frames(text))
    if not isinstance(result, StmaError):
        first, stop = result
        assert first >= 0 and (stop is None or stop > first)


@FAST
@given(st.lists(st.one_of(TYPED, st.builds("{}:{}".format, NUMBERS, NUMBERS)), max_size=3))
@example(["1:²"])
@example(["300\n:5"])
def test_ends(values: list[str]) -> None:
    result = outcome(lambda: parse_ends(values))
    if not isinstance(result, StmaError):
        assert all(frame >= 0 and all(1 <= i <= MAX_ID for i in ids) for frame, ids in result.items())


@FAST
@given(st.one_of(TYPED, st.builds("{}:{}".format, NUMBERS, TYPED)), st.integers(0, 10**6))
@example("0000000000000000000:\x1e", 0)  # a frame number out of range, then a record separator
def test_mask_argument(text: str, default_frame: int) -> None:
    result = outcome(lambda: parse_mask_arg(text, default_frame))
    if not isinstance(result, StmaError):
        frame, path = result
        assert frame >= 0 and isinstance(path, Path)


@FAST
@given(st.one_of(TYPED, st.builds("{}/{}".format, NUMBERS, NUMBERS)))
@example("3\n/2")
def test_shard(text: str) -> None:
    result = outcome(lambda: Shard.parse(text))
    if not isinstance(result, StmaError):
        assert 0 <= result.index < result.count


FIELDS = st.sampled_from(["stem", "name", "parent", "frame", "index", "0", "", "stem.__class__", "name[0]",
                          "stem!r", "index:04d", "index:{stem}", "stem:>9999999999", "index:99999999999d"])
TEMPLATES = st.lists(st.one_of(st.text(st.sampled_from("ab/._-{}"), max_size=4), FIELDS.map("{{{}}}".format)),
                     max_size=5).map("".join) | TYPED


@FAST
@given(TEMPLATES)
@example("{stem:{name.__class__}}.png")  # a field inside a format spec is evaluated by str.format
def test_mask_template(template: str) -> None:
    """A template gives a path, or an error; no field is evaluated beyond the plain ones, into either."""
    result = outcome(lambda: (check_template(template), mask_from_template(template, "videos/clip.mp4"))[1])
    assert "<class" not in str(result)


@FAST
@given(TEMPLATES, st.integers(0, 10**6))
@example("{index:{stem.__class__}}", 0)
@example("{index:99999999999d}", 0)  # a width that fills the memory
def test_name_template(template: str, index: int) -> None:
    result = outcome(lambda: output_folder(template, "videos/clip.mp4", index))
    assert "<class" not in str(result)
    if not isinstance(result, StmaError):
        assert not result.is_absolute() and ".." not in result.parts and len(str(result)) < 10**4


# -- colours and palettes ----------------------------------------------------------------------------

COLOURS = st.lists(st.builds("{}={}".format, NUMBERS, st.from_regex(r"\A#?[0-9a-fA-F]{5,7}\Z", fullmatch=True)),
                   max_size=4).map(",".join)


@FAST
@given(st.one_of(TYPED, COLOURS))
@example("0\x1f=000000")  # a space-like character that str.strip removes and int does not
@example("1" * 5000 + "=#ff0000")  # more digits than int() reads
def test_colours(text: str) -> None:
    result = outcome(lambda: parse_colors(text))
    if not isinstance(result, StmaError):
        assert all(1 <= i <= MAX_ID and all(0 <= c <= 255 for c in rgb) for i, rgb in result.items())


def _read(image: Image.Image) -> Any:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mask.png"
        image.save(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = outcome(lambda: read_mask(path, numbering=Numbering()))
    if not isinstance(result, StmaError):
        assert result.labels.shape == (image.height, image.width) and result.labels.dtype == np.uint8
        assert 1 <= min(result.object_ids) and max(result.object_ids) <= MAX_ID  # 255 is void, never an object
    return result


# Few distinct values, so that images look like masks (flat colours) as often as like noise.
LEVELS = st.sampled_from([0, 1, 2, 7, 60, 128, 140, 200, 254, 255])


@FEWER
@given(arrays(np.uint8, st.tuples(st.integers(1, 10), st.integers(1, 10)), elements=LEVELS),
       st.lists(st.integers(0, 255), max_size=800))
def test_palette_masks(labels: np.ndarray, palette: list[int]) -> None:
    image = Image.fromarray(labels, "P")
    if palette:
        image.putpalette(palette[: len(palette) // 3 * 3] or [0, 0, 0])
    result = _read(image)
    if not isinstance(result, StmaError):
        assert palette_colors(result.palette).shape == (256, 3)


@FEWER
@given(arrays(np.uint8, st.tuples(st.integers(1, 10), st.integers(1, 10), st.sampled_from([1, 2, 3, 4])),
              elements=LEVELS))
def test_gray_and_colour_masks(pixels: np.ndarray) -> None:
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    _read(Image.fromarray(pixels.squeeze(2) if mode == "L" else pixels, mode))


# -- LabelMe and COCO masks from any JSON ------------------------------------------------------------

ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=4),
                        max_leaves=12)
COORDINATE = st.one_of(st.integers(-4, 20), st.floats(-4, 20), st.sampled_from([1e300, -1e300]),
                       st.floats(allow_nan=True, allow_infinity=True))
POINTS = st.lists(st.lists(COORDINATE, min_size=2, max_size=2), max_size=5) | ANY_JSON
SIDE = st.one_of(st.integers(1, 16), st.sampled_from([0, -3, 16.0, 16.5, "16", True, None, 10**12, float("inf")]),
                 ANY_JSON)
ID = st.one_of(st.integers(-2, 300), st.none(), st.sampled_from([254, 255, 1e400, "3", 2.5]), ANY_JSON)
SHAPE = st.fixed_dictionaries({"points": POINTS}, optional={
    "label": st.text(max_size=6) | ANY_JSON, "group_id": ID,
    "shape_type": st.sampled_from(["polygon", "rectangle", "circle", "line", "point", "a\nb"]) | ANY_JSON})
LABELME = st.fixed_dictionaries({"shapes": st.lists(SHAPE | ANY_JSON, max_size=4)},
                                optional={"imageWidth": SIDE, "imageHeight": SIDE})
COUNTS = st.one_of(st.lists(st.integers(-3, 200), max_size=6), st.text(max_size=12), ANY_JSON)
SEGMENTATION = st.one_of(st.lists(st.lists(COORDINATE, max_size=8), max_size=2),
                         st.fixed_dictionaries({"size": st.lists(SIDE, max_size=3) | ANY_JSON, "counts": COUNTS}),
                         ANY_JSON)
IMAGE = st.fixed_dictionaries({"id": ID}, optional={"width": SIDE, "height": SIDE,
                                                    "file_name": st.text(max_size=8) | ANY_JSON})
ANNOTATION = st.fixed_dictionaries({"image_id": ID, "segmentation": SEGMENTATION},
                                   optional={"id": ID, "category_id": ID})
COCO = st.fixed_dictionaries({"images": st.lists(IMAGE | ANY_JSON, max_size=3),
                              "annotations": st.lists(ANNOTATION | ANY_JSON, max_size=3)},
                             optional={"categories": st.lists(st.fixed_dictionaries({"id": ID}) | ANY_JSON,
                                                              max_size=2) | ANY_JSON})


@FAST
@given(st.one_of(LABELME, COCO, st.dictionaries(st.text(max_size=8), ANY_JSON, max_size=4)),
       st.sampled_from([None, (16, 12)]), st.one_of(st.none(), ID.filter(lambda i: isinstance(i, int))))
@example({"shapes": [{"points": [[0, 0], [1, 1]], "shape_type": "a\nb"}]}, (16, 12), None)  # echoed in the error
@example({"images": [{"id": "a\nb"}, {"id": 2}], "annotations": []}, (16, 12), None)
@example({"images": [{"id": "a\nb", "width": 5, "height": 5}], "annotations": []}, (16, 12), None)
@example({"shapes": [{"points": [[0, 0], [4, 4]], "shape_type": "rectangle", "group_id": 255}]}, (16, 12), None)
def test_json_masks(document: dict, size: tuple[int, int] | None, coco_image_id: int | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mask.json"
        path.write_text(json.dumps(document))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", RuntimeWarning)  # numpy's overflow or invalid-value warnings
            result = outcome(lambda: read_mask(path, size, numbering=Numbering(),
                                               coco_image_id=coco_image_id if isinstance(coco_image_id, int) else None))
    if not isinstance(result, StmaError):
        assert 1 <= min(result.object_ids) and max(result.object_ids) <= MAX_ID
        assert size is None or result.labels.shape == (size[1], size[0])


# -- through the command line: exit 2 and one line -----------------------------------------------------

runner = CliRunner()


@settings(max_examples=8, deadline=None)
@given(st.one_of(TYPED, NUMBERS), st.one_of(TYPED, NUMBERS))
@example("²:", "1:2")
@example("1:", "1:²")
def test_option_errors_exit_2_in_one_line(frames: str, end: str) -> None:
    """With no video given (an empty standard input), every run is a usage error: the options' own, or that."""
    if "\0" in frames + end:
        frames, end = frames.replace("\0", ""), end.replace("\0", "")  # no process gets a NUL in its arguments
    result = runner.invoke(app, ["segment", "--mask", "m.png", "--frames", frames, "--end", end], input="")
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stma: error: "), result.stderr
    assert not result.stdout


def test_every_printable_character_in_a_template() -> None:
    """Each printable character alone and in braces: the template checks never raise anything else."""
    for char in string.printable:
        for template in (char, "{" + char + "}", "{stem" + char + "}", "{index:" + char + "}"):
            outcome(lambda: mask_from_template(template, "clip.mp4"))
            outcome(lambda: output_folder(template, "clip.mp4", 3))
