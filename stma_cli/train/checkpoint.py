"""Training checkpoints: written beside the current one and switched to atomically, found again after a
crash at any instant, and restored exactly (model, optimiser, gradient scaler, train state).

    OUT/checkpoint -> checkpoint-<step>-<tag>/   config.json, model.safetensors, optimizer.pt, train_state.json
    OUT/best       -> best-<step>-<tag>/         the same, for the best validation score
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from stma_cli.errors import StmaError
from stma_cli.io.safe_fs import read_json
from stma_cli.model import STMA, STMAConfig

CHECKPOINT = "checkpoint"
BEST = "best"
_TAG = r"\d{8}-[0-9a-f]{4}|legacy-[0-9a-f]{4}"  # checkpoint-<step>-<tag>, or an older version's folder moved aside


def save_checkpoint(folder: Path, model: STMA, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    state: dict[str, Any]) -> None:
    """Write a checkpoint beside the current one, then switch to it in one atomic step.

    `folder` (e.g. OUT/checkpoint) is a symbolic link to a sibling folder named `checkpoint-<step>-<tag>`.
    The new checkpoint is written and synced under a temporary name, renamed to its own name, and the
    link is replaced by a new one with a single rename; only then are older checkpoints removed. A crash
    at any instant leaves a complete checkpoint that `checkpoint_in` finds.
    """
    broken = next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if broken is not None:
        raise StmaError(f"step {state['step']}: weight {broken} is not finite (NaN or inf); "
                        f"the checkpoint is not written, the last one in {folder} is kept")
    parent, tag = folder.parent, f"{state['step']:08d}-{secrets.token_hex(2)}"
    final = parent / f"{folder.name}-{tag}"
    staging = parent / f".{final.name}.tmp-{os.getpid()}"
    staging.mkdir(parents=True)
    (staging / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
    save_model(model, str(staging / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}, staging / "optimizer.pt")
    (staging / "train_state.json").write_text(json.dumps(state, indent=2))
    for path in staging.iterdir():
        _fsync(path)
    staging.rename(final)
    _fsync(parent)
    if folder.is_dir() and not folder.is_symlink():  # written by an older version: moved aside, kept until the switch
        folder.rename(parent / f"{folder.name}-legacy-{secrets.token_hex(2)}")
    link = parent / f".{folder.name}.link-{os.getpid()}"
    link.unlink(missing_ok=True)
    os.symlink(final.name, link)
    os.replace(link, folder)
    _fsync(parent)
    ours = re.compile(rf"{re.escape(folder.name)}-({_TAG})|\.{re.escape(folder.name)}(-{_TAG}\.tmp-\d+|\.tmp|\.old)")
    for old in parent.iterdir():
        if ours.fullmatch(old.name) and old != final and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)


def checkpoint_in(folder: Path) -> Path | None:
    """The checkpoint to resume from: where `folder` points, else (a crash before the first switch, or a
    checkpoint of an older version) the complete checkpoint beside it with the highest step; None if none."""
    if (folder / "train_state.json").is_file():
        return folder
    named = re.compile(rf"{re.escape(folder.name)}-({_TAG})")
    candidates = [path for path in folder.parent.glob(f"{folder.name}-*")
                  if named.fullmatch(path.name) and (path / "train_state.json").is_file()]
    # An older version that crashed between its two renames left the previous checkpoint in .NAME.old and the
    # new, complete one (train_state.json is written last) in .NAME.tmp.
    candidates += [legacy for legacy in (folder.with_name(f".{folder.name}.old"), folder.with_name(f".{folder.name}.tmp"))
                   if (legacy / "train_state.json").is_file()]
    return max(candidates, key=_saved_step, default=None)


def _saved_step(folder: Path) -> int:
    try:
        step = read_json(folder / "train_state.json", "train state").get("step")
    except (StmaError, AttributeError):
        return -1
    return step if isinstance(step, int) else -1


def _fsync(path: Path) -> None:
    """Flush a file or a folder's entries to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(folder: Path, model: STMA, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler) -> dict[str, Any]:
    """Restore model, optimiser and scaler; returns the saved train state. StmaError names the file at fault."""
    state_path = folder / "train_state.json"
    state = read_json(state_path, "train state")
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or state["step"] < 0:
        raise StmaError(f"{state_path}: not a train state (expected an object with a 'step' of 0 or more)")
    config_path = folder / "config.json"
    try:
        saved = STMAConfig.from_dict(read_json(config_path, "model config")).to_dict()
    except (ValueError, TypeError, AttributeError) as error:
        raise StmaError(f"{config_path}: unreadable model config ({error})") from None
    current = model.config.to_dict()
    different = sorted(k for k in {*saved, *current}
                       if saved.get(k) != current.get(k) and k not in STMAConfig.INFERENCE_ONLY)
    if different:  # the inference-only rules take the model's (today's) values
        raise StmaError(f"{folder}: this run was trained with another model config (differs in "
                        f"{', '.join(different)}); resume it with the same --config, or use a new --out")
    weights = folder / "model.safetensors"
    try:
        load_model(model, str(weights), strict=True)
    except (SafetensorError, OSError, RuntimeError) as error:
        raise StmaError(f"{weights}: cannot be loaded ({str(error).strip().splitlines()[0]})") from None
    extra_path = folder / "optimizer.pt"
    try:
        extra = torch.load(extra_path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged file makes torch.load raise many kinds of error
        raise StmaError(f"{extra_path}: unreadable optimiser state (damaged, or not written by stma train)") from None
    try:
        optimizer.load_state_dict(extra["optimizer"])
        scaler.load_state_dict(extra["scaler"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise StmaError(f"{extra_path}: the optimiser state does not fit this model ({error})") from None
    return state
