"""Per-frame logits in HDF5: dataset `logits` of shape (T, K+1, H', W'), float16, one chunk per frame.

Channel 0 is the background, channel k (k >= 1) the object `object_ids[k - 1]`. Attributes on the dataset:
`object_ids`, `fps`, `stride` (input pixels per logit pixel, as (y, x)), `model_id`, `model_revision`,
`stma_version`, plus whatever else the caller passes.
"""
from __future__ import annotations

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
            self._file = h5py.File(self._pending.tmp, "w")
        except OSError as exc:
            raise StmaError(f"{self.path}: cannot write the logits file ({exc})") from None
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
        except BaseException:
            self.abort()
            raise

    def append(self, logits: np.ndarray) -> None:
        """Add one frame of logits, shape (K+1, H', W'); values are clipped to the float16 range."""
        if logits.shape != self.shape:
            raise ValueError(f"expected logits of shape {self.shape}, got {logits.shape}")
        self._dataset.resize(self.frames_written + 1, axis=0)
        self._dataset[self.frames_written] = np.clip(logits, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and rename it onto its final name."""
        if not self._open:
            return
        try:
            self._file.close()
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
            self._pending.discard()

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
