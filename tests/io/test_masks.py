from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.io.masks import (
    DAVIS_PALETTE,
    EdgeColourWarning,
    LossyMaskWarning,
    Mask,
    MaskIdsWarning,
    Numbering,
    parse_mask_arg,
    read_mask,
    write_mask,
)


def ids_137(height: int = 12, width: int = 16) -> np.ndarray:
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[1:4, 1:5] = 1
    labels[5:8, 6:12] = 3
    labels[9:11, 2:15] = 7
    return labels


def test_davis_palette() -> None:
    assert len(DAVIS_PALETTE) == 768
    colours = np.asarray(DAVIS_PALETTE).reshape(256, 3)
    assert colours[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert colours[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in colours.tolist()}) == 256


def test_palette_mask_round_trip_keeps_ids_and_palette(tmp_path: Path) -> None:
    labels = ids_137()
    palette = [(i * 37) % 256 for i in range(768)]
    write_mask(tmp_path / "m.png", labels, palette)
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode == "P"
    mask = read_mask(tmp_path / "m.png", size=(16, 12))
    assert mask.object_ids == [1, 3, 7]
    np.testing.assert_array_equal(mask.labels, labels)
    assert mask.palette == palette
    write_mask(tmp_path / "again.png", mask.labels, mask.palette)
    again = read_mask(tmp_path / "again.png")
    np.testing.assert_array_equal(again.labels, labels)
    assert again.palette == palette


def test_write_mask_defaults_to_davis_palette(tmp_path: Path) -> None:
    write_mask(tmp_path / "m.png", ids_137())
    assert read_mask(tmp_path / "m.png").palette == DAVIS_PALETTE
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]


def test_short_palette_is_padded(tmp_path: Path) -> None:
    image = Image.frombytes("P", (16, 12), ids_137().tobytes())
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9, 8, 8, 8, 7, 7, 7, 250, 250, 0])
    image.save(tmp_path / "short.png")
    mask = read_mask(tmp_path / "short.png")
    assert mask.palette is not None and len(mask.palette) == 768
    assert mask.palette[21:24] == [250, 250, 0]


def test_grayscale_values_are_ids(tmp_path: Path) -> None:
    Image.fromarray(ids_137()).save(tmp_path / "gray.png")
    mask = read_mask(tmp_path / "gray.png")
    assert mask.object_ids == [1, 3, 7]
    assert mask.palette is None
    np.testing.assert_array_equal(mask.labels, ids_137())


def test_binary_0_255_is_object_1(tmp_path: Path) -> None:
    binary = np.where(ids_137() > 0, 255, 0).astype(np.uint8)
    Image.fromarray(binary).save(tmp_path / "binary.png")
    mask = read_mask(tmp_path / "binary.png")
    assert mask.object_ids == [1]
    np.testing.assert_array_equal(mask.labels, (binary > 0).astype(np.uint8))
    Image.fromarray(binary > 0).save(tmp_path / "bilevel.png")
    assert read_mask(tmp_path / "bilevel.png").object_ids == [1]


def test_rgb_mask_in_davis_colours(tmp_path: Path) -> None:
    colours = np.asarray(DAVIS_PALETTE, dtype=np.uint8).reshape(256, 3)
    Image.fromarray(colours[ids_137()]).save(tmp_path / "rgb.png")
    mask = read_mask(tmp_path / "rgb.png")
    np.testing.assert_array_equal(mask.labels, ids_137())


def test_mask_size_must_match_frames(tmp_path: Path) -> None:
    write_mask(tmp_path / "m.png", ids_137())
    with pytest.raises(StmaError, match=r"m\.png: mask is 16x12 but the frames are 32x24"):
        read_mask(tmp_path / "m.png", size=(32, 24))


def test_mask_without_object(tmp_path: Path) -> None:
    write_mask(tmp_path / "blank.png", np.zeros((12, 16), dtype=np.uint8))
    with pytest.raises(StmaError, match=r"blank\.png: mask has no object"):
        read_mask(tmp_path / "blank.png")


