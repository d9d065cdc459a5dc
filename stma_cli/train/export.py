"""From a training checkpoint to a Hub-ready weights folder: config, safetensors and a model card.

A checkpoint folder written by `stma train` holds config.json, model.safetensors and train_state.json
(step, wall time, recipe, metrics, data). `convert_checkpoint` validates the weights with the same
loader as every other command and writes the folder that `--weights` and the Hub take.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stma_cli.errors import StmaError
from stma_cli.hub import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, load_weights_folder, read_json

TRAIN_STATE_FILE = "train_state.json"


@dataclass(frozen=True)
class TrainState:
    """The parts of a training checkpoint's train_state.json that go into a model card."""

    step: int
    wall_time_s: float
    recipe: dict[str, Any]
    metrics: dict[str, float]
    data: str


def convert_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Turn a training checkpoint folder into a Hub-ready folder `out`.

    `out` gets config.json, model.safetensors (the checkpoint's, validated) and a README.md model
    card with the metrics recorded in training. It appears complete or not at all.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.is_dir():
        raise StmaError(
            f"{checkpoint}: not a folder (a training checkpoint holds {CONFIG_FILE}, {WEIGHTS_FILE}"
            f" and {TRAIN_STATE_FILE})"
        )
    if out.exists():
        raise StmaError(f"{out}: already exists; choose a new folder")
    state = read_train_state(checkpoint / TRAIN_STATE_FILE)
    config = load_weights_folder(checkpoint).config.to_dict()

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    staging.mkdir()
    try:
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        shutil.copyfile(checkpoint / WEIGHTS_FILE, staging / WEIGHTS_FILE)
        (staging / CARD_FILE).write_text(model_card(out.name, config, state), encoding="utf-8")
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def read_train_state(path: Path) -> TrainState:
    """The training summary in a checkpoint's train_state.json."""
    data = read_json(path)
    expected = {
        "step": (int, "an integer"),
        "wall_time_s": ((int, float), "a number"),
        "recipe": (dict, "an object"),
        "metrics": (dict, "an object"),
        "data": (str, "a string"),
    }
    for key, (kind, description) in expected.items():
        value = data.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise StmaError(f"{path}: '{key}' is missing or not {description}")
    if not math.isfinite(data["wall_time_s"]):
        raise StmaError(f"{path}: 'wall_time_s' is {data['wall_time_s']}, not a finite number")
    bad = [k for k, v in data["metrics"].items()
           if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)]
    if bad:
        raise StmaError(f"{path}: metric '{bad[0]}' is not a finite number ({data['metrics'][bad[0]]!r})")
    return TrainState(data["step"], float(data["wall_time_s"]), data["recipe"], data["metrics"], data["data"])


def model_card(name: str, config: dict[str, Any], state: TrainState) -> str:
    """A README.md for the Hub: metadata, training metrics, recipe and config."""
    metrics = "\n".join(f"| {_cell(k)} | {v:.4f} |" for k, v in state.metrics.items())
    recipe = "\n".join(f"| {_cell(k)} | {_cell(v)} |" for k, v in state.recipe.items())
    hours, rest = divmod(round(state.wall_time_s), 3600)
    return f"""---
library_name: stma
license: mit
tags:
- video-object-segmentation
- stma
---

# {name}

STMA (Spatial-Temporal Multi-level Association) weights for semi-supervised video object
segmentation: given the masks of the objects in the first frame, the model follows them through
the video. Pass this repo id (or this folder) to `--weights` of `stma segment`, `stma eval` or
`stma train --init`.

## Metrics

Recorded at the end of training.

| Metric | Value |
|---|---|
{metrics}

## Training

- Data: {state.data}
- Steps: {state.step}
- Wall time: {hours} h {rest // 60:02d} min

| Setting | Value |
|---|---|
{recipe}

## Config

```json
{json.dumps(config, indent=2, sort_keys=True)}
```
"""


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")
