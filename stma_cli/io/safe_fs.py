"""The file-system rules that every reader and writer of stma follows.

- Inputs that stma parses (masks, configs, JSON records) are read only from regular files of bounded
  size: a FIFO, a device or `/dev/zero` is refused at once instead of hanging or filling memory.
- stma follows no link that it did not make at a path it writes: a lock file, a `masks/` folder or an
  output file that is a symlink (or a lock file with a second hard link) is refused, not written through;
  a FIFO, a device or a folder where stma writes a file is refused, not replaced (`check_output_path`,
  `open_in_place`).
- Outputs go inside the output folder only, and an output folder never overlaps an input dataset.
- JSON from files is parsed so that a hostile file (malformed, nested too deep) gives a one-line error.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from stma_cli.errors import StmaError

MiB = 1 << 20
MAX_JSON_BYTES = 64 * MiB


def read_regular(path: str | Path, limit: int, what: str) -> bytes:
    """The bytes of `path`, which must be a regular file of at most `limit` bytes; StmaError otherwise.

    The file is opened without blocking, so a FIFO or a device is refused instead of waited on.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise StmaError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StmaError(f"{path}: the {what} is not a regular file ({_kind(info.st_mode)})")
        if info.st_size > limit:
            raise StmaError(f"{path}: the {what} is {info.st_size} bytes, more than the {limit} allowed")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > limit:
                raise StmaError(f"{path}: the {what} grew past the {limit} bytes allowed while being read")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise StmaError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def require_regular(path: str | Path, what: str) -> None:
    """StmaError unless `path` (links followed) is a regular file."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise StmaError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise StmaError(f"{path}: the {what} is not a regular file ({_kind(mode)})")


def load_json(text: str | bytes, source: str | Path, what: str) -> Any:
    """Parse JSON from a file's contents; StmaError naming `source` if it is malformed or nested too deep."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise StmaError(f"{source}: the {what} is not UTF-8 text") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise StmaError(f"{source}: the {what} is nested too deeply to be read") from None
    except ValueError as exc:
        raise StmaError(f"{source}: the {what} is not valid JSON ({exc})") from None


def read_json(path: str | Path, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file under the rules above (regular file, bounded size and nesting)."""
    return load_json(read_regular(path, limit, what), path, what)


def refuse_link(path: str | Path, what: str) -> None:
    """StmaError if `path` is a symbolic link: stma does not write through links it did not make."""
    path = Path(path)
    if path.is_symlink():
        raise StmaError(f"{path}: the {what} is a symbolic link (to {os.readlink(path)}); "
                        "stma does not write through links: remove it or choose another output folder")


def check_output_path(path: str | Path, what: str, folder: bool = False) -> None:
    """StmaError unless `path`, where stma writes or replaces a file (a folder if `folder`), is absent or is
    one: a symbolic link is not followed, and a FIFO, a device or a folder at a file's name is not replaced."""
    path = Path(path)
    refuse_link(path, what)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StmaError(f"{path}: cannot check the {what} ({exc.strerror or exc})") from None
    if not (stat.S_ISDIR if folder else stat.S_ISREG)(mode):
        raise StmaError(f"{path}: is {_kind(mode)}, where stma writes a {'folder' if folder else 'file'}; "
                        "move it away")


def open_in_place(path: str | Path, what: str) -> int:
    """A read-write descriptor of `path`, created if absent, for a file stma rewrites in place (the lock).

    StmaError if it is a symbolic link (not followed), not a regular file (a FIFO does not block the open), or
    has other hard links: writing it would change the file under its other names.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        check_output_path(path, what)  # a link or a folder: say so
        raise StmaError(f"{path}: cannot create the {what} ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StmaError(f"{path}: the {what} is not a regular file ({_kind(info.st_mode)}); move it away")
        if info.st_nlink > 1:
            raise StmaError(f"{path}: the {what} has {info.st_nlink} hard links; writing it would change the "
                            "file under its other names: remove it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_within(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` is `folder` or lies inside it, comparing real paths (links resolved)."""
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def overlaps(a: str | Path, b: str | Path) -> bool:
    """Whether one of two folders is, or lies inside, the other (real paths)."""
    return is_within(a, b) or is_within(b, a)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"
