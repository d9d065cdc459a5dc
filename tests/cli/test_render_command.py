"""`stma render`: overlays written again from finished folders, in other styles, without the model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from stma_cli.cli.app import app
from stma_cli.errors import StmaError
from stma_cli.io.render import parse_colors
from stma_cli.io.video import open_video
from stma_cli.io.video_writer import VideoWriter

runner = CliRunner()


def invoke(*args: object) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def mask_of(out: Path, name: str) -> np.ndarray:
    with Image.open(out / "masks" / f"{name}.png") as image:
        return np.asarray(image)


def frames_of(path: Path) -> list[np.ndarray]:
    with open_video(path) as video:
        return list(video)


@pytest.fixture
def finished(make_video, weights, tmp_path):
    """A video segmented without an overlay: (video, output folder)."""
    video = make_video(frames=6)
    out = tmp_path / "out"
    result = invoke("segment", video.path, "--mask", video.mask, "--weights", weights, "-o", out,
                    "--no-overlay", "--no-logits")
    assert result.exit_code == 0, result.output
    return video, out


def test_render_adds_the_overlay_and_the_manifest_lists_it(finished, weights):
    video, out = finished
    result = invoke("render", out, "--colors", "1=#00ff00,2=#0000ff", "--opacity", "1", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "ok" and record["frames"] == 6 and Path(record["video"]) == video.path.resolve()
    drawn = frames_of(out / "overlay.mp4")
    assert len(drawn) == 6
    inside = mask_of(out, "00000") == 1  # frame 0 holds the given mask
    assert inside.sum() > 100
    assert np.median(drawn[0][inside], axis=0).tolist() == pytest.approx([0, 255, 0], abs=12)  # opaque green
    manifest = json.loads((out / "manifest.json").read_text())
    assert "overlay.mp4" in manifest["files"] and "overlay.mp4" in manifest["provenance"]["outputs"]
    # A later run that asks for an overlay finds this one and skips the video.
    again = invoke("segment", video.path, "--mask", video.mask, "--weights", weights, "-o", out, "--no-logits")
    assert again.exit_code == 0 and "1 skipped" in again.stderr


def test_contour_only_leaves_the_inside_of_objects_as_the_frame_is(finished):
    video, out = finished
    source = frames_of(video.path)[0]
    labels = mask_of(out, "00000")  # the given mask: whole squares
    interior = labels > 0
    for _ in range(3):  # away from the 2-px contour
        interior[1:-1, 1:-1] &= interior[:-2, 1:-1] & interior[2:, 1:-1] & interior[1:-1, :-2] & interior[1:-1, 2:]
    border = (labels > 0) & ~interior

    def change(*style: str) -> tuple[float, float]:
        assert invoke("render", out, "--colors", "1=#ffffff,2=#ffffff", *style).exit_code == 0
        difference = np.abs(frames_of(out / "overlay.mp4")[0].astype(int) - source.astype(int)).sum(-1)
        return difference[interior].mean(), difference[border].mean()

    (outline_inside, outline_border), (filled_inside, _) = change("--contour"), change("--opacity", "0.8")
    assert outline_inside < 30 < 150 < outline_border  # encoding noise inside, white on the contour
    assert filled_inside > 150


def test_ids_are_written_on_the_objects(finished):
    _, out = finished
    assert invoke("render", out).exit_code == 0
    plain = frames_of(out / "overlay.mp4")
    assert invoke("render", out, "--ids").exit_code == 0
    labelled = frames_of(out / "overlay.mp4")
    assert any(np.abs(a.astype(int) - b.astype(int)).max() > 60 for a, b in zip(plain, labelled))


def test_a_moved_source_needs_video(finished, tmp_path):
    video, out = finished
    moved = video.path.rename(tmp_path / "moved.mp4")
    result = invoke("render", out)
    assert result.exit_code == 1
    assert "source video" in result.stderr and "--video" in result.stderr
    assert not (out / "overlay.mp4").exists() and not (out / ".stma.lock").exists()
    assert invoke("render", out, "--video", moved).exit_code == 0
    assert len(frames_of(out / "overlay.mp4")) == 6


def test_a_video_of_another_size_is_refused_and_the_earlier_overlay_kept(finished, tmp_path):
    _, out = finished
    assert invoke("render", out).exit_code == 0
    before = (out / "overlay.mp4").read_bytes()
    other = tmp_path / "other.mp4"
    with VideoWriter(other, 10, 64, 48) as writer:
        for _ in range(6):
            writer.write(np.zeros((48, 64, 3), np.uint8))
    result = invoke("render", out, "--video", other)
    assert result.exit_code == 1 and "64x48" in result.stderr
    assert (out / "overlay.mp4").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "masks", "overlay.mp4"]


def test_a_missing_mask_fails_that_folder_and_the_batch_goes_on(make_video, weights, tmp_path):
    outs = []
    for name in ("a", "b"):
        video = make_video(name, frames=4, folder=tmp_path / name)
        out = tmp_path / f"out-{name}"
        assert invoke("segment", video.path, "--mask", video.mask, "--weights", weights, "-o", out,
                      "--no-overlay", "--no-logits").exit_code == 0
        outs.append(out)
    (outs[0] / "masks" / "00002.png").unlink()
    result = invoke("render", outs[0], tmp_path / "nothing", outs[1], "--json")
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in records] == ["error", "error", "ok"]
    assert "00002.png" in records[0]["error"] and "no manifest" in records[1]["error"]
    assert not (outs[0] / "overlay.mp4").exists() and (outs[1] / "overlay.mp4").exists()
    assert "1 rendered, 2 failed" in result.stderr


def test_frame_folders_and_ranges(make_video, weights, tmp_path):
    video = make_video("frames", frames=8, frame_folder=True)
    out = tmp_path / "out"
    assert invoke("segment", video.path, "--mask", f"2:{video.mask}", "--frames", "2:7", "--weights", weights,
                  "-o", out, "--no-logits", "--no-overlay").exit_code == 0
    assert invoke("render", out).exit_code == 0
    assert len(frames_of(out / "overlay.mp4")) == 5


@pytest.mark.parametrize("args", [("--opacity", "1.5"), ("--colors", "1=red"), ("--colors", "255=#ffffff"),
                                  ("--colors", "²=#ffffff")])
def test_bad_styles_are_usage_errors(finished, args):
    _, out = finished
    result = invoke("render", out, *args)
    assert result.exit_code == 2 and result.stderr.startswith("stma: error: ")


def test_parse_colors():
    assert parse_colors("1=#ff0000, 2=00FF80") == {1: (255, 0, 0), 2: (0, 255, 128)}
    assert parse_colors("") == {}
    with pytest.raises(StmaError):
        parse_colors("1=#ff00")
