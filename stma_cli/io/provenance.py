"""What produced an output folder: the input video, the masks, the model and the settings.

A finished folder's manifest records its provenance; a later run skips the folder only when its own
provenance is the same, so a folder never passes for the result of a different video, mask, model or
setting.

    input     a file: its resolved path, size and modification time; a frame folder: its path and a
              hash of its frames' names, sizes and times; a stream (standard input, a FIFO): a hash of the
              bytes read
    masks     the frame and the SHA-256 of each mask file (a regular file of at most MAX_MASK_BYTES)
    model     id, revision and a SHA-256 of config.json and model.safetensors (`stma_cli.hub.weights_sha256`)
    settings  everything that changes the result: direction, max_side, mem_size, mem_every, precision
    outputs   the files written (masks, overlay.mp4, logits.h5)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from stma_cli.io.safe_fs import MiB, read_regular
from stma_cli.io.video import frame_files

MAX_MASK_BYTES = 64 * MiB  # far beyond any mask image; a JSON mask has the same bound (safe_fs.MAX_JSON_BYTES)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def input_identity(source: str, content_sha256: str | None = None) -> dict[str, Any] | None:
    """How to recognise the input again; None when it cannot be looked at (it is then opened, and fails there).

    A stream (standard input "-", a FIFO, a process substitution) is known by `content_sha256`, the hash of
    the bytes read from it, and by nothing else: its path and times say nothing of what came through it.
    """
    if source == "-":
        return {"stdin_sha256": content_sha256} if content_sha256 else None
    try:
        path = Path(source).resolve()
        if path.is_dir():
            frames = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in frame_files(path)]
            return {"path": str(path), "frames": len(frames),
                    "frames_sha256": hashlib.sha256(json.dumps(frames).encode()).hexdigest()}
        if not path.is_file():
            return {"stream_sha256": content_sha256} if content_sha256 else None
        stat = path.stat()
    except (OSError, ValueError):
        return None
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def mask_identity(masks: list[tuple[int, Path]]) -> list[dict[str, Any]] | None:
    """(frame, SHA-256) of each mask; None when a mask is missing (reading it says so). StmaError for a mask
    that is not a regular file of at most MAX_MASK_BYTES: a FIFO or a device is refused, not waited on."""
    try:
        if not all(Path(path).exists() for _, path in masks):
            return None
    except (OSError, ValueError):  # a path the system refuses (too long, a NUL byte): reading it says why
        return None
    return [{"frame": frame, "sha256": hashlib.sha256(read_regular(path, MAX_MASK_BYTES, "mask")).hexdigest()}
            for frame, path in masks]


def differences(recorded: Any, current: dict[str, Any]) -> list[str]:
    """What differs between a recorded provenance and the current one, in words; empty if they match.

    The recorded outputs may be more than the current ones (a run with --no-overlay may reuse a folder
    that has an overlay), not fewer.
    """
    if not isinstance(recorded, dict):
        return ["no record of its input, masks, model and settings (an older stma wrote it)"]
    found = []
    if recorded.get("input") != current["input"]:
        found.append("input video")
    if recorded.get("masks") != current["masks"]:
        found.append("masks")
    if recorded.get("model") != current["model"]:
        found.append("model")
    settings = recorded.get("settings") if isinstance(recorded.get("settings"), dict) else {}
    for key, value in current["settings"].items():
        if settings.get(key) != value:
            found.append(f"{key} {settings.get(key)} -> {value}")
    outputs = recorded.get("outputs") if isinstance(recorded.get("outputs"), list) else []
    missing = [name for name in current["outputs"] if name not in outputs]
    if missing:
        found.append(f"no {', '.join(missing)}")
    return found
