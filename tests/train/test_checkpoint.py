"""Checkpoints: one kept, behind a link switched atomically; a crash at any instant of a save leaves one
to resume from; broken weights are never saved."""
import json
import os
from pathlib import Path

import pytest
import torch

from stma_cli.errors import StmaError
from stma_cli.model import STMA, STMAConfig
from stma_cli.train import checkpoint
from stma_cli.train.checkpoint import checkpoint_in, load_checkpoint, save_checkpoint
from stma_cli.train.loop import TrainConfig, make_optimizer


class Crash(BaseException):
    """A process killed at this instant."""


def _saved(tmp_path: Path, steps: list[int], crash: str | None = None, legacy: bool = False):
    """A model, optimiser and scaler saved at `steps` into tmp_path/checkpoint; the last save may crash at `crash`."""
    model = STMA(STMAConfig.preset("tiny"))
    config = TrainConfig(out=tmp_path)
    optimizer, scaler = make_optimizer(model, config), torch.amp.GradScaler("cpu", enabled=False)
    folder = tmp_path / "checkpoint"
    for step in steps:
        if legacy and step == steps[0]:  # an older version wrote checkpoint/ as a plain folder
            save_checkpoint(folder, model, optimizer, scaler, {"step": step})
            target = folder.resolve()
            folder.unlink()
            target.rename(folder)
            continue
        if crash is not None and step == steps[-1]:
            with pytest.MonkeyPatch.context() as patch:
                real = {"rename": Path.rename, "replace": os.replace, "rmtree": checkpoint.shutil.rmtree}

                def crash_at(name):
                    def crashing(*args, **kwargs):
                        if name == crash:
                            raise Crash
                        return real[name](*args, **kwargs)
                    return crashing

                patch.setattr(Path, "rename", crash_at("rename"))
                patch.setattr(checkpoint.os, "replace", crash_at("replace"))
                patch.setattr(checkpoint.shutil, "rmtree", crash_at("rmtree"))
                with pytest.raises(Crash):
                    save_checkpoint(folder, model, optimizer, scaler, {"step": step})
        else:
            save_checkpoint(folder, model, optimizer, scaler, {"step": step})
    return folder, model, optimizer, scaler


@pytest.mark.parametrize(("crash", "legacy", "resumed"), [
    (None, False, 20),
    ("rename", False, 10),  # the new checkpoint is written, not yet renamed into place
    ("replace", False, 10),  # renamed into place, the link not yet switched: still the one it points at
    ("rmtree", False, 20),  # switched, the old one not yet removed
    ("replace", True, 20),  # an older version's checkpoint/ moved aside, no link yet: the newest complete one
    ("rmtree", True, 20),
])
def test_a_crash_at_any_instant_of_a_save_leaves_a_resumable_checkpoint(tmp_path, crash, legacy, resumed):
    folder, model, optimizer, scaler = _saved(tmp_path, [10, 20], crash, legacy)
    found = checkpoint_in(folder)
    assert found is not None
    assert load_checkpoint(found, model, optimizer, scaler)["step"] == resumed


def test_saves_keep_one_checkpoint_and_a_link_to_it(tmp_path):
    folder, *_ = _saved(tmp_path, [10, 20, 30], legacy=True)
    assert folder.is_symlink() and json.loads((folder / "train_state.json").read_text())["step"] == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", folder.resolve().name]
    assert folder.resolve().name.startswith("checkpoint-00000030-")


def test_checkpoint_of_an_older_version_that_crashed_between_its_renames(tmp_path):
    """The older save renamed checkpoint/ to .checkpoint.old, then died before renaming the new one in."""
    folder, *_ = _saved(tmp_path, [10])
    folder.resolve().rename(tmp_path / ".checkpoint.old")
    folder.unlink()
    assert checkpoint_in(folder) == tmp_path / ".checkpoint.old"
    _saved(tmp_path / "new", [20])[0].resolve().rename(tmp_path / ".checkpoint.tmp")  # the new one, complete
    assert checkpoint_in(folder) == tmp_path / ".checkpoint.tmp"


def test_weights_that_are_not_finite_are_not_saved(tmp_path):
    model = STMA(STMAConfig.preset("tiny"))
    optimizer = make_optimizer(model, TrainConfig(out=tmp_path))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(StmaError, match="step 3: weight .* is not finite"):
        save_checkpoint(tmp_path / "checkpoint", model, optimizer, torch.amp.GradScaler("cpu", enabled=False),
                             {"step": 3})
    assert list(tmp_path.iterdir()) == []
