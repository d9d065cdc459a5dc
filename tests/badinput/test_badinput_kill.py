"""SIGKILL at random instants, 20 times: every final file is whole after each kill, and a rerun ends with
results equal to those of an uninterrupted run.

Two kill sequences run side by side (10 kills each) on their own output folders, with the batch of a
reference run made side by side the same way: the instants are drawn (seeded) between the moment the
reference first wrote into its output folder and its end. A run that finished before its kill makes
the next run of that sequence use --overwrite, so every kill falls on work in progress.
"""
from __future__ import annotations

import json
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
from badinput_corpus import StmaProcess, temporary_files, write_frame_folder, write_mask, write_video
from PIL import Image

from stma_cli.io.logits import read_logits

KILLS = 20
SEQUENCES = 2
SEED = 13


@dataclass
class Sequence:
    output: Path
    kill_times: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # files found not whole after a kill
    final_code: int | None = None


def _whole(folder: Path) -> list[str]:
    """The final files (not hidden: temporary files and lock records are) that cannot be read completely."""
    problems = []
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts) or path.is_dir():
            continue
        try:
            if path.suffix == ".png":
                with Image.open(path) as image:
                    image.load()
            elif path.suffix == ".mp4":
                with av.open(str(path)) as container:
                    frames = sum(1 for _ in container.decode(video=0))
                manifest = path.parent / "manifest.json"
                if manifest.exists():
                    assert frames == json.loads(manifest.read_text())["frames"]
            elif path.suffix == ".h5":
                with h5py.File(path, "r") as file:
                    file["logits"][()]
            elif path.name == "manifest.json":
                manifest = json.loads(path.read_text())
                assert len(list((path.parent / "masks").glob("*.png"))) == manifest["frames"]
        except Exception as error:  # noqa: BLE001 - any failure to read is what this test looks for
            problems.append(f"{path}: {type(error).__name__}: {error}")
    return problems


def _results(folder: Path) -> dict[str, object]:
    """What a finished output holds, comparable between runs (timing left out)."""
    results: dict[str, object] = {}
    for video in sorted(p for p in folder.iterdir() if p.is_dir()):
        manifest = json.loads((video / "manifest.json").read_text())
        del manifest["seconds"]
        with av.open(str(video / "overlay.mp4")) as container:
            overlay = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        results[video.name] = {
            "manifest": manifest,
            "masks": {p.name: np.asarray(Image.open(p)) for p in sorted((video / "masks").iterdir())},
            "logits": read_logits(video / "logits.h5")[0],
            "overlay": np.stack(overlay),
        }
    return results


def _same(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@dataclass
class Killed:
    reference: Path
    sequences: list[Sequence]


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory, random_weights: Path) -> Killed:
    root = tmp_path_factory.mktemp("kill")
    inputs = root / "inputs"
    inputs.mkdir()
    write_video(inputs / "a.mp4", 6)
    write_frame_folder(inputs / "b", 5)
    write_video(inputs / "c.mkv", 7)  # no frame count in the header
    for stem in "abc":
        write_mask(inputs / f"{stem}.png")

    def command(output: Path, overwrite: bool = False) -> list[str]:
        return ["segment", str(inputs), "--mask-template", "{stem}.png", "--direction", "both", "--weights",
                str(random_weights), "--output", str(output), *(["--overwrite"] if overwrite else [])]

    # The reference runs, side by side as the kill sequences will be, give the window of work in progress.
    started = time.monotonic()
    references = [StmaProcess(command(root / f"reference-{i}"), root) for i in range(SEQUENCES)]
    first_write = None
    while any(p.process.poll() is None for p in references):
        if first_write is None and (root / "reference-0").exists():
            first_write = time.monotonic() - started
        time.sleep(0.01)
    end = time.monotonic() - started
    assert all(p.wait().returncode == 0 for p in references)
    window = (first_write or 0.0, end)

    def kill_sequence(sequence: Sequence, rng: random.Random) -> None:
        finished = False
        for _ in range(KILLS // SEQUENCES):
            process = StmaProcess(command(sequence.output, overwrite=finished), root)
            delay = rng.uniform(*window)
            sequence.kill_times.append(round(delay, 2))
            deadline = time.monotonic() + delay
            while process.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            finished = process.process.poll() == 0
            process.process.send_signal(signal.SIGKILL)
            process.wait()
            if sequence.output.exists():
                sequence.problems += _whole(sequence.output)
        sequence.final_code = StmaProcess(command(sequence.output), root).wait().returncode

    sequences = [Sequence(root / f"out-{i}") for i in range(SEQUENCES)]
    threads = [threading.Thread(target=kill_sequence, args=(s, random.Random(SEED + i)))
               for i, s in enumerate(sequences)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Killed(root / "reference-0", sequences)


def test_every_final_file_is_whole_after_each_kill(killed: Killed) -> None:
    for sequence in killed.sequences:
        assert len(sequence.kill_times) == KILLS // SEQUENCES
        assert sequence.problems == [], f"kills at {sequence.kill_times} s"


def test_a_rerun_equals_an_uninterrupted_run(killed: Killed) -> None:
    reference = _results(killed.reference)
    assert sorted(reference) == ["a", "b", "c"]
    for sequence in killed.sequences:
        assert sequence.final_code == 0, f"kills at {sequence.kill_times} s"
        assert _same(_results(sequence.output), reference), f"kills at {sequence.kill_times} s"
        assert temporary_files(sequence.output) == []
        assert list(sequence.output.rglob(".stma.lock")) == []