def test_mask_that_is_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "m.png").write_text("not a picture")
    with pytest.raises(StmaError, match=r"m\.png: not an image"):
        read_mask(tmp_path / "m.png")


def test_missing_mask(tmp_path: Path) -> None:
    with pytest.raises(StmaError, match=r"gone\.png: mask file not found"):
        read_mask(tmp_path / "gone.png")


def test_mask_object_ids() -> None:
    assert Mask(ids_137()).object_ids == [1, 3, 7]


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("first.png", (0, Path("first.png"))),
        ("12:later.png", (12, Path("later.png"))),
        ("0:dir/m.png", (0, Path("dir/m.png"))),
        ("C:/masks/m.png", (0, Path("C:/masks/m.png"))),
    ],
)
def test_parse_mask_arg(arg: str, expected: tuple[int, Path]) -> None:
    assert parse_mask_arg(arg) == expected


@pytest.mark.parametrize("arg", ["", "12:", "1" * 19 + ":m.png", "9" * 5000 + ":m.png"])
def test_parse_mask_arg_rejects(arg: str) -> None:
    with pytest.raises(StmaError):
        parse_mask_arg(arg)


def test_write_mask_rejects_non_uint8(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_mask(tmp_path / "m.png", ids_137().astype(np.int64))


def binary_137() -> np.ndarray:
    return np.where(ids_137() > 0, 255, 0).astype(np.uint8)


def test_black_and_white_jpeg_is_cleaned_into_one_object_with_a_warning(tmp_path: Path) -> None:
    Image.fromarray(np.kron(binary_137(), np.ones((4, 4), np.uint8))).save(tmp_path / "m.jpg", quality=70)
    with pytest.warns(LossyMaskWarning, match=r"m\.jpg: JPEG is a lossy format: read as one object"):
        mask = read_mask(tmp_path / "m.jpg")
    assert mask.object_ids == [1]
    expected = np.kron(ids_137() > 0, np.ones((4, 4), bool))
    assert (mask.labels.astype(bool) != expected).mean() < 0.01


def test_jpeg_in_colours_is_refused(tmp_path: Path) -> None:
    colours = np.asarray(DAVIS_PALETTE, dtype=np.uint8).reshape(256, 3)
    Image.fromarray(colours[ids_137()]).save(tmp_path / "m.jpg")
    with pytest.raises(StmaError, match=r"m\.jpg: JPEG is a lossy format and this mask is not black and white"):
        read_mask(tmp_path / "m.jpg")


def test_jpeg_of_small_ids_is_refused(tmp_path: Path) -> None:
    Image.fromarray(ids_137() * 20).save(tmp_path / "m.jpg")
    with pytest.raises(StmaError, match="save it as a PNG"):
        read_mask(tmp_path / "m.jpg")


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_the_mask_when_the_colours_carry_none(tmp_path: Path, mode: str) -> None:
    colour = np.full((12, 16, len(mode) - 1), 255, np.uint8)
    Image.fromarray(np.dstack([colour, binary_137()]).squeeze(), mode).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    np.testing.assert_array_equal(mask.labels, (ids_137() > 0).astype(np.uint8))


def test_alpha_of_a_cut_out_photo_is_the_mask(tmp_path: Path) -> None:
    photo = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(np.dstack([photo, binary_137()]), "RGBA").save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png").labels, (ids_137() > 0).astype(np.uint8))


def test_colours_with_alpha_keep_their_ids_and_transparent_pixels_are_background(tmp_path: Path) -> None:
    colours = np.asarray(DAVIS_PALETTE, dtype=np.uint8).reshape(256, 3)
    alpha = np.full((12, 16), 255, np.uint8)
    alpha[9:11] = 0  # hides object 7
    Image.fromarray(np.dstack([colours[ids_137()], alpha]), "RGBA").save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").object_ids == [1, 3]


def test_void_255_in_a_palette_mask_is_not_an_object(tmp_path: Path) -> None:
    labels = ids_137()
    labels[0, :] = 255
    write_mask(tmp_path / "m.png", labels)
    mask = read_mask(tmp_path / "m.png")
    assert mask.object_ids == [1, 3, 7]
    assert (mask.labels[0] == 0).all()


def test_only_void_is_no_object(tmp_path: Path) -> None:
    write_mask(tmp_path / "m.png", np.full((12, 16), 255, np.uint8))
    with pytest.raises(StmaError, match="mask has no object"):
        read_mask(tmp_path / "m.png")


@pytest.mark.parametrize(("values", "ids"), [(binary_137().astype(np.uint16) * 257, [1]),
                                             (ids_137().astype(np.uint16), [1, 3, 7])])
def test_16_bit_masks(tmp_path: Path, values: np.ndarray, ids: list[int]) -> None:
    Image.fromarray(values).save(tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode.startswith("I")
    assert read_mask(tmp_path / "m.png").object_ids == ids


def test_16_bit_mask_beyond_255(tmp_path: Path) -> None:
    Image.fromarray(ids_137().astype(np.uint16) * 1000).save(tmp_path / "m.png")
    with pytest.raises(StmaError, match=r"m\.png: mask values range over 0\.\.7000, object ids must be 0\.\.254"):
        read_mask(tmp_path / "m.png")


def test_32_bit_integer_mask(tmp_path: Path) -> None:
    Image.fromarray(ids_137().astype(np.int32)).save(tmp_path / "m.tif")
    assert read_mask(tmp_path / "m.tif").object_ids == [1, 3, 7]


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mask(tmp_path / "m.png", ids_137())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(StmaError, match=r"m\.png: image too large to be a mask"):
        read_mask(tmp_path / "m.png")


# -- colour masks with any colours -----------------------------------------------------------------

GREEN, RED, BLUE, YELLOW = (0, 255, 0), (255, 0, 0), (0, 0, 255), (255, 255, 0)


def colour_image(regions: list[tuple[tuple[int, int, int], slice, slice]], height: int = 12, width: int = 16,
                 alpha: bool = False) -> Image.Image:
    rgb = np.zeros((height, width, 3), np.uint8)
    for colour, rows, cols in regions:
        rgb[rows, cols] = colour
    if alpha:
        return Image.fromarray(np.dstack([rgb, np.full((height, width), 255, np.uint8)]), "RGBA")
    return Image.fromarray(rgb)


def test_any_colours_are_objects_numbered_from_the_top_left(tmp_path: Path) -> None:
    colour_image([(RED, slice(5, 8), slice(6, 12)), (GREEN, slice(1, 4), slice(1, 5)),
                  (BLUE, slice(9, 11), slice(2, 15))]).save(tmp_path / "paint.png")
    expected = np.zeros((12, 16), np.uint8)
    expected[1:4, 1:5] = 1  # green appears first, row by row
    expected[5:8, 6:12] = 2
    expected[9:11, 2:15] = 3
    with pytest.warns(MaskIdsWarning, match=r"paint\.png: objects numbered by stma: #00ff00 -> 1, #ff0000 -> 2, "
                                            r"#0000ff -> 3$"):
        mask = read_mask(tmp_path / "paint.png", size=(16, 12))
    np.testing.assert_array_equal(mask.labels, expected)
    assert mask.legend == {"#00ff00": 1, "#ff0000": 2, "#0000ff": 3} and mask.palette is None


def test_a_colour_keeps_its_id_across_the_masks_of_a_video(tmp_path: Path) -> None:
    numbering = Numbering()
    colour_image([(RED, slice(0, 2), slice(0, 2)), (GREEN, slice(5, 7), slice(5, 7))]).save(tmp_path / "a.png")
    colour_image([(YELLOW, slice(0, 2), slice(0, 2)), (GREEN, slice(8, 10), slice(8, 10))]).save(tmp_path / "b.png")
    write_mask(tmp_path / "c.png", np.where(ids_137() == 7, 7, 0).astype(np.uint8))
    colour_image([(BLUE, slice(0, 2), slice(0, 2))]).save(tmp_path / "d.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskIdsWarning)
        legends = [read_mask(tmp_path / name, numbering=numbering).legend for name in ("a.png", "b.png", "c.png",
                                                                                       "d.png")]
    assert legends == [{"#ff0000": 1, "#00ff00": 2}, {"#ffff00": 3, "#00ff00": 2}, None, {"#0000ff": 8}]


def test_colours_with_alpha_transparent_is_background(tmp_path: Path) -> None:
    image = colour_image([(RED, slice(0, 4), slice(0, 4)), (GREEN, slice(6, 9), slice(6, 9))], alpha=True)
    rgba = np.array(image)
    rgba[6:9, 6:9, 3] = 0  # the green object is transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    with pytest.warns(MaskIdsWarning):
        mask = read_mask(tmp_path / "m.png")
    expected = np.zeros((12, 16), np.uint8)
    expected[0:4, 0:4] = 1
    np.testing.assert_array_equal(mask.labels, expected)


def test_anti_aliased_colours_are_refused(tmp_path: Path) -> None:
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[..., 0] = np.arange(16 * 12).reshape(12, 16)  # 192 shades of red
    rgb[..., 1] = 7
    Image.fromarray(rgb).save(tmp_path / "blurred.png")
    with pytest.raises(StmaError, match=r"blurred\.png: 192 colours, more than a mask has \(64 at most"):
        read_mask(tmp_path / "blurred.png")


# -- LabelMe ---------------------------------------------------------------------------------------


def labelme(path: Path, shapes: list[dict], width: int = 16, height: int = 12) -> Path:
    path.write_text(json.dumps({"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": "frame.jpg",
                                "imageData": None, "imageHeight": height, "imageWidth": width}))
    return path


def shape(label: str, kind: str, points: list[list[float]], group: int | None = None) -> dict:
    return {"label": label, "points": points, "group_id": group, "shape_type": kind, "flags": {}}


def test_labelme_polygons_rectangles_and_circles(tmp_path: Path) -> None:
    """Shapes without group id are numbered in file order; later shapes are drawn over earlier ones; a
    pixel is inside when its centre is."""
    path = labelme(tmp_path / "shapes.json", [
        shape("car", "rectangle", [[2, 1], [6, 4]]),
        shape("dog", "polygon", [[8, 2], [12, 2], [12, 6], [8, 6]]),
        shape("ball", "circle", [[3.5, 8.5], [5.0, 8.5]]),
        shape("dog", "polygon", [[11, 5], [14, 5], [14, 7], [11, 7]]),  # over the first dog's corner
    ])
    expected = np.zeros((12, 16), np.uint8)
    expected[1:4, 2:6] = 1
    expected[2:6, 8:12] = 2
    expected[7:10, 2:5] = 3
    expected[5:7, 11:14] = 4
    with pytest.warns(MaskIdsWarning, match=r"car \(shape 0\) -> 1, dog \(shape 1\) -> 2, ball \(shape 2\) -> 3, "
                                            r"dog \(shape 3\) -> 4"):
        mask = read_mask(path, size=(16, 12))
    np.testing.assert_array_equal(mask.labels, expected)


def test_labelme_group_ids_are_object_ids(tmp_path: Path) -> None:
    path = labelme(tmp_path / "named.labelme", [
        shape("person", "rectangle", [[0, 0], [3, 3]], group=5),
        shape("person", "rectangle", [[0, 8], [3, 11]], group=5),  # the same person, occluded in two parts
        shape("bag", "rectangle", [[10, 0], [16, 2]]),
    ])
    expected = np.zeros((12, 16), np.uint8)
    expected[0:3, 0:3] = 5
    expected[8:11, 0:3] = 5
    expected[0:2, 10:16] = 6  # numbered after the highest group id
    with pytest.warns(MaskIdsWarning):
        mask = read_mask(path)  # read by its content, whatever the suffix
    np.testing.assert_array_equal(mask.labels, expected)
    assert mask.legend == {"person (group 5)": 5, "bag (shape 2)": 6}


@pytest.mark.parametrize(("shapes", "message"), [
    ([shape("edge", "line", [[0, 0], [5, 5]])], r"shape 0 \('edge'\) is a 'line' of 2 points, which has no area"),
    ([shape("x", "rectangle", [[0, 0], [3, 3]], group=300)], "group ids are object ids and must be 1..254"),
    ([{"label": "x", "shape_type": "polygon"}], r"malformed LabelMe file \(KeyError: 'points'\)"),
])
def test_labelme_errors(tmp_path: Path, shapes: list[dict], message: str) -> None:
    with pytest.raises(StmaError, match=message):
        read_mask(labelme(tmp_path / "bad.json", shapes))


def test_labelme_of_another_size(tmp_path: Path) -> None:
    path = labelme(tmp_path / "m.json", [shape("a", "rectangle", [[0, 0], [2, 2]])], width=20, height=10)
    with pytest.raises(StmaError, match=r"m\.json: the LabelMe image is 20x10 but the frames are 16x12"):
        read_mask(path, size=(16, 12))


# -- COCO ------------------------------------------------------------------------------------------

# Object 3 of the COCO test image, uncompressed RLE (column by column): rows 8-10 of columns 10-13.
RECTANGLE_RLE = {"size": [12, 16], "counts": [128, 3, 9, 3, 9, 3, 9, 3, 25]}


def coco(path: Path, annotations: list[dict], images: list[dict] | None = None) -> Path:
    images = images or [{"id": 10, "file_name": "frames/00000.jpg", "width": 16, "height": 12},
                        {"id": 11, "file_name": "frames/00001.jpg", "width": 16, "height": 12}]
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}]}))
    return path


