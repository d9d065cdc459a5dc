"""How many CPU threads a command uses: what `--threads` says, else the CPUs this process may really use.

A machine's core count is the wrong default in a container, under a CPU quota or beside other jobs
pinned to other cores: torch would start one thread per core and the threads would wait on each other.
The CPUs a process may use are its affinity mask, capped by the cgroup's CPU quota (v2 `cpu.max`, v1
`cpu.cfs_quota_us`). An explicit `OMP_NUM_THREADS` is the user's choice and is used when `--threads` is
not given.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def available_cpus(cgroup: Path = CGROUP) -> int:
    """The CPUs this process may use: its affinity, capped by its cgroup's CPU quota (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_quota(cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cgroup_quota(cgroup: Path = CGROUP) -> float | None:
    """The cgroup's CPU quota in CPUs (e.g. 1.5), or None when there is none or it cannot be read."""
    try:
        limit, period = (cgroup / "cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000" or "150000 100000"
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        pass
    for folder in (cgroup / "cpu", cgroup / "cpu,cpuacct"):  # cgroup v1
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def threads_per_process(threads: int | None, workers: int = 1) -> int:
    """Threads for each of `workers` processes: `threads`, else `OMP_NUM_THREADS`, else the available CPUs,
    divided among the workers (at least 1 each)."""
    total = threads if threads is not None else _omp_threads() or available_cpus()
    return max(1, total // max(1, workers))


def use_threads(threads: int | None, workers: int = 1) -> int:
    """Set torch's CPU threads for this process (see `threads_per_process`); returns the number set."""
    import torch

    count = threads_per_process(threads, workers)
    torch.set_num_threads(count)
    return count


def _omp_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isascii() and value.isdecimal() and int(value) > 0 else None
