from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.io.masks import DAVIS_PALETTE, LossyMaskWarning, Mask, parse_mask_arg, read_mask, write_mask


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


def test_rgb_mask_with_unknown_colour(tmp_path: Path) -> None:
    rgb = np.zeros((12, 16, 3), dtype=np.uint8)
    rgb[2:5, 2:5] = (10, 200, 30)
    Image.fromarray(rgb).save(tmp_path / "odd.png")
    with pytest.raises(StmaError, match=r"odd\.png: colour \(10, 200, 30\) is not in the DAVIS palette"):
        read_mask(tmp_path / "odd.png")


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
    with pytest.raises(StmaError, match=r"m\.png: mask values range over 0\.\.7000, object ids must be 0\.\.255"):
        read_mask(tmp_path / "m.png")


def test_32_bit_integer_mask(tmp_path: Path) -> None:
    Image.fromarray(ids_137().astype(np.int32)).save(tmp_path / "m.tif")
    assert read_mask(tmp_path / "m.tif").object_ids == [1, 3, 7]


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mask(tmp_path / "m.png", ids_137())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(StmaError, match=r"m\.png: image too large to be a mask"):
        read_mask(tmp_path / "m.png")