def test_coco_polygons_and_rle(tmp_path: Path) -> None:
    path = coco(tmp_path / "instances.json", [
        {"id": 7, "image_id": 10, "category_id": 1, "iscrowd": 0,
         "segmentation": [[2, 1, 6, 1, 6, 4, 2, 4], [8, 1, 9, 1, 9, 3, 8, 3]]},  # one object in two parts
        {"id": 8, "image_id": 11, "category_id": 2, "iscrowd": 0, "segmentation": [[0, 0, 16, 0, 16, 12, 0, 12]]},
        {"id": 9, "image_id": 10, "category_id": 2, "iscrowd": 1, "segmentation": RECTANGLE_RLE},
    ])
    expected = np.zeros((12, 16), np.uint8)
    expected[1:4, 2:6] = 1
    expected[1:3, 8:9] = 1
    expected[8:11, 10:14] = 2
    with pytest.warns(MaskIdsWarning, match=r"annotation 7 \(person\) -> 1, annotation 9 \(car\) -> 2$"):
        mask = read_mask(path, size=(16, 12), frame_name="00000")
    np.testing.assert_array_equal(mask.labels, expected)
    with pytest.warns(MaskIdsWarning):
        assert read_mask(path, coco_image_id=11).labels.all()


def test_coco_compressed_rle(tmp_path: Path) -> None:
    """Counts 0, 4, 1, 1, 6 of a 3x4 image: '0', '4', '1', then 1 - 4 = -3 ('M'), then 6 - 1 = 5 ('5')."""
    image = [{"id": 1, "file_name": "a.png", "width": 4, "height": 3}]
    path = coco(tmp_path / "rle.json", [{"id": 1, "image_id": 1, "category_id": 1,
                                         "segmentation": {"size": [3, 4], "counts": "041M5"}}], image)
    with pytest.warns(MaskIdsWarning):
        labels = read_mask(path).labels
    np.testing.assert_array_equal(labels, [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]])


