"""Fixtures for the whole suite.

Every test gets its own Hugging Face home with HF_HUB_OFFLINE=1, so nothing reaches huggingface.co,
the user's cache or token, and nothing waits on retries. `hub` starts a local Hub and goes online.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from hub_server import HubServer

from stma_cli.model import STMA, STMAConfig


@pytest.fixture
def set_offline(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """Switch Hub offline mode, for this process and for subprocesses."""

    def set_(offline: bool) -> None:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
        # huggingface_hub reads HF_HUB_OFFLINE once, at import, into this constant.
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)

    return set_


@pytest.fixture(autouse=True)
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, set_offline: Callable[[bool], None]) -> Path:
    """A private, offline Hugging Face home for each test; returns it (the cache is `hub/` inside)."""
    home = tmp_path / "hf-home"
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_CACHE", "STMA_WEIGHTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    # Read at import by huggingface_hub: patch the values it uses.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    set_offline(True)
    return home


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, set_offline: Callable[[bool], None]) -> Iterator[HubServer]:
    """A local Hub on 127.0.0.1, with HF_ENDPOINT pointing at it and offline mode off."""
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        set_offline(False)
        yield server


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """`tiny_weights(seed)`: a folder of randomly initialised tiny STMA weights (config, safetensors, card)."""
    folders: dict[int, Path] = {}

    def make(seed: int = 0) -> Path:
        if seed not in folders:
            torch.manual_seed(seed)
            folders[seed] = tmp_path_factory.mktemp(f"tiny-{seed}")
            STMA(STMAConfig.preset("tiny")).save_pretrained(folders[seed])
        return folders[seed]

    return make


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread, here and in the commands the tests run (which follow OMP_NUM_THREADS): small
    tensors gain nothing from more, and a busy machine loses a lot."""
    threads, environment = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if environment is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = environment
