"""The backward pass's scratch files: nothing is left behind, even when a signal lands as one is created."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

from stma_cli.inference import passes


def test_a_scratch_file_reads_back_and_is_removed_when_its_stack_closes(tmp_path: Path) -> None:
    items = [np.full((3, 4), i, np.float32) for i in range(5)]
    with contextlib.ExitStack() as stack:
        array = passes._scratch_array(stack, tmp_path, "logits", (3, 4), np.float32, len(items))
        for index in (4, 0, 2, 1, 3):
            array[index] = items[index]
        assert [array[i].tolist() for i in range(5)] == [item.tolist() for item in items]
        assert len(list(tmp_path.iterdir())) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_signal_just_after_the_file_is_created_leaves_nothing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM becomes a KeyboardInterrupt wherever the main thread is: here, right after `open` made the file."""
    created = passes._DiskArray.__init__

    def interrupted(self: passes._DiskArray, *args: object) -> None:
        created(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(passes._DiskArray, "__init__", interrupted)
    with pytest.raises(KeyboardInterrupt), contextlib.ExitStack() as stack:
        passes._scratch_array(stack, tmp_path, "probabilities", (2, 3), np.float32, 7)
    assert list(tmp_path.iterdir()) == []
