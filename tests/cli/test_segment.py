"""`stma segment` end to end with a random-weights model: outputs, ids, batches, shards, stdin, exit codes.

Quality is not tested here (the weights are random); what is tested is what comes out, where, and how.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from stma_cli.cli.app import app
from stma_cli.inference.passes import ABSENT
from stma_cli.io.claim import claim_folder
from stma_cli.io.logits import read_logits
from stma_cli.io.video import count_frames, open_video

runner = CliRunner()
REPORT_FIELDS = {"video", "output", "frames", "objects", "seconds", "fps", "status", "error", "tracks"}


def segment(*args: object, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, ["segment", *(str(a) for a in args)], env=env)


def segment_subprocess(*args: object, stdin: bytes, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """A real `python -m stma_cli segment` run, for what needs real stdin and stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "stma_cli", "segment", *(str(a) for a in args)], input=stdin,
                          capture_output=True, cwd=cwd, env=env, timeout=300)


def labels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "P"
        return np.asarray(image)


def mask_names(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "masks").iterdir())


def json_reports(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_two_moving_objects(make_video, weights, tmp_path):
    video = make_video(frames=8)
    out = tmp_path / "out"
    result = segment(video.path, "--mask", video.mask, "--weights", weights, "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == "stma: 1 done, 0 skipped, 0 failed"

    assert mask_names(out) == [f"{t:05d}.png" for t in range(8)]
    masks = [labels(out / "masks" / name) for name in mask_names(out)]
    np.testing.assert_array_equal(masks[0], video.labels[0])
    assert set(np.unique(np.stack(masks))) <= {0, 1, 2}
    with open_video(out / "overlay.mp4") as overlay:
        assert (count_frames(overlay), overlay.width, overlay.height) == (8, 128, 96)

    logits, attrs = read_logits(out / "logits.h5")
    assert logits.shape == (8, 3, 96 // 4, 128 // 4)
    assert list(attrs["object_ids"]) == [1, 2]
    # The masks are the logits' argmax: channel k is object k at the logits' resolution.
    from_logits = np.array([0, 1, 2])[logits.argmax(1)]
    assert (from_logits[1:] == np.stack(masks[1:])[:, 2::4, 2::4]).mean() > 0.8

    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["frames"], manifest["objects"], manifest["size"]) == (8, [1, 2], [128, 96])
    assert manifest["files"] == ["masks", "overlay.mp4", "logits.h5"]


def test_object_added_at_a_later_frame(make_video, weights, tmp_path):
    video = make_video(frames=8)
    first = video.write_mask(tmp_path / "first.png", 0, [1])
    late = video.write_mask(tmp_path / "late.png", 4, [2])
    out = tmp_path / "out"
    result = segment(video.path, "--mask", first, "--mask", f"4:{late}", "--weights", weights, "-o", out,
                     "--no-overlay")
    assert result.exit_code == 0, result.output

    masks = np.stack([labels(out / "masks" / name) for name in mask_names(out)])
    assert not (masks[:4] == 2).any()
    np.testing.assert_array_equal(masks[4] == 2, video.labels[4] == 2)
    logits, attrs = read_logits(out / "logits.h5")
    assert list(attrs["object_ids"]) == [1, 2] and logits.shape[:2] == (8, 3)
    assert (logits[:4, 2] == ABSENT).all()
    assert (logits[4:, 2] > ABSENT).any(axis=(1, 2)).all()
    assert json.loads((out / "manifest.json").read_text())["objects"] == [1, 2]


def test_direction_both_from_a_middle_frame(make_video, weights, tmp_path):
    video = make_video(frames=8)
    middle = video.write_mask(tmp_path / "middle.png", 4, [1, 2])
    out = tmp_path / "out"
    result = segment(video.path, "--mask", f"4:{middle}", "--direction", "both", "--weights", weights, "-o", out,
                     "--no-overlay")
    assert result.exit_code == 0, result.output

    assert mask_names(out) == [f"{t:05d}.png" for t in range(8)]
    np.testing.assert_array_equal(labels(out / "masks" / "00004.png"), video.labels[4])
    logits, _ = read_logits(out / "logits.h5")
    # Every object is tracked on every frame, those before the mask frame included.
    assert (logits[:, 1:] > ABSENT).any(axis=(2, 3)).all()


def test_ids_and_palette_are_kept(make_video, weights, tmp_path):
    palette = [value for i in range(256) for value in (i, 255 - i, (7 * i) % 256)]
    video = make_video(ids=(1, 3, 7), palette=palette, frames=6)
    out = tmp_path / "out"
    result = segment(video.path, "--mask", video.mask, "--weights", weights, "-o", out, "--no-overlay", "--json")
    assert result.exit_code == 0, result.output
    assert json_reports(result.stdout)[0]["objects"] == [1, 3, 7]

    for name in mask_names(out):
        with Image.open(out / "masks" / name) as image:
            assert image.getpalette() == palette
            assert set(np.unique(np.asarray(image))) <= {0, 1, 3, 7}
    np.testing.assert_array_equal(labels(out / "masks" / "00000.png"), video.labels[0])
    logits, attrs = read_logits(out / "logits.h5")
    assert list(attrs["object_ids"]) == [1, 3, 7] and logits.shape[1] == 4


def test_frame_folder_keeps_frame_names(make_video, weights, tmp_path):
    video = make_video("shots", frame_folder=True, frames=5)
    out = tmp_path / "out"
    result = segment(video.path, "--mask-template", "{stem}.png", "--weights", weights, "-o", out, "--no-logits")
    assert result.exit_code == 0, result.output
    assert mask_names(out) == [f"frame_{10 * t:03d}.png" for t in range(5)]
    np.testing.assert_array_equal(labels(out / "masks" / "frame_000.png"), video.labels[0])
    assert json.loads((out / "manifest.json").read_text())["files"] == ["masks", "overlay.mp4"]


def test_batch_with_a_bad_video_finishes_the_others(make_video, weights, tmp_path):
    videos = tmp_path / "videos"
    make_video("a", frames=4, folder=videos)
    make_video("c", frames=4, folder=videos)
    (videos / "b.mp4").write_bytes(b"this is not a video")
    shutil.copy(videos / "a.png", videos / "b.png")
    out = tmp_path / "out"
    result = segment(videos, "--mask-template", "{stem}.png", "--weights", weights, "-o", out, "--json",
                     "--no-overlay", "--no-logits")
    assert result.exit_code == 1

    reports = {Path(r["video"]).name: r for r in json_reports(result.stdout)}
    assert [reports[name]["status"] for name in ("a.mp4", "b.mp4", "c.mp4")] == ["ok", "error", "ok"]
    assert reports["b.mp4"]["error"].startswith(f"{videos / 'b.mp4'}: ")
    assert (out / "a" / "manifest.json").is_file() and (out / "c" / "manifest.json").is_file()
    assert not (out / "b" / "manifest.json").exists()
    assert result.stderr.splitlines() == ["stma: 2 done, 0 skipped, 1 failed", f"stma: error: {reports['b.mp4']['error']}"]


def test_resume_skips_finished_videos(make_video, weights, tmp_path):
    videos = tmp_path / "videos"
    for name in ("a", "b"):
        make_video(name, frames=4, folder=videos)
    out = tmp_path / "out"
    args = (videos, "--mask-template", "{stem}.png", "--weights", weights, "-o", out, "--json", "--no-overlay")
    assert segment(*args).exit_code == 0
    # As if the first run had been stopped during b: no manifest, and the record of that run in its lock file.
    (out / "b" / "manifest.json").unlink()
    (out / "b" / ".stma.lock").write_text(json.dumps({"pid": 1, "mask_names": "numbered"}))
    finished = (out / "a" / "logits.h5").stat().st_mtime_ns

    result = segment(*args)
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in json_reports(result.stdout)] == ["skipped", "ok"]
    assert (out / "a" / "logits.h5").stat().st_mtime_ns == finished
    assert (out / "b" / "manifest.json").is_file()
    assert result.stderr.splitlines()[-1] == "stma: 1 done, 1 skipped, 0 failed"

    assert not (out / "b" / ".stma.lock").exists()

    result = segment(*args, "--overwrite")
    assert [r["status"] for r in json_reports(result.stdout)] == ["ok", "ok"]


def test_a_finished_folder_loses_the_lock_file_of_a_run_killed_after_its_manifest(make_video, weights, tmp_path):
    """A kill between the manifest and the removal of the lock file leaves both: the next run skips the
    finished folder without rewriting it, and takes the stale lock file away (not one a process holds)."""
    video = make_video("a", frames=3)
    out = tmp_path / "out"
    args = (video.path, "--mask", video.mask, "--weights", weights, "-o", out, "--json", "--no-overlay")
    assert segment(*args).exit_code == 0
    (out / ".stma.lock").write_text(json.dumps({"pid": 1, "mask_names": "numbered"}))
    finished = {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.name != ".stma.lock"}

    result = segment(*args)
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in json_reports(result.stdout)] == ["skipped"]
    assert not (out / ".stma.lock").exists()
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == finished

    with claim_folder(out):  # another process checking the folder: its lock file stays, and the run skips
        result = segment(*args)
        assert [r["status"] for r in json_reports(result.stdout)] == ["skipped"]
        assert (out / ".stma.lock").exists()