def test_coco_image_of_the_frame(tmp_path: Path) -> None:
    images = [{"id": i, "file_name": f"shots/frame_{i * 10}.jpg", "width": 16, "height": 12} for i in range(3)]
    path = coco(tmp_path / "c.json", [{"id": i, "image_id": i, "category_id": 1,
                                       "segmentation": [[i, 0, i + 2, 0, i + 2, 2, i, 2]]} for i in range(3)], images)
    with pytest.warns(MaskIdsWarning, match="annotation 2"):
        read_mask(path, frame_index=20)  # a video's frame 20: the image named ..._20
    with pytest.raises(StmaError, match=r"3 images and none is named after frame number 5; choose one with "
                                        r"--coco-image-id \(ids: 0, 1, 2\)"):
        read_mask(path, frame_index=5)
    with pytest.raises(StmaError, match="no image with id 9"):
        read_mask(path, coco_image_id=9)


@pytest.mark.parametrize(("segmentation", "message"), [
    ({"size": [12, 16], "counts": [5, 5]}, r"RLE counts cover 10 pixels, but the image has 192$"),
    ({"size": [12, 16], "counts": [-5, 197]}, r"RLE counts hold a negative run \(-5\), which no mask has$"),
    ({"size": [6, 16], "counts": [96]}, r"RLE of size \[6, 16\] in an image of size \[12, 16\]"),
])
def test_coco_rle_errors(tmp_path: Path, segmentation: dict, message: str) -> None:
    path = coco(tmp_path / "bad.json", [{"id": 1, "image_id": 10, "category_id": 1, "segmentation": segmentation}])
    with pytest.raises(StmaError, match=message):
        read_mask(path, frame_name="00000")


