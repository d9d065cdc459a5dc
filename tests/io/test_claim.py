"""The per-folder lock: one writer, released by the system when its process ends."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stma_cli.errors import StmaError
from stma_cli.io.claim import LOCK_FILE, claim_folder, read_record


def test_a_second_claim_is_busy_and_names_the_holder(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "clip"
    with claim_folder(folder) as claim:
        claim.record({"mask_names": "numbered"})
        with pytest.raises(StmaError, match=rf"{folder}: busy: another stma process \(pid {os.getpid()} on "):
            with claim_folder(folder):
                pass
    with claim_folder(folder) as again:  # released at the end of the block
        assert again.previous is not None and again.previous["mask_names"] == "numbered"


def test_the_record_stays_after_a_run_that_did_not_finish_and_goes_after_one_that_did(tmp_path: Path) -> None:
    with claim_folder(tmp_path) as claim:
        assert claim.previous is None
        claim.record({"step": 1})
    assert read_record(tmp_path)["step"] == 1
    with claim_folder(tmp_path) as claim:
        claim.record({"step": 2})
        claim.finished()
    assert not (tmp_path / LOCK_FILE).exists() and read_record(tmp_path) is None


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    """A process that holds the lock and is killed leaves the file, not the lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from stma_cli.io.claim import claim_folder\n"
         "with claim_folder(sys.argv[1]) as c:\n    c.record({'x': 1}); print('held', flush=True); time.sleep(60)",
         str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(StmaError, match="busy"):
            with claim_folder(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with claim_folder(tmp_path) as claim:
        assert claim.previous["x"] == 1 and claim.previous["pid"] == holder.pid


def test_a_record_that_is_not_json_reads_as_none(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_bytes(b"\x00garbage")
    assert read_record(tmp_path) is None
    with claim_folder(tmp_path) as claim:
        claim.record({"a": 1})
    assert json.loads((tmp_path / LOCK_FILE).read_text())["a"] == 1


def test_a_folder_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StmaError, match="cannot create the output folder"):
        with claim_folder(tmp_path / "file" / "sub"):
            pass


def test_leaving_without_writing_removes_only_a_lock_file_this_claim_made(tmp_path: Path) -> None:
    with claim_folder(tmp_path) as claim:
        claim.leave()
    assert not (tmp_path / LOCK_FILE).exists()
    (tmp_path / LOCK_FILE).write_text('{"mask_names": "numbered"}')  # the record of an unfinished run
    with claim_folder(tmp_path) as claim:
        claim.leave()
    assert read_record(tmp_path) == {"mask_names": "numbered"}


@pytest.mark.parametrize("kind", ["symlink", "hard link", "folder"])  # a FIFO: see test_hostile_fs.py
def test_a_lock_file_that_is_not_a_file_of_its_own_is_refused(tmp_path: Path, kind: str) -> None:
    """Opened without following links: the record is never written into another file."""
    other = tmp_path / "other.txt"
    other.write_text("someone else's")
    folder, lock = tmp_path / "out", tmp_path / "out" / LOCK_FILE
    folder.mkdir()
    make = {"symlink": lambda: lock.symlink_to(other), "hard link": lambda: os.link(other, lock), "folder": lock.mkdir}
    make[kind]()
    says = {"symlink": "is a symbolic link", "hard link": "has 2 hard links", "folder": "a folder"}
    with pytest.raises(StmaError, match=rf"^{lock}: .*{says[kind]}"):
        with claim_folder(folder):
            pass
    assert other.read_text() == "someone else's"
