"""`stma weights download|list|info|convert`, in process and as a real subprocess, against a local Hub."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stma_cli.cli.app import app

WeightsFactory = Callable[[int], Path]
runner = CliRunner()


def _stma(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.stdout


def _error(*args: str) -> str:
    """Run a command that must fail; return its single stderr line."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stma: error: "), result.stderr
    return lines[0]


def test_download_prints_the_cached_folder(hub, tiny_weights: WeightsFactory, hf_home: Path) -> None:
    commit = hub.commit_folder("acme/stma", tiny_weights(0), refs=("main", "v1.0"))
    path = _stma("weights", "download", "acme/stma", "--revision", "v1.0").strip()
    assert Path(path) == (hf_home / "hub" / "models--acme--stma" / "snapshots" / commit).resolve()
    assert json.loads(_stma("weights", "download", "acme/stma", "--json")) == {
        "path": path, "model_id": "acme/stma", "revision": commit, "source": "hub",
    }


def test_download_checks_what_it_fetched(hub, tiny_weights: WeightsFactory, tmp_path: Path) -> None:
    other = shutil.copytree(tiny_weights(0), tmp_path / "other")
    (other / "config.json").write_text(json.dumps({"architecture": "cutie"}))
    hub.commit_folder("acme/cutie", other)
    assert _error("weights", "download", "acme/cutie").endswith("config is for architecture 'cutie', not 'stma'")


def test_list_and_info(hub, tiny_weights: WeightsFactory, tmp_path: Path, monkeypatch, set_offline) -> None:
    shutil.copytree(tiny_weights(1), tmp_path / "shipped" / "stma-tiny")
    monkeypatch.setenv("STMA_WEIGHTS_DIR", str(tmp_path / "shipped"))
    commit = hub.commit_folder("acme/stma", tiny_weights(0))
    _stma("weights", "download", "acme/stma")
    set_offline(True)

    listed = json.loads(_stma("weights", "list", "--json"))
    assert [(e["model_id"], e["source"], e["revision"], e["refs"]) for e in listed] == [
        ("stma-tiny", "shipped", None, []), ("acme/stma", "hub", commit, ["main"]),
    ]
    table = _stma("weights", "list")
    assert "stma-tiny" in table and "acme/stma" in table and commit[:12] in table

    info = json.loads(_stma("weights", "info", "acme/stma", "--json"))
    assert (info["model_id"], info["source"], info["revision"]) == ("acme/stma", "hub", commit)
    assert info["config"]["architecture"] == "stma" and info["parameters"] > 1_000_000
    text = _stma("weights", "info")  # the default: shipped stma-tiny
    assert "model       stma-tiny" in text and "source      shipped" in text
    assert f"parameters  {info['parameters']:,}" in text
    assert any(line.split()[0] == "model.safetensors" and "sha256" in line for line in text.splitlines())


def test_convert(tiny_weights: WeightsFactory, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_weights(0), ckpt)
    state = {"step": 10, "wall_time_s": 5.0, "recipe": {}, "metrics": {"J&F-Mean": 0.5}, "data": "synthetic"}
    (ckpt / "train_state.json").write_text(json.dumps(state))
    out = tmp_path / "stma-demo"
    assert f"Wrote {out}" in _stma("weights", "convert", str(ckpt), str(out))
    assert "| J&F-Mean | 0.5000 |" in (out / "README.md").read_text()
    again = _error("weights", "convert", str(ckpt), str(out))
    assert again == f"stma: error: {out}: already exists; choose a new folder"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("download", "acme/missing"), "weights 'acme/missing': repository not found on http://127.0.0.1:"),
        (("download", "acme/stma", "--revision", "v9"), "weights 'acme/stma': revision 'v9' not found"),
        (("info", "acme/config-only"), "weights 'acme/config-only': the repository has no model.safetensors"),
        (("info", "acme/cut"), "model.safetensors: corrupted or truncated safetensors file"),
        (("info", "nowhere"), "weights 'nowhere': not a folder, not a shipped model"),
    ],
)
def test_errors_are_one_line(hub, tiny_weights: WeightsFactory, args: tuple[str, ...], message: str) -> None:
    folder = tiny_weights(0)
    config = (folder / "config.json").read_bytes()
    hub.commit_folder("acme/stma", folder)
    hub.commit("acme/config-only", {"config.json": config})
    truncated = (folder / "model.safetensors").read_bytes()[:999]
    hub.commit("acme/cut", {"config.json": config, "model.safetensors": truncated})
    assert message in _error("weights", *args)


def test_offline_and_not_cached_is_one_line() -> None:
    line = _error("weights", "info", "acme/stma")
    assert "is not in the cache" in line and "HF_HUB_OFFLINE is set" in line


def test_hub_environment_variables_in_a_real_process(hub, tiny_weights: WeightsFactory, hf_home: Path) -> None:
    """HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE reach huggingface_hub the way they do in any Hub tool."""
    commit = hub.commit_folder("acme/stma", tiny_weights(0), refs=("main", "v1.0"))

    def stma(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "stma_cli", "weights", *args], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=120)

    fetched = stma("download", "acme/stma", "--revision", "v1.0")
    assert fetched.returncode == 0, fetched.stderr
    assert Path(fetched.stdout.strip()) == (hf_home / "hub" / "models--acme--stma" / "snapshots" / commit).resolve()

    served = len(hub.requests)
    info = stma("info", "acme/stma", "--revision", "v1.0", "--json", HF_HUB_OFFLINE="1")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["revision"] == commit and len(hub.requests) == served


def test_unreachable_hub_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    """No Hub at the endpoint and nothing cached: one line that says how to work offline, no retries."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
    run = subprocess.run([sys.executable, "-m", "stma_cli", "weights", "download", "acme/stma"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith(f"stma: error: weights 'acme/stma': cannot reach {endpoint} (Connection refused)")
    assert "to work offline, run `stma weights download acme/stma`" in run.stderr
