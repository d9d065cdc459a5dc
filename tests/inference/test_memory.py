"""The memory bank keeps the anchor, samples every k-th frame and stays within its bound."""
import pytest
import torch

from stma_cli.inference.memory import MemoryBank
from stma_cli.model import MemoryEntry


class _Named(MemoryEntry):
    def __init__(self, name: str) -> None:
        super().__init__(levels=[], keys=None, coverage=None, object_ids=None)
        self.name = name

    def __repr__(self) -> str:
        return self.name


def names(bank: MemoryBank) -> list[str]:
    return [e.name for e in bank.entries()]


def test_anchor_working_and_short_term():
    bank = MemoryBank(mem_size=4, mem_every=3)
    bank.add(_Named("f0"), annotated=True)
    for t in range(1, 12):
        bank.add(_Named(f"f{t}"), annotated=False)
    # working frames every 3rd: f3, f6, f9; previous frame f11; bound 4 -> oldest working leave.
    assert names(bank) == ["f0", "f6", "f9", "f11"]


@pytest.mark.parametrize("mem_size,mem_every", [(2, 1), (3, 2), (5, 5), (8, 1)])
def test_bound_holds_for_long_videos(mem_size, mem_every):
    bank = MemoryBank(mem_size=mem_size, mem_every=mem_every)
    bank.add(_Named("f0"), annotated=True)
    for t in range(1, 500):
        bank.add(_Named(f"f{t}"), annotated=t == 250)
        assert len(bank) <= mem_size
        assert names(bank)[0] == "f0"
        assert f"f{t}" in names(bank)


def test_the_previous_frame_comes_last():
    bank = MemoryBank(mem_size=5, mem_every=2)
    bank.add(_Named("f0"), annotated=True)
    bank.add(_Named("f1"), annotated=False)
    bank.add(_Named("f2"), annotated=False)  # a working frame
    assert names(bank)[-1] == "f2"
    bank.add(_Named("f3"), annotated=True)  # a new object: an anchor, yet the previous frame
    assert names(bank) == ["f0", "f2", "f3"]
    bank.add(_Named("f4"), annotated=False)
    assert names(bank) == ["f0", "f3", "f2", "f4"]


def test_invalid_settings():
    with pytest.raises(ValueError):
        MemoryBank(mem_size=1)
    with pytest.raises(ValueError):
        MemoryBank(mem_every=0)


def test_a_frame_kept_as_working_whatever_the_interval():
    bank = MemoryBank(mem_size=6, mem_every=5)
    bank.add(_Named("f0"), annotated=True)
    bank.add(_Named("f1"), annotated=False, working=True)
    bank.add(_Named("f2"), annotated=False, working=True)
    bank.add(_Named("f3"), annotated=False)
    assert names(bank) == ["f0", "f1", "f2", "f3"] and list(bank.working) == [bank.entries()[1], bank.entries()[2]]


def _entry() -> MemoryEntry:
    levels = [(torch.randn(1, 16, 8), torch.randn(1, 4, 8))]
    return MemoryEntry(levels, torch.nn.functional.normalize(torch.randn(1, 2, 4, 4), dim=1), torch.rand(1, 2, 4, 4),
                       torch.tensor([[1]]))


@pytest.mark.parametrize(("mem_full", "pooled"), [(None, 0), (4, 4), (1, 7), (0, 7)])
def test_working_frames_beyond_mem_full_are_pooled_and_the_previous_frame_stays_whole(mem_full, pooled):
    bank = MemoryBank(mem_size=9, mem_every=1, mem_full=mem_full)
    bank.add(_entry(), annotated=True)
    for _ in range(12):
        bank.add(_entry(), annotated=False)
    entries = bank.entries()
    assert len(entries) == 9 and sum(entry.pos is not None for entry in entries) == pooled
    assert entries[0].pos is None and entries[-1].pos is None and entries[-1] is bank.latest
    assert all(entry.levels[0][0].shape[1] == (4 if entry.pos is not None else 16) for entry in entries)
    with pytest.raises(ValueError):
        MemoryBank(mem_full=-1)