def test_files_stma_did_not_write_are_kept_unless_overwrite(make_video, weights, tmp_path):
    """Masks at stma's names without a manifest or a record of an unfinished run are not stma's: an error
    names --overwrite, and nothing is touched; --overwrite replaces stma's names and keeps other files."""
    video = make_video("a", frames=3)
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    for name in ("00000.png", "00007.png", "mine.png"):
        (out / "masks" / name).write_text("user data")
    args = (video.path, "--mask", video.mask, "--weights", weights, "-o", out, "--no-overlay", "--no-logits")
    result = segment(*args)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (f"stma: error: {out}: holds masks/00000.png, masks/00007.png, "
                                              "not written by stma; --overwrite replaces them, or choose another "
                                              "--output")
    assert sorted(p.name for p in out.rglob("*")) == ["00000.png", "00007.png", "masks", "mine.png"]
    assert segment(*args, "--overwrite").exit_code == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["00000.png", "00001.png", "00002.png", "mine.png"]
    assert (out / "masks" / "mine.png").read_text() == "user data"


def test_shards_split_the_list_exactly(make_video, weights, tmp_path):
    videos = tmp_path / "videos"
    for name in ("a", "b", "c"):
        make_video(name, frames=3, folder=videos)
    out = tmp_path / "out"
    args = (videos, "--mask-template", "{stem}.png", "--weights", weights, "-o", out, "--json", "--no-overlay",
            "--no-logits")
    first = segment(*args, "--shard", "0/2")
    second = segment(*args, env={"RANK": "1", "WORLD_SIZE": "2"})  # as under torchrun
    assert first.exit_code == second.exit_code == 0

    assert [Path(r["video"]).stem for r in json_reports(first.stdout)] == ["a", "c"]
    assert [Path(r["video"]).stem for r in json_reports(second.stdout)] == ["b"]
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "c"]


