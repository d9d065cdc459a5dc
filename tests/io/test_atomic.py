from __future__ import annotations

import os
from pathlib import Path

import pytest

from stma_cli.errors import StmaError
from stma_cli.io.atomic import PendingFile, atomic_path, atomic_write_text


def test_block_completes_then_the_file_appears(tmp_path: Path) -> None:
    final = tmp_path / "result.json"
    with atomic_path(final) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".result.tmp-") and tmp.suffix == ".json"
        tmp.write_text("done")
        assert not final.exists()
    assert final.read_text() == "done"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_block_leaves_no_file(tmp_path: Path, error: type[BaseException]) -> None:
    final = tmp_path / "result.json"
    with pytest.raises(error):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise error
    assert list(tmp_path.iterdir()) == []


def test_interrupted_rewrite_keeps_the_old_file(tmp_path: Path) -> None:
    final = tmp_path / "result.txt"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("new, unfinished")
            raise RuntimeError
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]


def test_atomic_write_text_replaces(tmp_path: Path) -> None:
    final = tmp_path / "notes.txt"
    atomic_write_text(final, "first")
    atomic_write_text(final, "second é")
    assert final.read_text(encoding="utf-8") == "second é"


def test_pending_names_are_unique(tmp_path: Path) -> None:
    assert PendingFile(tmp_path / "a.h5").tmp != PendingFile(tmp_path / "a.h5").tmp


def test_a_failed_rename_removes_the_temporary_file_and_says_why(tmp_path: Path) -> None:
    final = tmp_path / "result.txt"
    with pytest.raises(StmaError, match=rf"^{final}: cannot put the finished file in place \(.+\)$"):
        with atomic_path(final) as tmp:
            tmp.write_text("new")
            (final / "inside").mkdir(parents=True)  # a folder with something in it appears: the rename fails
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.txt"]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_a_link_or_special_file_at_the_final_name_is_refused_before_writing(tmp_path: Path, kind: str) -> None:
    final, target = tmp_path / "result.txt", tmp_path / "target.txt"
    target.write_text("someone else's")
    {"symlink": lambda: final.symlink_to(target), "fifo": lambda: os.mkfifo(final), "folder": final.mkdir}[kind]()
    with pytest.raises(StmaError, match=rf"^{final}: .*(symbolic link|a FIFO|a folder)"):
        PendingFile(final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.txt", "target.txt"]
    assert target.read_text() == "someone else's"
