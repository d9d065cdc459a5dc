"""Atomic file writes: a file appears under its final name only once it is complete.

Every output is written to a hidden temporary file in the same folder (``.<stem>.tmp-<pid>-<rand><suffix>``,
keeping the suffix so that libraries which pick a format from it still work) and renamed onto the final
name with ``os.replace``. An interrupted write (exception, Ctrl-C) removes the temporary file; a killed
process may leave one behind, but never a partial file under the final name. Atomicity is against
interruption, not power loss: files are not fsynced.
"""
from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


_TEMPORARY = re.compile(r"\..*\.tmp-\d+-[0-9a-f]{8}(\.[^.]*)?")


def is_temporary(name: str) -> bool:
    """Whether a file name is one `PendingFile` gives (a file a killed process may have left)."""
    return _TEMPORARY.fullmatch(name) is not None


class PendingFile:
    """A temporary path beside `final` that is either committed (renamed onto `final`) or discarded."""

    def __init__(self, final: str | Path) -> None:
        self.final = Path(final)
        stem, suffix = self.final.stem, self.final.suffix
        self.tmp = self.final.with_name(f".{stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}")

    def commit(self) -> None:
        """Rename the temporary file onto the final name (replacing any existing file)."""
        os.replace(self.tmp, self.final)

    def discard(self) -> None:
        """Remove the temporary file if it exists."""
        self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` if the block completes, else remove it.

    Any exception, including KeyboardInterrupt, discards the temporary file and propagates.
    """
    pending = PendingFile(final)
    try:
        yield pending.tmp
    except BaseException:
        pending.discard()
        raise
    pending.commit()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