def test_json_that_is_no_mask(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"name": "not a mask"}')
    with pytest.raises(StmaError, match="neither LabelMe .* nor COCO"):
        read_mask(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text('{"shapes": [')
    with pytest.raises(StmaError, match=r"broken\.json: the mask is not valid JSON"):
        read_mask(tmp_path / "broken.json")


# -- one rule for ids and void: object ids 1..254, 255 is void ---------------------------------------


def test_id_254_survives_the_round_trip(tmp_path: Path) -> None:
    labels = ids_137()
    labels[labels == 7] = 254
    write_mask(tmp_path / "m.png", labels)
    assert read_mask(tmp_path / "m.png").object_ids == [1, 3, 254]


@pytest.mark.parametrize("values", [np.where(ids_137() == 7, 255, ids_137()).astype(np.uint8),
                                    np.where(ids_137() == 7, 255, ids_137()).astype(np.uint16)],
                         ids=["8-bit", "16-bit"])
def test_a_gray_object_255_is_refused(tmp_path: Path, values: np.ndarray) -> None:
    """Written out, 255 would be void and the object gone when read back (to resume, say)."""
    Image.fromarray(values).save(tmp_path / "m.png")
    with pytest.raises(StmaError, match=r"m\.png: mask values range over 0\.\.255, object ids must be 0\.\.254 "
                                        r"\(255 is void when read back\)"):
        read_mask(tmp_path / "m.png")


def test_a_labelme_group_255_is_refused(tmp_path: Path) -> None:
    path = labelme(tmp_path / "m.json", [shape("x", "rectangle", [[0, 0], [3, 3]], group=255)])
    with pytest.raises(StmaError, match=r"m\.json: LabelMe group ids are object ids and must be 1\.\.254 \(255 is "
                                        r"void; found \[255\]\)"):
        read_mask(path)


def test_a_255th_numbered_object_is_refused(tmp_path: Path) -> None:
    path = labelme(tmp_path / "m.json", [shape("x", "rectangle", [[0, 0], [3, 3]], group=254),
                                         shape("y", "rectangle", [[4, 4], [6, 6]])])
    with pytest.raises(StmaError, match=r"m\.json: more than 254 objects; object ids must be 1\.\.254 \(255 is void\)"):
        read_mask(path)


def test_the_davis_void_colour_in_an_rgb_mask_is_void(tmp_path: Path) -> None:
    colours = np.asarray(DAVIS_PALETTE, dtype=np.uint8).reshape(256, 3)
    labels = ids_137()
    labels[0] = 255
    Image.fromarray(colours[labels]).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png").labels, ids_137())


# -- hostile JSON masks ------------------------------------------------------------------------------


def test_deeply_nested_json_names_the_mask(tmp_path: Path) -> None:
    (tmp_path / "deep.json").write_text('{"shapes": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(StmaError, match=r"deep\.json: the mask is nested too deeply to be read$"):
        read_mask(tmp_path / "deep.json")


@pytest.mark.parametrize("width", [float("inf"), 10**12, 0, 16.5, "16", True])
def test_labelme_size_that_is_no_frame_size(tmp_path: Path, width: object) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"shapes": [shape("a", "rectangle", [[0, 0], [2, 2]])], "imageWidth": width,
                                "imageHeight": 12}))
    with pytest.raises(StmaError, match=r"m\.json: the LabelMe image is .*x12, not a frame size in pixels$"):
        read_mask(path)


