"""Usage errors exit 2 and name the option; bad files among the inputs are one error line, never a traceback.

Also: a run's provenance covers the weights' config.json, so an edited config is not taken for the same model.
"""
from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from stma_cli.cli.app import app

runner = CliRunner()
USAGE, FAILED = 2, 1


def stma(*args: object) -> Result:
    return runner.invoke(app, [str(arg) for arg in args])


def one_error(result: Result, code: int, says: str) -> None:
    """Exit `code`, and stderr ends in one error line that starts with `says` (no traceback)."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("stma: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"stma: error: {says}"), result.stderr


# -- stma segment ----------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_usage_error(make_video, weights, tmp_path: Path) -> None:
    video = make_video(frames=2)
    result = stma("segment", video.path, "--mask", video.mask, "--weights", weights, "-o", tmp_path / "out",
                  "--device", "cuda")
    one_error(result, USAGE, "--device cuda: CUDA is not available on this machine")
    assert not (tmp_path / "out").exists()


def test_fp16_on_the_cpu_is_a_usage_error(make_video, weights, tmp_path: Path) -> None:
    video = make_video(frames=2)
    result = stma("segment", video.path, "--mask", video.mask, "--weights", weights, "-o", tmp_path / "out",
                  "--device", "cpu", "--precision", "fp16")
    one_error(result, USAGE, "--precision fp16 needs a CUDA device")


ONE = ["a.mp4", "--mask", "m.png"]
TWO = ["a.mp4", "b.mp4", "--mask-template", "{stem}.png"]


@pytest.mark.parametrize(("args", "says"), [
    ([*ONE, "--frames", "²:"], "--frames '²:': expected START:END"),  # '²'.isdigit(), but int('²') fails
    ([*ONE, "--frames", ":٣"], "--frames ':٣': expected START:END"),
    ([*ONE, "--end", "1:²"], "--end '1:²': expected ID:FRAME"),
    ([*ONE, "--end", "255:3"], "--end 255:3: object ids are 1..254"),
    ([*ONE, "--shard", "٠/٢"], "--shard '٠/٢': expected K/N"),
    (["a.mp4", "--mask-template", "{stem.__class__}.png"], "--mask-template '{stem.__class__}.png': unknown field"),
    (["a.mp4", "--mask-template", "{stem:{name.__class__}}.png"],
     "--mask-template '{stem:{name.__class__}}.png': field {stem} with a conversion or format spec"),
    ([*TWO, "--name-template", "{index:{stem.__class__}}"],
     "--name-template '{index:{stem.__class__}}': fields are plain"),
    ([*TWO, "--name-template", "{index:999999999999d}"], "--name-template '{index:999999999999d}': fields are plain"),
])
def test_bad_option_values_are_one_line_and_exit_2(args: list[str], says: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    one_error(stma("segment", *args), USAGE, says)


def test_an_end_for_an_object_that_no_mask_has(make_video, weights, tmp_path: Path) -> None:
    video = make_video(frames=3, ids=(1, 2))
    result = stma("segment", video.path, "--mask", video.mask, "--weights", weights, "-o", tmp_path / "out",
                  "--end", "7:2", "--no-overlay", "--no-logits")
    one_error(result, FAILED, "--end 7:2: no mask has object 7 (the masks' objects: 1, 2)")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_an_edited_config_is_another_model(make_video, tiny_weights, tmp_path: Path) -> None:
    """The same tensors under another config.json segment differently: the finished folder is not skipped."""
    weights = shutil.copytree(tiny_weights(0), tmp_path / "weights")
    video = make_video(frames=2)
    args = ("segment", video.path, "--mask", video.mask, "--weights", weights, "-o", tmp_path / "out",
            "--no-overlay", "--no-logits", "--json")
    assert json.loads(stma(*args).stdout)["status"] == "ok"
    assert json.loads(stma(*args).stdout)["status"] == "skipped"
    config = json.loads((weights / "config.json").read_text())
    (weights / "config.json").write_text(json.dumps({**config, "cut_threshold": 0.2}))
    one_error(stma(*args), FAILED, f"{tmp_path / 'out'}: holds the finished results of another run (model)")


# -- stma train ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "says"), [
    (["--max-objects", "33"], "--max-objects 33: the model's ID table holds at most 32 objects (--config tiny)"),
    (["--skip-schedule", "0:99999999999999999999"], "--skip-schedule 0:99999999999999999999: fractions must start"),
    (["--skip-schedule", "0:3,nan:4"], "--skip-schedule 0:3,nan:4: fractions must start at 0"),
    (["--skip-schedule", "nan:3"], "--skip-schedule nan:3: fractions must start at 0"),
    (["--lr", "nan"], "--lr nan: expected a finite number > 0"),
    (["--mem-size", "20:2"], "--mem-size 20:2: sizes from 2 to 64, MIN at most MAX"),
    (["--mem-size", "2-20"], "--mem-size 2-20: expected MIN:MAX, e.g. 2:20"),
])
def test_train_options_out_of_bounds(args: list[str], says: str, tmp_path: Path) -> None:
    one_error(stma("train", "--out", tmp_path / "run", *args), USAGE, says)
    assert not (tmp_path / "run").exists()


def test_a_crop_beyond_the_bound_is_typers_usage_error(tmp_path: Path) -> None:
    result = stma("train", "--out", tmp_path / "run", "--crop", "30000")
    assert result.exit_code == USAGE
    assert "Invalid value for '--crop'" in result.stderr and "2048" in result.stderr  # typer's wording varies
    assert not (tmp_path / "run").exists()


# -- stma eval -------------------------------------------------------------------------------------


def _bomb_png(path: Path, side: int = 20_000) -> None:
    """A PNG header announcing side x side pixels (past Pillow's decompression-bomb limit) in a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture
def davis(tmp_path: Path) -> Path:
    """A DAVIS layout of one 4-frame sequence 'square', with its predictions in results/."""
    (tmp_path / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("square\n")
    labels = np.zeros((32, 32), np.uint8)
    labels[8:16, 8:16] = 1
    for sub in ("JPEGImages/480p/square", "Annotations/480p/square", "results/square"):
        (tmp_path / sub).mkdir(parents=True)
    for t in range(4):
        Image.new("RGB", (32, 32)).save(tmp_path / "JPEGImages/480p/square" / f"{t:05d}.jpg")
        Image.fromarray(labels, mode="L").save(tmp_path / "Annotations/480p/square" / f"{t:05d}.png")
        Image.fromarray(labels, mode="L").save(tmp_path / "results/square" / f"{t:05d}.png")
    return tmp_path


def test_eval_of_a_sequence_that_is_not_there_is_a_usage_error(davis: Path) -> None:
    result = stma("eval", davis, "--results", davis / "results", "--sequences", "nosuch", "--workers", "1")
    one_error(result, USAGE, f"{davis / 'ImageSets' / '2017' / 'val.txt'}: has no sequence 'nosuch'")


def test_eval_with_a_decompression_bomb_among_the_ground_truth(davis: Path) -> None:
    bomb = davis / "Annotations/480p/square/00001.png"
    _bomb_png(bomb)
    result = stma("eval", davis, "--results", davis / "results", "--workers", "1")
    one_error(result, FAILED, f"{bomb}: cannot read mask (Image size (400000000 pixels) exceeds limit")


def test_eval_with_a_meta_json_nested_too_deeply(tmp_path: Path) -> None:
    (tmp_path / "valid" / "JPEGImages").mkdir(parents=True)
    (tmp_path / "valid" / "Annotations").mkdir()
    (tmp_path / "valid" / "meta.json").write_text('{"videos": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = stma("eval", tmp_path, "--format", "youtube", "--results", tmp_path / "results")
    one_error(result, FAILED, f"{tmp_path / 'valid' / 'meta.json'}: cannot read JSON (maximum recursion depth")
