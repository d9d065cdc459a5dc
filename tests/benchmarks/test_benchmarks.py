"""Every benchmark script runs end to end on a tiny input (2-3 frames), so that none of them can rot.

These check that the scripts work and print their tables; the figures themselves are not asserted.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# The JSON-recording benchmarks that run_all.py collects into RESULTS.md.
RECORDED = {
    "speed": ["segment_speed.py", "--frames", "2", "--resolutions", "240p", "--threads", "1", "--mem-sizes", "2,20"],
    "memory": ["memory.py", "--runs", "64x48:2", "--threads", "1"],
    "batch": ["batch_scale.py", "--videos", "2", "--frames", "2", "--threads", "1"],
}


def run(args: list[str], tmp: Path) -> str:
    """Run `benchmarks/<script> args...`; return its stdout (it must succeed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf")}
    done = subprocess.run([sys.executable, str(BENCHMARKS / args[0]), *args[1:]], capture_output=True, text=True,
                          cwd=tmp, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The JSON record of each recorded benchmark, from one tiny run."""
    tmp = tmp_path_factory.mktemp("recorded")
    out = {}
    for name, args in RECORDED.items():
        run([*args, "--json", str(tmp / f"{name}.json")], tmp)
        out[name] = json.loads((tmp / f"{name}.json").read_text())
    return out


@pytest.mark.parametrize("name", list(RECORDED))
def test_recorded_benchmark(records: dict[str, dict], name: str) -> None:
    record = records[name]
    assert record["benchmark"] == name and record["command"].startswith("python benchmarks/")
    assert record["results"] and record["markdown"].startswith("| ")


def test_speed_splits_the_time_into_labelled_stages(records: dict[str, dict]) -> None:
    (result,) = records["speed"]["results"]
    stages = result["stages"]
    for stage in ("encoder", "association", "propagation", "decoder", "labels", "writing"):
        assert stages[stage] > 0, stage  # the library's record_function labels reached the profiler
    assert result["frames"] == 2 and result["fps"] > 0


def test_run_all_merges_sections(records: dict[str, dict], tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCHMARKS))
    cuda = run_all.section("cuda", {"speed": records["speed"]}, "python benchmarks/run_all.py --device cuda")
    existing = run_all.merge("", "cuda", cuda)
    merged = run_all.merge(existing, "cpu", run_all.section("cpu", records, "python benchmarks/run_all.py"))
    assert merged.index("<!-- section:cpu -->") < merged.index("<!-- section:cuda -->")
    for name in records:
        assert f"### {run_all.TITLES[name]}" in merged


@pytest.mark.parametrize(
    ("args", "figure"),
    [
        (["cli_startup.py", "--repeats", "1"], r"`stma --help` takes \d+% of `import torch`"),
        (["model_speed.py", "--height", "64", "--width", "64", "--memory", "2", "--repeats", "1", "--threads", "1"],
         r"64x64, 2 objects, 2-frame memory: [\d.]+ s/frame"),
        (["eval_speed.py", "--frames", "3", "--repeats", "1"], r"J&F-Mean 0\.\d{3}"),
        (["data_speed.py", "--clips", "1", "--frames", "2", "--size", "64", "64"], r"pseudo +2 frames 64x64: [\d.]+ ms"),
        (["heldout.py", "--root", "heldout", "--sequences", "1", "--frames", "3", "--size", "64x96",
          "--methods", "model,copy", "--workers", "1", "--device", "cpu"], r"\| copy-first-mask \| [\d.]+ \|"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else "",
)
def test_benchmark_runs(args: list[str], figure: str, tmp_path: Path) -> None:
    assert re.search(figure, run(args, tmp_path)), f"{args[0]} did not print its figure"
