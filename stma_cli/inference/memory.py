"""The spatial-temporal memory bank: bounded, with the annotated frames always kept."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from stma_cli.model import MemoryEntry


@dataclass
class MemoryBank:
    """Memory frames for the association, at most `mem_size` of them.

    - anchors: frames whose masks were given (the first annotated frame and any frame where a new
      object was introduced); they never leave;
    - working memory: one frame every `mem_every` frames, the oldest leaving first when full;
    - short-term memory: the previous frame (`latest`), whether or not it is also kept as one of the above.

    With `mem_full`, the working frames beyond the newest `mem_full` are kept pooled 2x2
    (`MemoryEntry.pooled`): a quarter of the tokens each, so that a large memory costs little more than a
    small one. Inference and training share this bank, pooling included.
    """

    mem_size: int = 5
    mem_every: int = 5
    mem_full: int | None = None  # None: no frame is pooled
    anchors: list[MemoryEntry] = field(default_factory=list)
    working: deque[MemoryEntry] = field(default_factory=deque)
    latest: MemoryEntry | None = None  # the frame added last
    frames_since_working: int = 0

    def __post_init__(self) -> None:
        if self.mem_size < 2:
            raise ValueError(f"mem_size must be at least 2 (anchor + previous frame), got {self.mem_size}")
        if self.mem_every < 1:
            raise ValueError(f"mem_every must be at least 1, got {self.mem_every}")
        if self.mem_full is not None and self.mem_full < 0:
            raise ValueError(f"mem_full must be at least 0, got {self.mem_full}")

    def __len__(self) -> int:
        return len(self.entries())

    @property
    def empty(self) -> bool:
        return not self.anchors

    def entries(self) -> list[MemoryEntry]:
        """The memory frames the next frame is read against; the previous frame comes last."""
        older = [entry for entry in self.anchors + list(self.working) if entry is not self.latest]
        return older + ([] if self.latest is None else [self.latest])

    def add(self, entry: MemoryEntry, annotated: bool, working: bool = False) -> None:
        """Record the frame just processed: it becomes the previous frame, and is kept longer as an anchor
        if annotated, or as working memory every `mem_every` frames (or now, if `working`)."""
        self.frames_since_working += 1
        self.latest = entry
        if annotated:
            self.anchors.append(entry)
            self.frames_since_working = 0
        elif working or self.frames_since_working >= self.mem_every:
            self.working.append(entry)
            self.frames_since_working = 0
        self._enforce_bound()
        self._pool_older()

    def _enforce_bound(self) -> None:
        """Drop the oldest working frames, then the oldest anchors but the first; never `latest`."""
        while len(self) > self.mem_size:
            if len(self.working) > (1 if self.working and self.working[-1] is self.latest else 0):
                self.working.popleft()
            else:
                del self.anchors[1]

    def _pool_older(self) -> None:
        """Pool the working frames beyond the newest `mem_full`; the previous frame stays whole (the local
        prior matches it patch by patch)."""
        if self.mem_full is None:
            return
        for index in range(len(self.working) - self.mem_full):
            if self.working[index].pos is None and self.working[index] is not self.latest:
                self.working[index] = self.working[index].pooled()
