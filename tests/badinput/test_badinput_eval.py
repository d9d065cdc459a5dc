"""`stma eval --output`: sequence names from the dataset's own lists are joined to paths, so a name that
is not one plain path component could write over the dataset or outside --output. Each case is refused
with one line naming the list, before anything is written.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from badinput_corpus import Run, StmaProcess, assert_one_error_line, changed_outside, run_some_at_once, tree
from PIL import Image

FAILED = 1


@dataclass
class Case:
    layout: str  # "davis" or "youtube"
    listing: bytes | None  # the DAVIS val.txt, or None to keep the good one
    meta: dict | None  # the YouTube-VOS meta.json, or None to keep the good one
    args: list[str]  # after `eval ROOT`; --output and --weights are added unless given
    names: str  # the file or option the error line starts with ({root}: the case's dataset)
    says: str


def _davis(root: Path) -> None:
    for t in range(3):
        labels = np.zeros((32, 32), np.uint8)
        labels[8:16, 8 + t : 16 + t] = 1
        for folder, image in (("JPEGImages/480p/square", Image.new("RGB", (32, 32))),
                              ("Annotations/480p/square", Image.fromarray(labels, "L"))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            image.save(root / folder / f"{t:05d}.{'jpg' if folder.startswith('JPEG') else 'png'}")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("square\n")


def _youtube(root: Path) -> None:
    split = root / "valid"
    for t in range(0, 10, 5):
        (split / "JPEGImages" / "v1").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32)).save(split / "JPEGImages" / "v1" / f"{t:05d}.jpg")
    (split / "Annotations" / "v1").mkdir(parents=True)
    Image.fromarray(np.ones((32, 32), np.uint8), "L").save(split / "Annotations" / "v1" / "00000.png")
    (split / "meta.json").write_text(json.dumps(_meta("v1", ["00000", "00005"])))


def _meta(video: str, frames: list[str]) -> dict:
    return {"videos": {video: {"objects": {"1": {"frames": frames}}}}}


LISTING = "{root}/ImageSets/2017/val.txt"
META = "{root}/valid/meta.json"
NOT_PLAIN = "is not a plain file name (no '/', '\\', '..' or empty)"
CASES: dict[str, Case] = {
    # An absolute name made --output write the predictions over the dataset's own annotations.
    "absolute_name": Case("davis", b"square\n{root}/Annotations/480p/square\n", None, [], LISTING,
                          f"sequence name '{{root}}/Annotations/480p/square' {NOT_PLAIN}"),
    "parent_name": Case("davis", b"../escape\n", None, [], LISTING, f"sequence name '../escape' {NOT_PLAIN}"),
    "dot_dot": Case("davis", b"..\n", None, [], LISTING, f"sequence name '..' {NOT_PLAIN}"),
    "nested_name": Case("davis", b"square/inner\n", None, [], LISTING, f"sequence name 'square/inner' {NOT_PLAIN}"),
    "backslash_name": Case("davis", b"a\\b\n", None, [], LISTING, f"sequence name 'a\\\\b' {NOT_PLAIN}"),
    "listing_not_utf8": Case("davis", b"square\n\xff\xfe\n", None, [], LISTING, "not UTF-8 text"),
    "split_outside": Case("davis", None, None, ["--split", "../../x"], "--split", f"split name '../../x' {NOT_PLAIN}"),
    "output_inside_the_annotations": Case("davis", None, None, ["--output", "{root}/Annotations/480p"],
                                          "--output {root}/Annotations/480p",
                                          "overlaps the dataset's {root}/Annotations/480p"),
    # Predictions go to OUTPUT/Annotations/VIDEO/: --output DATASET/valid would replace the ground truth.
    "youtube_output_is_the_split": Case("youtube", None, None, ["--format", "youtube", "--output", "{root}/valid"],
                                        "--output {root}/valid", "overlaps the dataset's {root}"),
    "youtube_video_name": Case("youtube", None, _meta("../v1", ["00000"]), ["--format", "youtube"], META,
                               f"video name '../v1' {NOT_PLAIN}"),
    "youtube_frame_name": Case("youtube", None, _meta("v1", ["00000", "../../00005"]), ["--format", "youtube"], META,
                               f"video 'v1': frame name '../../00005' {NOT_PLAIN}"),
}


@dataclass
class Corpus:
    root: Path
    runs: dict[str, Run]
    changed: dict[str, list[str]]  # case: paths changed under its folder (the dataset and the output)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, random_weights: Path) -> Corpus:
    root = tmp_path_factory.mktemp("eval")
    _davis(root / "davis")
    _youtube(root / "youtube")
    processes, before = {}, {}
    for name, case in CASES.items():
        folder = root / name
        shutil.copytree(root / case.layout, folder / "dataset")
        dataset = folder / "dataset"
        if case.listing is not None:
            (dataset / "ImageSets" / "2017" / "val.txt").write_bytes(case.listing.replace(b"{root}",
                                                                                          str(dataset).encode()))
        if case.meta is not None:
            (dataset / "valid" / "meta.json").write_text(json.dumps(case.meta))
        args = ["eval", str(dataset), *[arg.replace("{root}", str(dataset)) for arg in case.args]]
        if "--output" not in args:
            args += ["--output", str(folder / "predictions")]
        before[name] = tree(folder)
        processes[name] = lambda a=[*args, "--weights", str(random_weights)]: StmaProcess(a, root)
    runs = run_some_at_once(processes)
    return Corpus(root, runs, {name: changed_outside(before[name], tree(root / name)) for name in CASES})


@pytest.mark.parametrize("name", CASES)
def test_refused_in_one_line_before_anything_is_written(corpus: Corpus, name: str) -> None:
    case, dataset = CASES[name], corpus.root / name / "dataset"
    assert_one_error_line(corpus.runs[name], FAILED, case.names.replace("{root}", str(dataset)),
                          case.says.replace("{root}", str(dataset)))
    assert corpus.changed[name] == []  # the dataset untouched, no predictions folder