@pytest.mark.parametrize("args, message", [
    (["a.mp4", "--mask", "a.png", "--shard", "3/2"], "--shard 3/2: K must be in 0..N-1 (got K=3, N=2)"),
    (["a.mp4", "b.mp4", "--mask", "a.png"], "--mask applies to one video, but 2 were given: use --mask-template"),
    (["a.mp4"], "no mask given: use --mask PATH (or FRAME:PATH) or --mask-template"),
    (["a.mp4", "--mask", "a.png", "--direction", "sideways"], "--direction 'sideways': expected one of"),
    (["a.mp4", "--mask", "a.png", "--precision", "fp64"], "--precision 'fp64': expected one of"),
    (["a.mp4", "--mask", "a.png", "--frames", "9:3"], "--frames 9:3: END must be after START"),
    (["a.mp4", "--mask", "a.png", "--frames", "x"], "--frames 'x': expected START:END"),
    (["a.mp4", "--mask", "a.png", "--end", "2"], "--end '2': expected ID:FRAME"),
    (["a.mp4", "b.mp4", "--mask-template", "{stem}.png", "--end", "2:5"], "--end applies to one video"),
    (["a.mp4", "--mask", "a.png", "--name-template", "{stem}/{size}"], "--name-template '{stem}/{size}': 'size'"),
])
def test_usage_errors_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = segment(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"stma: error: {message}")


