"""Thread counts from affinity, cgroup quotas (real files laid out as the kernel does), options and workers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from stma_cli.threads import available_cpus, cgroup_quota, threads_per_process, use_threads


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota(tmp_path):
    write(tmp_path / "cpu.max", "150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    write(tmp_path / "cpu.max", "max 100000\n")
    assert cgroup_quota(tmp_path) is None


def test_cgroup_v1_quota(tmp_path):
    write(tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us", "50000\n")
    write(tmp_path / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_quota(tmp_path) == 0.5
    write(tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_quota(tmp_path) is None


def test_no_cgroup_files(tmp_path):
    assert cgroup_quota(tmp_path) is None
    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_a_quota_caps_the_affinity(tmp_path):
    write(tmp_path / "cpu.max", "100000 100000\n")
    assert available_cpus(tmp_path) == 1
    write(tmp_path / "cpu.max", "50000 100000\n")  # half a CPU still runs one thread
    assert available_cpus(tmp_path) == 1


def test_affinity_is_what_counts_not_the_core_count():
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs Linux and two CPUs")
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert available_cpus() == 1
    finally:
        os.sched_setaffinity(0, before)


def test_threads_are_divided_among_workers(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads_per_process(8, workers=3) == 2
    assert threads_per_process(1, workers=4) == 1
    assert threads_per_process(None) == available_cpus()
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert threads_per_process(None, workers=2) == 3
    assert threads_per_process(4) == 4  # the option wins over the environment
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert threads_per_process(None) == available_cpus()


def test_use_threads_sets_torch():
    before = torch.get_num_threads()
    try:
        assert use_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
