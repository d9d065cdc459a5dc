"""Training checkpoints after crashes, damaged checkpoints, and values that are not finite.

A first `stma train` run (one step of a tiny setting) makes a checkpoint; each case copies the run folder,
arranges it as a crash or a damage would, and runs `stma train` (or `stma weights convert`) once.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from badinput_corpus import Run, StmaProcess, assert_clean_stderr, run_some_at_once, run_stma
from safetensors.torch import load_file, save_file

from stma_cli.model import STMAConfig

FAILED, USAGE = 1, 2
TINY = ["--batch", "1", "--crop", "64", "--frames", "2", "--data", "synthetic", "--workers", "0",
        "--eval-sequences", "0", "--eval-long-sequences", "0", "--max-objects", "1"]


def _step(folder: Path) -> int:
    return json.loads((folder / "train_state.json").read_text())["step"]


def _set_step(folder: Path, step: int) -> None:
    state = json.loads((folder / "train_state.json").read_text())
    (folder / "train_state.json").write_text(json.dumps({**state, "step": step}))


def _older_version_crashed(run: Path) -> None:
    """The older save renamed checkpoint/ to .checkpoint.old (step 1), then died before renaming the complete
    .checkpoint.tmp (step 2) into place: no checkpoint/ at all. That run restarted from step 0."""
    target = (run / "checkpoint").resolve()
    (run / "checkpoint").unlink()
    shutil.copytree(target, run / ".checkpoint.tmp")
    _set_step(run / ".checkpoint.tmp", 2)
    target.rename(run / ".checkpoint.old")


def _crashed_before_the_switch(run: Path) -> None:
    """A save wrote and renamed checkpoint-00000002-…, then died before switching the link to it."""
    shutil.copytree((run / "checkpoint").resolve(), run / "checkpoint-00000002-abcd")
    _set_step(run / "checkpoint-00000002-abcd", 2)


def _in_checkpoint(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda run: ((run / "checkpoint") / name).write_bytes(data)


def _nan_in(name: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        if name == "train_state.json":
            state = json.loads((run / "checkpoint" / name).read_text())
            (run / "checkpoint" / name).write_text(json.dumps({**state, "metrics": {"J&F-Mean": float("nan")}}))
        else:
            tensors = load_file(run / "checkpoint" / name)
            key = sorted(tensors)[0]
            tensors[key] = tensors[key] * float("nan")
            save_file(tensors, run / "checkpoint" / name)
    return damage


def _resumed_at(step: int, source: str, steps: int) -> Callable[[Path, Run], None]:
    def check(run: Path, result: Run) -> None:
        assert f"resumed from {run / source} at step {step}" in result.stderr.splitlines()
        assert _step(run / "checkpoint") == steps
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert [record["step"] for record in log] == [1, steps]  # the first run's step 1, then this run's
        assert sorted(p.name for p in run.iterdir()) == ["checkpoint", (run / "checkpoint").resolve().name,
                                                         "log.jsonl"]
    return check


@dataclass
class Case:
    command: list[str]  # {run}: the case's copy of the run folder
    exit_code: int
    prepare: Callable[[Path], None] | None = None
    error: str | None = None  # the error line after "stma: error: "
    check: Callable[[Path, Run], None] | None = None


TRAIN = ["train", "--out", "{run}", *TINY]
CASES: dict[str, Case] = {
    "resume_after_an_older_version_crashed": Case([*TRAIN, "--steps", "3", "--force"], 0, _older_version_crashed,
                                                  check=_resumed_at(2, ".checkpoint.tmp", 3)),
    "resume_after_a_crash_before_the_switch": Case([*TRAIN, "--steps", "2", "--force"], 0, _crashed_before_the_switch,
                                                   check=_resumed_at(1, "checkpoint", 2)),
    "resume_from_a_broken_train_state": Case([*TRAIN, "--steps", "2"], FAILED,
                                             _in_checkpoint("train_state.json", b"{broken"),
                                             "{checkpoint}/train_state.json: the train state is not valid JSON"),
    "resume_from_a_deeply_nested_train_state": Case([*TRAIN, "--steps", "2"], FAILED, _in_checkpoint(
        "train_state.json", b'{"step": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        "{checkpoint}/train_state.json: the train state is nested too deeply to be read"),
    "resume_from_a_broken_optimizer_state": Case([*TRAIN, "--steps", "2"], FAILED,
                                                 _in_checkpoint("optimizer.pt", b"\0" * 100),
                                                 "{checkpoint}/optimizer.pt: unreadable optimiser state (damaged, "
                                                 "or not written by stma train)"),
    "resume_with_another_config": Case([*TRAIN, "--steps", "2"], FAILED, _in_checkpoint(
        "config.json", json.dumps(STMAConfig.preset("base").to_dict()).encode()),
        "{checkpoint}: this run was trained with another model config (differs in "),
    "learning_rate_nan": Case([*TRAIN, "--steps", "2", "--lr", "nan"], USAGE, None,
                              "--lr nan: expected a finite number > 0"),
    "unknown_config": Case([*TRAIN, "--steps", "2", "--config", "huge"], USAGE, None,
                           "--config 'huge': expected one of tiny, base"),
    "convert_a_nan_metric": Case(["weights", "convert", "{run}/checkpoint", "{run}/export"], FAILED,
                                 _nan_in("train_state.json"),
                                 "{checkpoint}/train_state.json: metric 'J&F-Mean' is not a finite number (nan)"),
    "convert_nan_weights": Case(["weights", "convert", "{run}/checkpoint", "{run}/export"], FAILED,
                                _nan_in("model.safetensors"), "{target}/model.safetensors: tensor "),
}


@dataclass
class Corpus:
    root: Path
    runs: dict[str, Run]
    before: dict[str, list[str]]  # case: the run folder's entries before


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("train")
    first = run_stma(["train", "--out", str(root / "first"), *TINY, "--steps", "1"], root)
    assert first.returncode == 0, first.stderr
    processes, before = {}, {}
    for name, case in CASES.items():
        run = root / name
        shutil.copytree(root / "first", run, symlinks=True)
        if case.prepare is not None:
            case.prepare(run)
        before[name] = sorted(p.name for p in run.iterdir())
        command = [arg.replace("{run}", str(run)) for arg in case.command]
        processes[name] = lambda c=command: StmaProcess(c, root)
    return Corpus(root, run_some_at_once(processes, at_once=3), before)


@pytest.mark.parametrize("name", CASES)
def test_case(corpus: Corpus, name: str) -> None:
    case, result, run = CASES[name], corpus.runs[name], corpus.root / name
    assert result.returncode == case.exit_code, result.stderr
    assert "Traceback" not in result.stderr
    if case.error is None:
        assert result.error_lines == []
    else:
        error = case.error.replace("{checkpoint}", str(run / "checkpoint"))
        expected = f"stma: error: {error.replace('{target}', str((run / 'checkpoint').resolve()))}"
        assert len(result.error_lines) == 1 and result.error_lines[0].startswith(expected), result.stderr
        assert_clean_stderr(result)
        assert sorted(p.name for p in run.iterdir()) == corpus.before[name]  # nothing written, nothing removed
    if case.check is not None:
        case.check(run, result)
