"""From a training checkpoint to a Hub-ready weights folder."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stma_cli.errors import StmaError
from stma_cli.hub import load_model
from stma_cli.model import STMA, STMAConfig
from stma_cli.train import export
from stma_cli.train.export import convert_checkpoint

WeightsFactory = Callable[[int], Path]


def _same_tensors(model: STMA, folder: Path) -> bool:
    expected = load_file(folder / "model.safetensors")
    state = model.state_dict()
    return all(torch.equal(state[key], value) for key, value in expected.items())


TRAIN_STATE = {
    "step": 1200,
    "wall_time_s": 3671.4,
    "recipe": {"lr": 0.0002, "batch_size": 4, "crop": [384, 384], "schedule": "poly|0.9"},
    "metrics": {"J&F-Mean": 0.8125, "J-Mean": 0.79, "F-Mean": 0.835},
    "data": "DAVIS-2017 train, 60 videos",
}


def _checkpoint(tmp_path: Path, folder: Path, train_state: object = TRAIN_STATE) -> Path:
    ckpt = tmp_path / "runs" / "step-1200"
    ckpt.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, ckpt)
    (ckpt / "optimizer.pt").write_bytes(b"optimizer state, never read")
    (ckpt / "train_state.json").write_text(json.dumps(train_state))
    return ckpt


def test_convert_writes_a_hub_ready_folder(tiny_weights: WeightsFactory, tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, tiny_weights(0))
    out = convert_checkpoint(ckpt, tmp_path / "export" / "stma-demo")
    assert sorted(os.listdir(out)) == ["README.md", "config.json", "model.safetensors"]
    assert os.listdir(out.parent) == ["stma-demo"]
    assert (out / "model.safetensors").read_bytes() == (ckpt / "model.safetensors").read_bytes()
    assert json.loads((out / "config.json").read_text()) == STMAConfig.preset("tiny").to_dict()

    card = (out / "README.md").read_text()
    front_matter = card.split("---\n")[1]
    assert front_matter.splitlines() == [
        "library_name: stma", "license: mit", "tags:", "- video-object-segmentation", "- stma",
    ]
    for line in ("# stma-demo", "| J&F-Mean | 0.8125 |", "| F-Mean | 0.8350 |", "- Steps: 1200",
                 "- Wall time: 1 h 01 min", "- Data: DAVIS-2017 train, 60 videos", "| crop | [384, 384] |",
                 "| schedule | poly\\|0.9 |", '  "depth": 2,'):
        assert line in card.splitlines(), line

    model, weights = load_model(str(out))
    assert weights.source == "local" and _same_tensors(model, tiny_weights(0))


def test_convert_refuses_an_existing_folder(tiny_weights: WeightsFactory, tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, tiny_weights(0))
    (tmp_path / "out").mkdir()
    with pytest.raises(StmaError, match="out: already exists"):
        convert_checkpoint(ckpt, tmp_path / "out")


@pytest.mark.parametrize(
    ("train_state", "message"),
    [
        ({**TRAIN_STATE, "metrics": None}, r"train_state\.json: 'metrics' is missing or not an object$"),
        ({k: v for k, v in TRAIN_STATE.items() if k != "step"}, r"'step' is missing or not an integer$"),
        ({**TRAIN_STATE, "metrics": {"J&F-Mean": "high"}}, r"metric 'J&F-Mean' is not a finite number \('high'\)$"),
        ({**TRAIN_STATE, "metrics": {"J&F-Mean": float("nan")}}, r"metric 'J&F-Mean' is not a finite number \(nan\)$"),
        ({**TRAIN_STATE, "wall_time_s": float("inf")}, r"'wall_time_s' is inf, not a finite number$"),
    ],
)
def test_convert_checks_train_state(
    tiny_weights: WeightsFactory, tmp_path: Path, train_state: object, message: str
) -> None:
    ckpt = _checkpoint(tmp_path, tiny_weights(0), train_state)
    with pytest.raises(StmaError, match=message):
        convert_checkpoint(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_convert_leaves_nothing_behind_on_failure(tiny_weights: WeightsFactory, tmp_path: Path, monkeypatch) -> None:
    ckpt = _checkpoint(tmp_path, tiny_weights(0))
    (tmp_path / "export").mkdir()

    def disk_full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.shutil, "copyfile", disk_full)
    with pytest.raises(OSError, match="No space left"):
        convert_checkpoint(ckpt, tmp_path / "export" / "stma-demo")
    assert os.listdir(tmp_path / "export") == []
