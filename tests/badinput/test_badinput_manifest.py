"""Reruns into folders that already hold results: the manifest is no longer trusted blindly.

A first run makes two finished folders (an 8-frame and a 12-frame video). Each case copies one of them,
or makes a folder of its own, and runs `stma segment` into it once; it is checked as the user sees it:
exit code, the one stderr line, the JSON status, and what the folder holds afterwards (byte for byte
where it must be untouched).
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from badinput_corpus import (
    Run,
    StmaProcess,
    assert_clean_stderr,
    finished_frames,
    run_some_at_once,
    run_stma_together,
    tree,
    write_mask,
    write_video,
)

from stma_cli.io.logits import read_logits

FAILED = 1
ANOTHER_RUN = "{{folder}}: holds the finished results of another run ({}); --overwrite replaces them"
FOREIGN = "{{folder}}: holds {}, not written by stma; --overwrite replaces them, or choose another --output"
EVERYTHING = "manifest.json, overlay.mp4, logits.h5, masks/00000.png, masks/00001.png, 6 more masks"


@dataclass
class Case:
    base: str | None  # the finished folder copied first ("clip", "long", "changed"), or None for a fresh folder
    args: list[str]  # after `segment VIDEO`; --mask, --weights, --output, --json are added unless given
    exit_code: int
    status: str  # the JSON status of the video
    error: str | None = None  # the error line after "stma: error: " ({folder}: the case's output folder)
    untouched: bool = False  # the folder is byte for byte as before
    prepare: Callable[[Path], None] | None = None  # changes the folder before the run
    check: Callable[[Path], None] | None = None  # more checks of the folder after the run
    video: str = "clip.mp4"


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _write_manifest(text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / "manifest.json").write_text(text)


def _older_manifest(folder: Path) -> None:
    """A manifest as the version before provenance records wrote it."""
    manifest = _manifest(folder)
    del manifest["provenance"], manifest["mask_names"]
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _user_files(folder: Path) -> None:
    (folder / "masks").mkdir(parents=True)
    for name in ("masks/00000.png", "masks/00003.png", "masks/mine.png", "notes.txt"):
        (folder / name).write_text("the user's")


def _overlay_folder(folder: Path) -> None:
    (folder / "overlay.mp4").mkdir(parents=True)
    (folder / "overlay.mp4" / "keep.txt").write_text("the user's")


def _rewrite_video(folder: Path) -> None:
    """Another video written at the path the finished folder was made from (the corpus root's changed.mp4)."""
    write_video(folder.parent.parent / "changed.mp4", 9)


def _overlay_kept(folder: Path) -> None:
    assert (folder / "overlay.mp4" / "keep.txt").read_text() == "the user's"


def _frames(count: int) -> list[str]:
    return [f"{i:05d}.png" for i in range(count)]


def _exactly_the_new_result(folder: Path) -> None:
    """--overwrite with a shorter video: the 12 masks of the longer run are gone, 8 are left."""
    assert sorted(p.name for p in (folder / "masks").iterdir()) == _frames(8)
    assert finished_frames(folder) == 8 and read_logits(folder / "logits.h5")[0].shape[0] == 8


def _only_masks(folder: Path) -> None:
    """--overwrite --no-overlay --no-logits: the old overlay and logits go, since they are not the new result."""
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "masks"]


def _user_files_kept(folder: Path) -> None:
    assert sorted(p.name for p in (folder / "masks").iterdir()) == [*_frames(8), "mine.png"]
    assert (folder / "masks" / "mine.png").read_text() == (folder / "notes.txt").read_text() == "the user's"
    assert finished_frames(folder) == 8