@pytest.mark.parametrize("x", [float("inf"), float("nan"), 1e300])
def test_points_that_are_no_pixel_positions(tmp_path: Path, x: float) -> None:
    path = labelme(tmp_path / "m.json", [shape("a", "polygon", [[0, 0], [x, 0], [0, 5]])])
    with pytest.raises(StmaError, match=r"m\.json: shape 0 \('a'\) has points that are not numbers from -1e\+09 to "
                                        r"1e\+09$"):
        read_mask(path)


def test_a_group_id_beyond_floats(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"shapes": [{**shape("a", "rectangle", [[0, 0], [2, 2]]), "group_id": 1e400}],
                                "imageWidth": 16, "imageHeight": 12}))
    with pytest.raises(StmaError, match=r"m\.json: malformed LabelMe file \(OverflowError: "):
        read_mask(path)


# -- anti-aliased colour masks -----------------------------------------------------------------------

DARK_RED, DIM_RED, DARK_GREEN, DIM_GREEN, RED_GREEN = (140, 0, 0), (60, 0, 0), (0, 140, 0), (0, 60, 0), (200, 55, 0)


def anti_aliased() -> tuple[np.ndarray, np.ndarray]:
    """A red and a green box side by side on black, drawn with a one-pixel anti-aliased edge: 8 colours, and
    the 2 objects each blend belongs to (blends nearer black are background)."""
    rgb = np.zeros((16, 28, 3), np.uint8)
    expected = np.zeros((16, 28), np.uint8)
    rgb[3:13, 3:14], expected[3:13, 3:14] = DARK_RED, 1  # the ring, then the box over it
    rgb[3:13, 14:25], expected[3:13, 14:25] = DARK_GREEN, 2
    rgb[4:12, 4:14], rgb[4:12, 14:24] = RED, GREEN
    rgb[4:12, 13] = RED_GREEN  # where red meets green: more red than green
    for row in (3, 12):
        rgb[row, 3], rgb[row, 24] = DIM_RED, DIM_GREEN  # corners: more black than colour
        expected[row, 3] = expected[row, 24] = 0
    return rgb, expected


def test_anti_aliased_edges_are_read_as_the_objects_they_blend(tmp_path: Path) -> None:
    rgb, expected = anti_aliased()
    Image.fromarray(rgb).save(tmp_path / "aa.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask = read_mask(tmp_path / "aa.png")
    np.testing.assert_array_equal(mask.labels, expected)
    assert mask.legend == {"#ff0000": 1, "#00ff00": 2}
    edge = [str(w.message) for w in caught if w.category is EdgeColourWarning]
    assert edge == [f"{tmp_path / 'aa.png'}: 5 anti-aliased edge colours read as the colours they blend: "
                    "#003c00 (2 px) -> #000000, #008c00 (28 px) -> #00ff00, #3c0000 (2 px) -> #000000, "
                    "#8c0000 (28 px) -> #ff0000, #c83700 (8 px) -> #ff0000"]


def test_a_thin_object_of_its_own_colour_is_no_edge(tmp_path: Path) -> None:
    rgb, expected = anti_aliased()
    rgb[14, 2:26], expected[14, 2:26] = (0, 0, 255), 3  # a one-pixel blue line under the boxes
    Image.fromarray(rgb).save(tmp_path / "aa.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(read_mask(tmp_path / "aa.png").labels, expected)
