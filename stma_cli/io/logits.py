"""Per-frame logits in HDF5: dataset `logits` of shape (T, K+1, H', W'), float16, one chunk per frame, and
dataset `presence` (T, K), float32: how sure the model is that each object is in each frame.

Channel 0 is the background, channel k (k >= 1) the object `object_ids[k - 1]`. Attributes on the dataset:
`object_ids`, `fps`, `stride` (input pixels per logit pixel, as (y, x)), `model_id`, `model_revision`,
`stma_version`, plus whatever else the caller passes.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from stma_cli.errors import StmaError
from stma_cli.io.atomic import PendingFile

DATASET = "logits"
PRESENCE = "presence"
REQUIRED_ATTRS = ("object_ids", "fps", "stride", "model_id", "model_revision", "stma_version")
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def _attr_value(value: Any) -> Any:
    """Convert a value into something h5py stores as an attribute."""
    if value is None:
        return ""
    if isinstance(value, Fraction):
        return float(value)
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    return value


class _GuardedFile:
    """The file under h5py's file-object driver, so that a failed write never reaches HDF5.

    HDF5 cannot recover from a failed write (closing the file afterwards crashes the process). The first
    error (disk full, file size limit, Ctrl-C) is kept in `error`; that write and all later ones are held in
    memory, so HDF5 still closes cleanly, and the writer then reports the error and discards the file.
    """

    def __init__(self, path: Path) -> None:
        # O_EXCL: a new file of stma's own, never one that a link at the temporary name leads to
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        self._pos = 0
        self._size = 0
        self._held: list[tuple[int, bytes]] = []  # (offset, data) written after the error, in order
        self.error: OSError | KeyboardInterrupt | None = None

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = offset + {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int) -> bytes:
        data = bytearray(os.pread(self._fd, size, self._pos).ljust(size, b"\0"))
        for offset, held in self._held:
            start, end = max(offset, self._pos), min(offset + len(held), self._pos + size)
            if start < end:
                data[start - self._pos : end - self._pos] = held[start - offset : end - offset]
        self._pos += size
        return bytes(data)

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                view, done = memoryview(data), 0
                while done < len(data):
                    done += os.pwrite(self._fd, view[done:], self._pos + done)
            except (OSError, KeyboardInterrupt) as exc:
                self.error = exc
        if self.error is not None:
            self._held.append((self._pos, bytes(data)))
        self._pos += len(data)
        self._size = max(self._size, self._pos)
        return len(data)

    def truncate(self, size: int) -> int:
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except (OSError, KeyboardInterrupt) as exc:
                self.error = exc
        self._size = size
        return size

    def flush(self) -> None:
        """Nothing to do: writes are unbuffered."""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LogitsWriter:
    """Append logits frame by frame to an HDF5 file written under a temporary name, renamed on `close`."""

    def __init__(
        self,
        path: str | Path,
        num_classes: int,
        height: int,
        width: int,
        attrs: Mapping[str, Any],
        compression: str = "gzip",
    ) -> None:
        missing = [key for key in REQUIRED_ATTRS if key not in attrs]
        if missing:
            raise ValueError(f"logits attributes missing: {', '.join(missing)}")
        self.path = Path(path)
        self.shape = (num_classes, height, width)
        self.frames_written = 0
        self._pending = PendingFile(self.path)
        try:
            self._raw = _GuardedFile(self._pending.tmp)
        except OSError as exc:
            raise StmaError(f"{self.path}: cannot write the logits file ({exc.strerror or exc})") from None
        self._file = h5py.File(self._raw, "w")
        self._open = True
        try:
            options = {"compression_opts": 4} if compression == "gzip" else {}
            self._dataset = self._file.create_dataset(
                DATASET,
                shape=(0, *self.shape),
                maxshape=(None, *self.shape),
                chunks=(1, *self.shape),
                dtype=np.float16,
                compression=compression,
                shuffle=True,
                **options,
            )
            for key, value in attrs.items():
                self._dataset.attrs[key] = _attr_value(value)
            objects = num_classes - 1
            self._presence = self._file.create_dataset(PRESENCE, shape=(0, objects), maxshape=(None, objects),
                                                       chunks=(256, max(1, objects)), dtype=np.float32)
        except BaseException:
            self.abort()
            raise

    def append(self, logits: np.ndarray, presence: np.ndarray) -> None:
        """Add one frame: logits (K+1, H', W'), clipped to the float16 range, and presence (K,) in [0, 1]."""
        if logits.shape != self.shape:
            raise ValueError(f"expected logits of shape {self.shape}, got {logits.shape}")
        if presence.shape != (self.shape[0] - 1,):
            raise ValueError(f"expected presence of shape {(self.shape[0] - 1,)}, got {presence.shape}")
        self._dataset.resize(self.frames_written + 1, axis=0)
        self._dataset[self.frames_written] = np.clip(logits, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)
        self._presence.resize(self.frames_written + 1, axis=0)
        self._presence[self.frames_written] = presence
        self._raise_write_error()
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and rename it onto its final name."""
        if not self._open:
            return
        try:
            self._file.close()
            self._raw.close()
            self._raise_write_error()
        except BaseException:
            self.abort()
            raise
        self._open = False
        self._pending.commit()

    def abort(self) -> None:
        """Stop writing and remove the temporary file."""
        if not self._open:
            return
        self._open = False
        try:
            self._file.close()
        finally:
            self._raw.close()
            self._pending.discard()

    def _raise_write_error(self) -> None:
        """Report the first failed write (see `_GuardedFile`): StmaError, or the Ctrl-C that interrupted it."""
        error = self._raw.error
        if isinstance(error, KeyboardInterrupt):
            raise KeyboardInterrupt
        if error is not None:
            raise StmaError(f"{self.path}: cannot write the logits file ({error.strerror or error})")

    def __enter__(self) -> LogitsWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_logits(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Load the whole `logits` dataset and its attributes."""
    with h5py.File(path, "r") as file:
        dataset = file[DATASET]
        return dataset[()], dict(dataset.attrs)
