from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np
import pytest

from stma_cli.io.logits import LogitsWriter, read_logits

ATTRS = {
    "object_ids": [1, 3, 7],
    "fps": Fraction(30000, 1001),
    "stride": (4.0, 4.0),
    "model_id": "someone/stma-small",
    "model_revision": "0123456789abcdef0123456789abcdef01234567",
    "stma_version": "0.1.0",
}


def test_schema_with_plain_h5py(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frames = [rng.normal(0, 5, (4, 6, 8)).astype(np.float32) for _ in range(5)]
    presence = rng.random((5, 3)).astype(np.float32)
    with LogitsWriter(tmp_path / "logits.h5", 4, 6, 8, ATTRS) as writer:
        for logits, present in zip(frames, presence):
            writer.append(logits, present)
    with h5py.File(tmp_path / "logits.h5", "r") as file:
        dataset = file["logits"]
        assert dataset.shape == (5, 4, 6, 8)
        assert dataset.dtype == np.float16
        assert dataset.chunks == (1, 4, 6, 8)
        assert dataset.maxshape == (None, 4, 6, 8)
        assert dataset.compression == "gzip"
        assert list(dataset.attrs["object_ids"]) == [1, 3, 7]
        assert dataset.attrs["fps"] == pytest.approx(29.97002997)
        assert tuple(dataset.attrs["stride"]) == (4.0, 4.0)
        assert dataset.attrs["model_id"] == "someone/stma-small"
        assert dataset.attrs["model_revision"] == ATTRS["model_revision"]
        assert dataset.attrs["stma_version"] == "0.1.0"
        np.testing.assert_allclose(dataset[2], frames[2], rtol=1e-3, atol=1e-2)
        assert file["presence"].shape == (5, 3) and file["presence"].dtype == np.float32
        np.testing.assert_array_equal(file["presence"][()], presence)


def test_read_logits_and_clipping(tmp_path: Path) -> None:
    with LogitsWriter(tmp_path / "l.h5", 2, 3, 3, ATTRS, compression="lzf") as writer:
        writer.append(np.full((2, 3, 3), 1e6, dtype=np.float32), np.ones(1, np.float32))
    data, attrs = read_logits(tmp_path / "l.h5")
    assert data.shape == (1, 2, 3, 3)
    assert np.isfinite(data).all() and data.max() == np.finfo(np.float16).max
    assert attrs["model_id"] == "someone/stma-small"


def test_appears_only_when_closed(tmp_path: Path) -> None:
    writer = LogitsWriter(tmp_path / "logits.h5", 2, 3, 3, ATTRS)
    writer.append(np.zeros((2, 3, 3), dtype=np.float32), np.ones(1, np.float32))
    assert not (tmp_path / "logits.h5").exists()
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["logits.h5"]


def test_interrupted_write_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with LogitsWriter(tmp_path / "logits.h5", 2, 3, 3, ATTRS) as writer:
            writer.append(np.zeros((2, 3, 3), dtype=np.float32), np.ones(1, np.float32))
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_rejects_bad_shapes_and_missing_attributes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model_revision"):
        LogitsWriter(tmp_path / "a.h5", 2, 3, 3, {k: v for k, v in ATTRS.items() if k != "model_revision"})
    with LogitsWriter(tmp_path / "b.h5", 2, 3, 3, ATTRS) as writer:
        with pytest.raises(ValueError, match="expected logits of shape"):
            writer.append(np.zeros((3, 3, 3), dtype=np.float32), np.ones(1, np.float32))
        with pytest.raises(ValueError, match="expected presence of shape"):
            writer.append(np.zeros((2, 3, 3), dtype=np.float32), np.ones(2, np.float32))
