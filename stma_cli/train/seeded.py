"""The base of every training dataset: item i is a pure function of (seed, i), so a run resumes exactly."""
from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset


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

    def rng(self, index: int) -> np.random.Generator:
        """The random stream of item `index`."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} clips")
        return np.random.default_rng([self.seed, index, self.STREAM])
