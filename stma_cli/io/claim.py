"""One writer per output folder: a lock the operating system releases when its process dies.

    with claim_folder(folder) as claim:      # FolderBusy if another process holds it
        claim.previous                         # the record left by an earlier run that did not finish
        claim.record({...})                    # what this run is writing (read back by the next run)
        ...
        claim.finished()                       # the folder is complete: the lock file goes
                                               # (or claim.leave(): nothing was written)

The lock is an exclusive `flock` on `<folder>/.stma.lock`, a small JSON file that also holds the record
of the run holding it: process, host, and what it writes. After a run that did not finish (an error,
Ctrl-C, a kill), the file stays, unlocked, and tells the next run that the partial files in the folder
are stma's own. flock works on local file systems and on NFS (Linux emulates it with byte-range locks).
The lock file is opened without following links, and one that is not a regular file of its own (a symbolic
link, a second hard link, a FIFO) is refused: the record would be written into another file.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stma_cli.errors import StmaError
from stma_cli.io.safe_fs import open_in_place, read_json

LOCK_FILE = ".stma.lock"


class FolderBusy(StmaError):
    """Another process holds the folder's lock."""


class FolderClaim:
    """The lock of one output folder, held by this process."""

    def __init__(self, folder: Path, fd: int, previous: dict[str, Any] | None) -> None:
        self.folder = folder
        self.path = folder / LOCK_FILE
        self.previous = previous
        self._fd = fd

    def record(self, entries: dict[str, Any]) -> None:
        """Write what this run is doing into the lock file, for the next run to read if this one stops."""
        data = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), **entries}, default=str).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def finished(self) -> None:
        """Remove the lock file (the folder is complete), then release the lock."""
        self.path.unlink(missing_ok=True)
        self.release()

    def leave(self) -> None:
        """Release without having written: a lock file that held no record (this claim made it) goes."""
        if self.previous is None:
            self.path.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        """Release the lock; the lock file and its record stay."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@contextmanager
def claim_folder(folder: str | Path) -> Iterator[FolderClaim]:
    """Create `folder` if needed and hold its lock for the block; StmaError if another process holds it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise StmaError(f"{folder}: cannot create the output folder (it is a file)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StmaError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None
    claim = _acquire(folder)
    try:
        yield claim
    finally:
        claim.release()


def read_record(folder: str | Path) -> dict[str, Any] | None:
    """The record in a folder's lock file, or None (no lock file, or not readable as a record)."""
    try:
        data = read_json(Path(folder) / LOCK_FILE, "lock file")
    except StmaError:
        return None
    return data if isinstance(data, dict) else None


def _acquire(folder: Path) -> FolderClaim:
    path = folder / LOCK_FILE
    while True:
        fd = open_in_place(path, "lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_record(folder) or {}
            who = f" (pid {holder['pid']} on {holder.get('host', '?')})" if "pid" in holder else ""
            raise FolderBusy(f"{folder}: busy: another stma process{who} is writing this folder; "
                            "run again once it is done") from None
        except BaseException:
            os.close(fd)
            raise
        # The holder before us may have finished and removed the file after we opened it: then our lock
        # is on a file nobody else sees, and we start again with the file now at the path.
        try:
            same = os.fstat(fd).st_ino == os.lstat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return FolderClaim(folder, fd, read_record(folder))
        os.close(fd)
