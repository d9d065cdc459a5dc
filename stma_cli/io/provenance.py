"""What produced an output folder: the input video, the masks, the model and the settings.

A finished folder's manifest records its provenance; a later run skips the folder only when its own
provenance is the same, so a folder never passes for the result of a different video, mask, model or
setting.

    input     a file: its resolved path, size and modification time; a frame folder: its path and a
              hash of its frames' names, sizes and times; standard input: a hash of the bytes read
    masks     the frame and the SHA-256 of each mask file
    model     id, revision and the SHA-256 of model.safetensors
    settings  everything that changes the result: direction, max_side, mem_size, mem_every, precision
    outputs   the files written (masks, overlay.mp4, logits.h5)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from stma_cli.io.video import frame_files


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def input_identity(source: str, content_sha256: str | None = None) -> dict[str, Any] | None:
    """How to recognise the input again; None when it cannot be looked at (it is then opened, and fails there).

    Standard input ("-") is known by `content_sha256`, the hash of the bytes read from it.
    """
    if source == "-":
        return {"stdin_sha256": content_sha256} if content_sha256 else None
    try:
        path = Path(source).resolve()
        if path.is_dir():
            frames = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in frame_files(path)]
            return {"path": str(path), "frames": len(frames),
                    "frames_sha256": hashlib.sha256(json.dumps(frames).encode()).hexdigest()}
        stat = path.stat()
    except (OSError, ValueError):
        return None
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def mask_identity(masks: list[tuple[int, Path]]) -> list[dict[str, Any]] | None:
    """(frame, SHA-256) of each mask; None when a mask cannot be read (reading it reports why)."""
    try:
        return [{"frame": frame, "sha256": file_sha256(path)} for frame, path in masks]
    except (OSError, ValueError):
        return None


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
