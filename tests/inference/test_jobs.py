"""From command-line inputs to video jobs: shards, input expansion, mask templates, output folders."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from stma_cli.errors import StmaError
from stma_cli.inference.jobs import (
    DEFAULT_OUTPUT,
    Shard,
    build_jobs,
    expand_inputs,
    local_device,
    mask_from_template,
    output_folder,
    parse_ends,
    parse_frames,
    video_stem,
)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 11, 12])
def test_shards_split_a_list_exactly(count):
    items = [f"v{i}" for i in range(11)]
    parts = [Shard(k, count).select(items) for k in range(count)]
    assert sorted(item for part in parts for item in part) == sorted(items)
    assert sum(len(part) for part in parts) == len(items)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_shard_parse():
    assert Shard.parse("1/4") == Shard(1, 4)
    assert Shard.parse("0/1") == Shard()
    for text, message in [("3/2", "K must be in 0..N-1"), ("0/0", "K must be in 0..N-1"), ("-1/2", "K must be"),
                          ("1", "expected K/N"), ("a/b", "expected K/N"), ("1/2/3", "expected K/N")]:
        with pytest.raises(StmaError, match=message):
            Shard.parse(text)


@pytest.mark.parametrize("env, shard", [
    ({}, Shard(0, 1)),
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, Shard(3, 4)),
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "5"}, Shard(2, 5)),
    ({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "10"}, Shard(2, 4)),
    # --array=1-7:2 runs tasks 1, 3, 5, 7
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_STEP": "2"}, Shard(2, 4)),
    # torchrun inside a SLURM job: the ranks split the list
    ({"RANK": "1", "WORLD_SIZE": "2", "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "3"}, Shard(1, 2)),
    ({"SLURM_ARRAY_TASK_ID": "3"}, Shard(0, 1)),
])
def test_shard_from_environment(env, shard):
    assert Shard.from_environment(env) == shard


@pytest.mark.parametrize("env, message", [
    ({"RANK": "4", "WORLD_SIZE": "4"}, "RANK/WORLD_SIZE: shard 4 of 4 does not exist"),
    ({"RANK": "x", "WORLD_SIZE": "4"}, "environment variable RANK='x': expected an integer"),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_STEP": "2"}, "SLURM_ARRAY_TASK_ID=4 is not MIN"),
    ({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4"}, "shard 9 of 4 does not exist"),
])
def test_shard_from_a_bad_environment(env, message):
    with pytest.raises(StmaError, match=message):
        Shard.from_environment(env)


def test_expand_a_folder_of_videos_with_their_masks(tmp_path):
    for name in ("b.mp4", "a.MKV", "a.png", "b.png", "notes.txt"):
        (tmp_path / name).touch()
    (tmp_path / "shots").mkdir()
    (tmp_path / "shots" / "0001.jpg").touch()
    (tmp_path / "empty").mkdir()
    assert expand_inputs([str(tmp_path)]) == [str(tmp_path / n) for n in ("a.MKV", "b.mp4", "shots")]
    assert expand_inputs([str(tmp_path / "shots"), "-", "x.mp4"]) == [str(tmp_path / "shots"), "-", "x.mp4"]
    with pytest.raises(StmaError, match="folder holds no video files, frames or frame folders"):
        expand_inputs([str(tmp_path / "empty")])


def test_video_stem_and_mask_template(tmp_path):
    video = tmp_path / "set1" / "cat.mp4"
    assert video_stem(str(video)) == "cat" and video_stem("-") == "stdin"
    (tmp_path / "frames").mkdir()
    assert video_stem(str(tmp_path / "frames")) == "frames"
    assert mask_from_template("{stem}.png", str(video)) == tmp_path / "set1" / "cat.png"
    assert mask_from_template("../masks/{parent}/{name}.png", str(video)) == (
        tmp_path / "set1" / ".." / "masks" / "set1" / "cat.mp4.png")
    assert mask_from_template(str(tmp_path / "m" / "{stem}.png"), str(video)) == tmp_path / "m" / "cat.png"
    assert mask_from_template("{stem}.png", "-") == Path("stdin.png")
    for template in ("{size}.png", "{stem.foo}.png", "{stem[x]}.png", "{}.png", "{0}.png"):
        with pytest.raises(StmaError, match=r"--mask-template .*: unknown field"):
            mask_from_template(template, str(video))
    with pytest.raises(StmaError, match=r"--mask-template '\{stem': "):
        mask_from_template("{stem", str(video))


def test_dot_dot_folder_is_named_after_the_real_folder(tmp_path, monkeypatch):
    (tmp_path / "clips" / "inner").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "clips" / "inner")
    assert video_stem("..") == "clips" and video_stem(".") == "inner"


def test_video_whose_stem_is_dot_dot_is_refused_alone(tmp_path):
    """`...mp4` has the stem `..`: its job reports why, the other videos get their folders inside --output."""
    jobs = build_jobs(["v/...mp4", "v/..mp4", "v/cat.mp4"], [], "{stem}.png", tmp_path / "out")
    assert [job.error for job in jobs[:2]] == [
        "v/...mp4: its name gives the output folder name '..', which is not a folder inside --output; rename it",
        "v/..mp4: its name gives the output folder name '.', which is not a folder inside --output; rename it"]
    assert jobs[2].error is None and jobs[2].output == tmp_path / "out" / "cat"
    [job] = build_jobs(["v/...mp4"], ["m.png"], None, None)
    assert job.error is not None  # the default output, stma_output/<stem>, would be stma_output/..


def test_build_jobs(tmp_path):
    [job] = build_jobs(["v/cat.mp4"], ["cat.png", "12:dog.png"], None, None)
    assert (job.source, job.masks, job.output) == ("v/cat.mp4", [(0, Path("cat.png")), (12, Path("dog.png"))],
                                                   DEFAULT_OUTPUT / "cat")
    [job] = build_jobs(["v/cat.mp4"], [], "{stem}.png", tmp_path / "out")
    assert (job.masks, job.output) == ([(0, Path("v/cat.png"))], tmp_path / "out")

    jobs = build_jobs(["v/cat.mp4", "w/dog.mkv"], [], "{stem}.png", tmp_path / "out")
    assert [(j.masks, j.output) for j in jobs] == [([(0, Path("v/cat.png"))], tmp_path / "out" / "cat"),
                                                   ([(0, Path("w/dog.png"))], tmp_path / "out" / "dog")]
    with pytest.raises(StmaError, match="v/cat.mp4 and w/cat.mp4 would share the output folder"):
        build_jobs(["w/cat.mp4", "v/cat.mp4"], [], "{stem}.png", None)
    for args, message in [(([], ["a.png"], None, None), "no video given"),
                          ((["a.mp4"], ["a.png"], "{stem}.png", None), "either --mask or --mask-template")]:
        with pytest.raises(StmaError, match=message):
            build_jobs(*args)


def test_local_device():
    assert local_device("cpu", {"LOCAL_RANK": "1"}) == "cpu"
    assert local_device("auto", {}) == "auto"
    for value, message in (("abc", "LOCAL_RANK='abc': expected an integer"), ("-1", "LOCAL_RANK=-1: expected 0")):
        with pytest.raises(StmaError, match=message):
            local_device("auto", {"LOCAL_RANK": value})


def test_nul_in_a_path_is_that_video_s_error():
    assert build_jobs(["a\0b.mp4"], ["m.png"], None, Path("out"))[0].error == "a\0b.mp4: its path holds a NUL byte"
    jobs = build_jobs(["a\0b.mp4", "c.mp4"], [], "{stem}.png", Path("out"))
    assert jobs[0].error == "a\0b.mp4: its path holds a NUL byte" and jobs[1].error is None


def test_paths_the_system_refuses_are_not_folders():
    assert expand_inputs(["x" * 300 + ".mp4", "a\0b.mp4"]) == ["x" * 300 + ".mp4", "a\0b.mp4"]


def test_output_folders_by_name_template(tmp_path):
    assert output_folder("{stem}", "v/day1/cat.mp4", 0) == Path("cat")
    assert output_folder("{parent}/{stem}", "v/day1/cat.mp4", 0) == Path("day1/cat")
    assert output_folder("{index:04d}_{name}", "v/day1/cat.mp4", 12) == Path("0012_cat.mp4")
    for template, message in [("{parent}/../{stem}", "gives 'day1/../cat'"), ("/{stem}", "gives '/cat'"),
                              ("{size}", "'size'"), ("{stem.upper}", "'stem.upper'")]:
        with pytest.raises(StmaError, match=re.escape(message)):
            output_folder(template, "v/day1/cat.mp4", 0)


def test_build_jobs_layout_and_plan(tmp_path):
    out = tmp_path / "out"
    [own] = build_jobs(["v/cat.mp4"], ["cat.png"], None, out)
    [listed] = build_jobs(["v/cat.mp4"], ["cat.png"], None, out, own_folder=False)
    [named] = build_jobs(["v/cat.mp4"], ["cat.png"], None, out, name_template="{parent}-{stem}")
    assert (own.output, listed.output, named.output) == (out, out / "cat", out / "v-cat")
    [job] = build_jobs(["v/cat.mp4"], ["cat.png", "12:dog.png"], None, None, frames=(10, 20), ends={15: [2]})
    assert job.masks == [(10, Path("cat.png")), (12, Path("dog.png"))]
    assert (job.frames, job.ends) == ((10, 20), {15: [2]})


def test_parse_frames_and_ends():
    assert parse_frames(None) == (0, None)
    assert [parse_frames(text) for text in ("10:20", "10:", ":20", ":")] == [(10, 20), (10, None), (0, 20), (0, None)]
    for text in ("10", "a:b", "-1:3", "5:5"):
        with pytest.raises(StmaError, match="--frames"):
            parse_frames(text)
    assert parse_ends(["2:140", "3:140", "1:9"]) == {140: [2, 3], 9: [1]}
    for value in ("2", "x:3", "0:5", "300:5"):
        with pytest.raises(StmaError, match="--end"):
            parse_ends([value])
