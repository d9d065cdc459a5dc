"""How fast the command line answers: `stma --help` and friends against `python -c "import torch"`.

Run: python benchmarks/cli_startup.py [--repeats 10] [--json PATH]

Each command is started `--repeats` times as a fresh process (the `stma` console script next to this
Python, else `python -m stma_cli`); the median wall-clock time is reported, and the ratio of each to
the median of `python -c "import torch"`. The target: `stma --help` under half of the torch import.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import write_record

COMMANDS = (["--help"], ["segment", "--help"], ["eval", "--help"], ["weights", "list"])


@dataclass
class Result:
    command: str
    median_s: float
    min_s: float
    of_torch_import: float  # median / median of `python -c "import torch"`


def stma_command() -> list[str]:
    """The console script beside this interpreter, as a user types it; else the module."""
    script = Path(sys.executable).with_name("stma")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "stma_cli"]


def seconds(command: list[str], repeats: int, env: dict[str, str]) -> list[float]:
    """Wall-clock seconds of `repeats` runs of `command` (output discarded; it must succeed)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return times


def table(results: list[Result]) -> str:
    lines = ["| command | median (s) | best (s) | of `import torch` |", "|---|---|---|---|"]
    lines += [f"| `{r.command}` | {r.median_s:.3f} | {r.min_s:.3f} | {r.of_torch_import:.2f} |" for r in results]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="runs of each command [10]")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stma-startup-") as home:
        env = {**os.environ, "HF_HOME": home, "HF_HUB_OFFLINE": "1"}  # `weights list` scans an empty cache
        seconds([sys.executable, "-c", "import torch"], 1, env)  # warm the file cache for both sides
        torch_times = seconds([sys.executable, "-c", "import torch"], args.repeats, env)
        reference = statistics.median(torch_times)
        results = [Result('python -c "import torch"', round(reference, 3), round(min(torch_times), 3), 1.0)]
        stma = stma_command()
        for command in COMMANDS:
            times = seconds(stma + command, args.repeats, env)
            median = statistics.median(times)
            results.append(Result(" ".join(["stma", *command]), round(median, 3), round(min(times), 3),
                                  round(median / reference, 2)))
            print(table(results).splitlines()[-1], flush=True)
    markdown = table(results)
    print()
    print(markdown)
    verdict = "under" if results[1].of_torch_import < 0.5 else "NOT under"
    print(f"\n`stma --help` takes {results[1].of_torch_import:.0%} of `import torch`: {verdict} half.")
    if args.json:
        write_record(args.json, "startup", f"python benchmarks/cli_startup.py --repeats {args.repeats}",
                     shutil.which("stma") or "stma", markdown, results)


if __name__ == "__main__":
    main()