def test_json_lines_for_paths_on_stdin(make_video, weights, tmp_path):
    for name in ("a", "b"):
        make_video(name, frames=3, folder=tmp_path / "videos")
    paths = b"videos/a.mp4\nvideos/b.mp4\n"  # as `find videos -name '*.mp4'` prints them
    proc = segment_subprocess("--mask-template", "{stem}.png", "--output", "out", "--json", "--weights", weights,
                              "--no-overlay", stdin=paths, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()

    reports = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [set(r) for r in reports] == [REPORT_FIELDS] * 2
    assert [(r["video"], r["output"], r["status"]) for r in reports] == [
        ("videos/a.mp4", "out/a", "ok"), ("videos/b.mp4", "out/b", "ok")]
    for report in reports:
        assert (report["frames"], report["objects"], report["error"]) == (3, [1, 2], None)
        assert report["seconds"] > 0 and report["fps"] > 0
        assert sorted(report["tracks"]) == ["1", "2"]
        track = report["tracks"]["1"]
        assert set(track) == {"frames", "mean_presence", "presence_falls", "area_jumps"}
        assert track["frames"][0][0] == 0 and 0 <= track["mean_presence"] <= 1  # given on frame 0: present there
    assert mask_names(tmp_path / "out" / "b") == ["00000.png", "00001.png", "00002.png"]
    assert proc.stderr.decode().splitlines()[-1] == "stma: 2 done, 0 skipped, 0 failed"


def test_video_from_stdin(make_video, weights, tmp_path):
    video = make_video(frames=4)
    proc = segment_subprocess("-", "--mask", video.mask, "-o", "out", "--json", "--weights", weights, "--no-logits",
                              stdin=video.path.read_bytes(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    [report] = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert (report["video"], report["status"], report["frames"]) == ("-", "ok", 4)
    assert mask_names(tmp_path / "out") == [f"{t:05d}.png" for t in range(4)]
    np.testing.assert_array_equal(labels(tmp_path / "out" / "masks" / "00000.png"), video.labels[0])


# -- --frames, --end, the folder layout and --name-template ----------------------------------------


def test_frames_segment_a_part_and_keep_the_frame_numbers(make_video, weights, tmp_path):
    """The part of an H.264 video from frame 3 is reached by seeking; its results are those of the same
    frames in a run over the whole video."""
    video = make_video(frames=10)
    mask = video.write_mask(tmp_path / "m3.png", 3, [1, 2])
    common = ("--mask", f"3:{mask}", "--weights", weights, "--no-overlay")
    assert segment(video.path, *common, "-o", tmp_path / "full").exit_code == 0
    result = segment(video.path, *common, "--frames", "3:7", "-o", tmp_path / "part", "--overlay")
    assert result.exit_code == 0, result.output
    assert mask_names(tmp_path / "part") == ["00003.png", "00004.png", "00005.png", "00006.png"]
    for name in mask_names(tmp_path / "part"):
        np.testing.assert_array_equal(labels(tmp_path / "part" / "masks" / name),
                                      labels(tmp_path / "full" / "masks" / name))
    logits, attrs = read_logits(tmp_path / "part" / "logits.h5")
    assert logits.shape[0] == 4 and attrs["first_frame"] == 3
    with open_video(tmp_path / "part" / "overlay.mp4") as overlay:
        assert count_frames(overlay) == 4
    assert json.loads((tmp_path / "part" / "manifest.json").read_text())["frame_range"] == [3, 7]


def test_a_mask_without_frame_is_for_the_start_of_frames(make_video, weights, tmp_path):
    video = make_video(frames=6)
    mask = video.write_mask(tmp_path / "m2.png", 2, [1])
    result = segment(video.path, "--mask", mask, "--frames", "2:", "--weights", weights, "-o", tmp_path / "out",
                     "--no-overlay", "--no-logits")
    assert result.exit_code == 0, result.output
    assert mask_names(tmp_path / "out") == [f"{t:05d}.png" for t in range(2, 6)]
    np.testing.assert_array_equal(labels(tmp_path / "out" / "masks" / "00002.png"), video.labels[2] * (video.labels[2] == 1))


def test_end_ends_an_object_at_a_cut(make_video, weights, tmp_path):
    video = make_video(frames=6)
    result = segment(video.path, "--mask", video.mask, "--end", "2:3", "--weights", weights, "-o", tmp_path / "out",
                     "--no-overlay")
    assert result.exit_code == 0, result.output
    masks = np.stack([labels(tmp_path / "out" / "masks" / name) for name in mask_names(tmp_path / "out")])
    logits, _ = read_logits(tmp_path / "out" / "logits.h5")
    assert not (masks[3:] == 2).any() and (logits[3:, 2] == ABSENT).all()
    assert (logits[:3, 2] > ABSENT).any(axis=(1, 2)).all() and (logits[:, 1] > ABSENT).any(axis=(1, 2)).all()


def test_a_folder_always_gives_one_folder_per_video(make_video, weights, tmp_path):
    make_video("only", frames=2, folder=tmp_path / "videos")
    out = tmp_path / "out"
    result = segment(tmp_path / "videos", "--mask-template", "{stem}.png", "--weights", weights, "-o", out,
                     "--no-overlay", "--no-logits")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["only"]
    assert mask_names(out / "only") == ["00000.png", "00001.png"]
    # One video named on its own: --output is its folder.
    result = segment(tmp_path / "videos" / "only.mp4", "--mask", tmp_path / "videos" / "only.png",
                     "--weights", weights, "-o", tmp_path / "own", "--no-overlay", "--no-logits")
    assert result.exit_code == 0 and mask_names(tmp_path / "own") == ["00000.png", "00001.png"]


def test_one_path_on_stdin_gives_a_folder_per_video(make_video, weights, tmp_path):
    make_video("a", frames=2, folder=tmp_path / "videos")
    proc = segment_subprocess("--mask-template", "{stem}.png", "--output", "out", "--weights", weights,
                              "--no-overlay", "--no-logits", stdin=b"videos/a.mp4\n", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert mask_names(tmp_path / "out" / "a") == ["00000.png", "00001.png"]


def test_name_template_keeps_videos_of_the_same_name_apart(make_video, weights, tmp_path):
    for folder in ("day1", "day2"):
        make_video("clip", frames=2, folder=tmp_path / folder)
    videos = [tmp_path / "day1" / "clip.mp4", tmp_path / "day2" / "clip.mp4"]
    common = ("--mask-template", "{stem}.png", "--weights", weights, "--no-overlay", "--no-logits", "--json")
    refused = segment(*videos, *common, "-o", tmp_path / "out")
    assert refused.exit_code == 2
    assert "would share the output folder" in refused.stderr and "--name-template '{parent}/{stem}'" in refused.stderr

    result = segment(*videos, *common, "-o", tmp_path / "out", "--name-template", "{parent}/{stem}")
    assert result.exit_code == 0, result.output
    assert [r["output"] for r in json_reports(result.stdout)] == [str(tmp_path / "out" / "day1" / "clip"),
                                                                  str(tmp_path / "out" / "day2" / "clip")]
    result = segment(*videos, *common, "-o", tmp_path / "numbered", "--name-template", "{index:03d}-{stem}")
    assert sorted(p.name for p in (tmp_path / "numbered").iterdir()) == ["000-clip", "001-clip"]
    colliding = segment(*videos, *common, "-o", tmp_path / "x", "--name-template", "{stem}")
    assert colliding.exit_code == 2 and "would share the output folder" in colliding.stderr


def _box(labels: np.ndarray, object_id: int) -> list[int]:
    """A COCO polygon around the pixels of one object (a square)."""
    ys, xs = np.nonzero(labels == object_id)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def test_coco_mask_of_a_frame_folder(make_video, weights, tmp_path):
    """The COCO image named like the folder's first frame; annotations numbered in file order; the numbering
    is one warning line on stderr and is kept in the manifest."""
    video = make_video(frames=3, frame_folder=True)
    first = video.labels[0]
    coco = {"images": [{"id": 4, "file_name": "frame_010.png", "width": 128, "height": 96},
                       {"id": 3, "file_name": "frame_000.png", "width": 128, "height": 96}],
            "categories": [{"id": 1, "name": "box"}],
            "annotations": [{"id": 6, "image_id": 3, "category_id": 1, "segmentation": [_box(first, 2)]},
                            {"id": 5, "image_id": 3, "category_id": 1, "segmentation": [_box(first, 1)]}]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    proc = segment_subprocess(video.path, "--mask", "instances.json", "-o", "out", "--weights", weights,
                              "--no-overlay", "--no-logits", stdin=b"", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    expected = np.select([first == 2, first == 1], [1, 2], 0).astype(np.uint8)
    np.testing.assert_array_equal(labels(tmp_path / "out" / "masks" / "frame_000.png"), expected)
    notes = [line for line in proc.stderr.decode().splitlines() if "numbered" in line]
    assert notes == ["stma: warning: instances.json: objects numbered by stma: annotation 6 (box) -> 1, "
                     "annotation 5 (box) -> 2"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["mask_ids"] == {"instances.json": {"annotation 6 (box)": 1, "annotation 5 (box)": 2}}
    assert manifest["objects"] == [1, 2]


def test_pooling_older_memory_frames_is_part_of_the_provenance_only_where_it_pools(make_video, weights, tmp_path):
    """Where older frames are pooled (at the default --mem-size), --mem-full is part of the provenance, and
    another --mem-full makes another run; a memory too small to pool leaves it out."""
    video = make_video(frames=6)
    base = ["segment", str(video.path), "--mask", str(video.mask), "--weights", weights, "--no-overlay",
            "--no-logits", "--json"]
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "small"), "--mem-size", "5"])
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "small" / "manifest.json").read_text())["provenance"]["settings"]
    assert "mem_full" not in settings
    default = [*base, "-o", str(tmp_path / "default")]
    assert runner.invoke(app, default).exit_code == 0
    manifest = json.loads((tmp_path / "default" / "manifest.json").read_text())
    assert manifest["provenance"]["settings"]["mem_full"] == 4 and manifest["mem_full"] == 4
    again = runner.invoke(app, [*default, "--mem-full", "2"])
    assert again.exit_code == 1 and "mem_full" in again.stderr


def test_a_folder_of_bmp_frames_segments(make_video, weights, tmp_path):
    """Every suffix a frame folder is taken for is also read: .bmp frames give masks named like them."""
    video = make_video(frames=4, frame_folder=True)
    for png in sorted(video.path.iterdir()):
        Image.open(png).save(png.with_suffix(".bmp"))
        png.unlink()
    result = runner.invoke(app, ["segment", str(video.path), "--mask", str(video.mask), "--weights", weights,
                                 "-o", str(tmp_path / "out"), "--no-overlay", "--no-logits", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] == 4
    names = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    assert names == [f"frame_{t:03d}.png" for t in (0, 10, 20, 30)]
