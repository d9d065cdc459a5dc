"""Atomic file writes: a file appears under its final name only once it is complete.

Every output is written to a hidden temporary file in the same folder (``.<stem>.tmp-<pid>-<rand><suffix>``,
keeping the suffix so that libraries which pick a format from it still work) and renamed onto the final
name with ``os.replace``. An interrupted write (exception, Ctrl-C) removes the temporary file; a killed
process may leave one behind, but never a partial file under the final name. A rename that fails removes
the temporary file too. Atomicity is against interruption, not power loss: files are not fsynced.

A symbolic link, a FIFO or a folder at the final name is refused before anything is written (see
`stma_cli.io.safe_fs.check_output_path`): stma replaces only files.
"""
from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from stma_cli.errors import StmaError
from stma_cli.io.safe_fs import check_output_path

_TEMPORARY = re.compile(r"\..*\.tmp-\d+-[0-9a-f]{8}(\.[^.]*)?")


def is_temporary(name: str) -> bool:
    """Whether a file name is one `PendingFile` gives (a file a killed process may have left)."""
    return _TEMPORARY.fullmatch(name) is not None


def temporary_path(final: str | Path) -> Path:
    """A fresh hidden name beside `final`, one that `is_temporary` recognises."""
    final = Path(final)
    return final.with_name(f".{final.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{final.suffix}")


class PendingFile:
    """A temporary path beside `final` that is either committed (renamed onto `final`) or discarded.

    StmaError at once if `final` is a symbolic link or not a file.
    """

    def __init__(self, final: str | Path) -> None:
        self.final = Path(final)
        check_output_path(self.final, "output file")
        self.tmp = temporary_path(self.final)

    def commit(self) -> None:
        """Rename the temporary file onto the final name (replacing any existing file); if that fails, remove
        the temporary file and raise StmaError."""
        try:
            os.replace(self.tmp, self.final)
        except OSError as exc:
            with suppress(OSError):  # the error to report is the rename's
                self.discard()
            raise StmaError(f"{self.final}: cannot put the finished file in place ({exc.strerror or exc})") from None

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