CASES: dict[str, Case] = {
    "same_run_is_skipped": Case("clip", [], 0, "skipped", untouched=True),
    "without_overlay_is_skipped": Case("clip", ["--no-overlay"], 0, "skipped", untouched=True),
    "other_mask": Case("clip", ["--mask", "other.png"], FAILED, "error", ANOTHER_RUN.format("masks"), True),
    "other_mem_size": Case("clip", ["--mem-size", "3"], FAILED, "error", ANOTHER_RUN.format("mem_size 20 -> 3"), True),
    "other_direction": Case("clip", ["--direction", "both"], FAILED, "error",
                            ANOTHER_RUN.format("direction forward -> both"), True),
    "other_model": Case("clip", ["--weights", "other-weights"], FAILED, "error", ANOTHER_RUN.format("model"), True),
    "other_video": Case("clip", [], FAILED, "error", ANOTHER_RUN.format("input video"), True, video="twin.mp4"),
    "video_changed_in_place": Case("changed", [], FAILED, "error", ANOTHER_RUN.format("input video"), True,
                                   video="changed.mp4", prepare=lambda folder: _rewrite_video(folder)),
    "manifest_is_an_array": Case("clip", [], FAILED, "error", FOREIGN.format(EVERYTHING), True,
                                 prepare=_write_manifest("[1, 2, 3]\n")),
    "manifest_is_broken": Case("clip", [], FAILED, "error", FOREIGN.format(EVERYTHING), True,
                               prepare=_write_manifest("{broken")),
    "manifest_of_an_older_version": Case("clip", [], FAILED, "error", ANOTHER_RUN.format(
        "no record of its input, masks, model and settings (an older stma wrote it)"), True, prepare=_older_manifest),
    "files_stma_did_not_write": Case(None, [], FAILED, "error", FOREIGN.format("masks/00000.png, masks/00003.png"),
                                     True, prepare=_user_files),
    "files_stma_did_not_write_overwritten": Case(None, ["--overwrite"], 0, "ok", prepare=_user_files,
                                                 check=_user_files_kept),
    "overlay_is_a_folder_overwritten": Case(None, ["--overwrite"], FAILED, "error",
                                            "{folder}/overlay.mp4: is a folder, where stma writes a file; move it away",
                                            prepare=_overlay_folder, check=_overlay_kept),
    "overwrite_with_a_shorter_video": Case("long", ["--overwrite"], 0, "ok", check=_exactly_the_new_result),
    "overwrite_without_overlay_and_logits": Case("clip", ["--overwrite", "--no-overlay", "--no-logits"], 0, "ok",
                                                 check=_only_masks),
    "input_mask_is_an_output_mask": Case("clip", ["--mask", "{folder}/masks/00000.png", "--overwrite"], FAILED,
                                         "error", "{folder}/masks/00000.png: this mask is where stma writes its output "
                                         "masks ({folder}/masks); move it, or choose another --output", True),
}


@dataclass
class Corpus:
    root: Path
    runs: dict[str, Run]
    before: dict[str, dict]  # case: tree of its folder before the run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, random_weights: Path, tiny_weights) -> Corpus:
    root = tmp_path_factory.mktemp("manifest")
    write_video(root / "clip.mp4")
    write_video(root / "long.mp4", 12)
    shutil.copy(root / "clip.mp4", root / "twin.mp4")
    shutil.copy(root / "clip.mp4", root / "changed.mp4")
    write_mask(root / "clip.png")
    other = np.zeros((48, 64), np.uint8)
    other[2:10, 2:10] = 1
    write_mask(root / "other.png", other)
    shutil.copytree(tiny_weights(1), root / "other-weights")
    weights = str(random_weights)
    first = run_stma_together({
        name: (["segment", str(root / f"{name}.mp4"), "--mask", str(root / "clip.png"), "--weights", weights,
                "--output", str(root / "finished" / name)], None) for name in ("clip", "long", "changed")}, root)
    assert all(run.returncode == 0 for run in first.values()), first

    processes, before = {}, {}
    for name, case in CASES.items():
        folder = root / name / "out"
        folder.parent.mkdir()
        if case.base is not None:
            shutil.copytree(root / "finished" / case.base, folder)
        if case.prepare is not None:
            case.prepare(folder)
        command = ["segment", str(root / case.video), *[arg.replace("{folder}", str(folder)) for arg in case.args]]
        for option, value in {"--mask": str(root / "clip.png"), "--weights": weights, "--output": str(folder)}.items():
            if option not in command:
                command += [option, value]
        before[name] = tree(folder) if folder.exists() else {}
        processes[name] = lambda c=[*command, "--json"]: StmaProcess(c, root)
    return Corpus(root, run_some_at_once(processes), before)


@pytest.mark.parametrize("name", CASES)
def test_case(corpus: Corpus, name: str) -> None:
    case, run = CASES[name], corpus.runs[name]
    folder = corpus.root / name / "out"
    assert run.returncode == case.exit_code, run.stderr
    assert_clean_stderr(run)
    [report] = [json.loads(line) for line in run.stdout.splitlines()]
    assert report["status"] == case.status, report
    if case.error is None:
        assert run.error_lines == [], run.stderr
    else:
        assert run.error_lines == [f"stma: error: {case.error.replace('{folder}', str(folder))}"], run.stderr
    if case.untouched:
        assert tree(folder) == corpus.before[name]
    if case.check is not None:
        case.check(folder)
