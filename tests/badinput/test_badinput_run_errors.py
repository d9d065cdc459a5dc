"""Bad options, weights and output paths: each case is one `stma segment` run of a good video.

The runs are started together and checked one by one: the exit code, one `stma: error:` line that names
the file or option at fault and says what is wrong, nothing else on stderr, and no output written.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from badinput_corpus import (
    FRAMES,
    Run,
    assert_clean_stderr,
    run_stma_together,
    temporary_files,
    write_mask,
    write_other_architecture,
    write_truncated_weights,
    write_video,
)

USAGE, FAILED = 2, 1
CASES = ["mask_after_last_frame", "mask_after_last_frame_uncounted", "weights_missing", "weights_truncated",
         "weights_other_architecture", "output_not_writable", "output_is_a_file", "shard_out_of_range",
         "device_cuda_without_cuda"]


@dataclass
class Case:
    args: list[str]  # after `segment VIDEO --mask MASK --weights W --output OUT` (each replaceable)
    exit_code: int
    names: str  # the file or option the error line starts with
    says: str  # what the error line says is wrong
    output: Path  # must not exist after the run (except where a test says otherwise)


@dataclass
class Corpus:
    cases: dict[str, Case]
    runs: dict[str, Run]
    skipped: dict[str, str] = field(default_factory=dict)  # case: why it cannot run here

    def get(self, name: str) -> tuple[Case, Run]:
        if name in self.skipped:
            pytest.skip(self.skipped[name])
        return self.cases[name], self.runs[name]


def _unwritable_folder(root: Path) -> Path | None:
    """A folder where nothing can be created, or None.

    As a normal user: a folder without write permission. As root (CI), permissions stop no one, so the
    folder is /sys, the sysfs root, where the kernel refuses to create files or folders even for root.
    """
    if os.geteuid() != 0:
        folder = root / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    return Path("/sys") if os.path.isdir("/sys/kernel") else None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, random_weights: Path) -> Iterator[Corpus]:
    root = tmp_path_factory.mktemp("run-errors")
    video, uncounted = write_video(root / "clip.mp4"), write_video(root / "uncounted.mkv")
    mask, late_mask = write_mask(root / "clip.png"), write_mask(root / "late.png")
    unwritable = _unwritable_folder(root)
    unwritable_output = (unwritable or root) / "stma-out"
    existing_file = root / "existing.txt"
    existing_file.write_text("keep me\n")
    truncated = write_truncated_weights(random_weights, root / "truncated-weights")
    other = write_other_architecture(random_weights, root / "other-architecture")

    def out(name: str) -> Path:
        return root / f"out-{name}"

    cases = {
        "mask_after_last_frame": Case(
            ["--mask", f"99:{mask}"], FAILED, str(mask), "mask for frame 99, but the video has 8 frames",
            out("mask_after_last_frame")),
        "mask_after_last_frame_uncounted": Case(
            [str(uncounted), "--mask", f"20:{late_mask}"], FAILED, str(late_mask),
            "mask for frame 20, but the video has 8 frames", out("mask_after_last_frame_uncounted")),
        "weights_missing": Case(
            ["--weights", str(root / "no-such-weights")], FAILED, f"weights '{root / 'no-such-weights'}'",
            "not a folder, not a shipped model", out("weights_missing")),
        "weights_truncated": Case(
            ["--weights", str(truncated)], FAILED, str(truncated.resolve() / "model.safetensors"),
            "corrupted or truncated safetensors file", out("weights_truncated")),
        "weights_other_architecture": Case(
            ["--weights", str(other)], FAILED, str(other.resolve() / "config.json"),
            "config is for architecture 'xmem', not 'stma'", out("weights_other_architecture")),
        "output_not_writable": Case(
            ["--output", str(unwritable_output)], FAILED, str(unwritable_output),
            "cannot create the output folder", unwritable_output),
        "output_is_a_file": Case(
            ["--output", str(existing_file)], FAILED, str(existing_file),
            "cannot create the output folder (it is a file)", existing_file / "masks"),
        "shard_out_of_range": Case(
            ["--shard", "3/2"], USAGE, "--shard 3/2", "K must be in 0..N-1 (got K=3, N=2)", out("shard")),
        "device_cuda_without_cuda": Case(
            ["--device", "cuda"], USAGE, "--device cuda", "CUDA is not available on this machine", out("cuda")),
    }
    assert list(cases) == CASES
    skipped = {}
    if torch.cuda.is_available():
        skipped["device_cuda_without_cuda"] = "CUDA is available here"
    if unwritable is None:
        skipped["output_not_writable"] = "running as root without a sysfs at /sys: no folder root cannot write"
    runs = run_stma_together({name: (_command(case, video, mask, random_weights), None)
                              for name, case in cases.items() if name not in skipped}, root)
    yield Corpus(cases, runs, skipped)
    if unwritable is not None and unwritable.is_relative_to(root):
        unwritable.chmod(0o755)


def _command(case: Case, video: Path, mask: Path, weights: Path) -> list[str]:
    """`segment VIDEO --mask M --weights W --output O` with the case's arguments replacing or adding to these."""
    args = list(case.args)
    positional = [] if args and not args[0].startswith("-") else [str(video)]
    defaults = {"--mask": str(mask), "--weights": str(weights), "--output": str(case.output)}
    for option, value in defaults.items():
        if option not in args:
            args += [option, value]
    return ["segment", *positional, *args]


@pytest.mark.parametrize("name", CASES)
def test_one_error_line_and_exit_code(corpus: Corpus, name: str) -> None:
    case, run = corpus.get(name)
    assert run.returncode == case.exit_code, run.stderr
    assert len(run.error_lines) == 1, run.stderr
    assert run.error_lines[0].startswith(f"stma: error: {case.names}: ")
    assert case.says in run.error_lines[0]
    assert_clean_stderr(run)


@pytest.mark.parametrize("name", [name for name in CASES if name != "mask_after_last_frame_uncounted"])
def test_nothing_written(corpus: Corpus, name: str) -> None:
    case, _ = corpus.get(name)
    assert not case.output.exists()


def test_existing_file_as_output_is_untouched(corpus: Corpus) -> None:
    existing = corpus.cases["output_is_a_file"].args[1]
    assert Path(existing).read_text() == "keep me\n"


def test_mask_after_the_end_of_an_uncounted_video(corpus: Corpus) -> None:
    """A Matroska file does not give its frame count: the mask's frame is found missing only at the end.
    The masks of the frames seen stay, but the overlay and logits are discarded and no manifest is written."""
    folder = corpus.cases["mask_after_last_frame_uncounted"].output
    assert sorted(p.name for p in folder.iterdir()) == [".stma.lock", "masks"]  # masks and the run's record
    assert len(list((folder / "masks").iterdir())) == FRAMES
    assert temporary_files(folder) == []
