"""The base of every training dataset: item i is a pure function of (seed, i), so a run resumes exactly."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from torch.utils.data import Dataset


class ClipKey(NamedTuple):
    """What a training sampler asks for: clip `index`, its frames at most `max_skip` frames apart."""

    index: int
    max_skip: int


class SeededClips(Dataset):
    """Map-style dataset of `length` clips; `rng(index)` is item `index`'s own random stream.

    Subclasses set `seed` and `length`, and a distinct `STREAM` so that two kinds of data drawn with
    the same seed do not share random numbers.
    """

    STREAM = 0
    seed: int
    length: int

    def __len__(self) -> int:
        return self.length

    @staticmethod
    def unpack(key: "int | ClipKey", default_skip: int) -> tuple[int, int]:
        """(index, max_skip) of a key: a plain index asks for the dataset's own `default_skip`."""
        if isinstance(key, ClipKey):
            return int(key.index), int(key.max_skip)
        return int(key), default_skip

    def rng(self, index: int) -> np.random.Generator:
        """The random stream of item `index`."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} clips")
        return np.random.default_rng([self.seed, index, self.STREAM])
