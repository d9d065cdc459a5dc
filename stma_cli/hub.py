"""Model weights: local folders, models shipped in `weights/`, and the Hugging Face Hub.

A weights folder holds `config.json` (an `STMAConfig`), `model.safetensors` and optionally a
`README.md` model card. A `--weights` value is resolved in this order:

1. an existing local folder;
2. the name of a model shipped in the repository's `weights/` folder (`stma-tiny` is the default;
   the environment variable `STMA_WEIGHTS_DIR` points elsewhere);
3. a Hub repo id `owner/name`, at `--revision` (branch, tag or commit; default `main`).

Hub files go through `huggingface_hub.hf_hub_download` into the shared cache, so `HF_HOME`,
`HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_HUB_OFFLINE` and `HF_TOKEN` behave as in every Hub tool. Weights
are only ever read with safetensors: pickle files are never loaded.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from huggingface_hub import constants, hf_hub_download, is_offline_mode, scan_cache_dir
from huggingface_hub.errors import (
    CacheNotFound,
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load_file

import stma_cli
from stma_cli.errors import StmaError
from stma_cli.io.provenance import file_sha256
from stma_cli.model import STMA, STMAConfig
from stma_cli.model.stma import ARCHITECTURE

DEFAULT_WEIGHTS = "stma-tiny"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
TRAIN_STATE_FILE = "train_state.json"

_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")

Source = Literal["local", "shipped", "hub"]


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a `--weights` value led: a folder with config.json and model.safetensors."""

    path: Path
    model_id: str
    revision: str | None  # the commit, for Hub weights
    source: Source

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class WeightsInfo:
    """What `stma weights info` reports."""

    weights: ResolvedWeights
    config: dict[str, Any]
    parameters: int
    files: list[FileInfo]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.weights.to_dict(),
            "config": self.config,
            "parameters": self.parameters,
            "files": [asdict(f) for f in self.files],
        }


@dataclass(frozen=True)
class ModelEntry:
    """One model that can be used without a download: shipped, or in the Hub cache."""

    model_id: str
    source: Source
    path: Path
    size: int  # bytes on disk
    revision: str | None = None  # the commit, for cached Hub models
    refs: tuple[str, ...] = ()  # branches and tags that pointed at that commit when fetched

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path), "refs": list(self.refs)}


@dataclass(frozen=True)
class TrainState:
    """The parts of a training checkpoint's train_state.json that go into a model card."""

    step: int
    wall_time_s: float
    recipe: dict[str, Any]
    metrics: dict[str, float]
    data: str


# -- resolution ------------------------------------------------------------------------------------


def shipped_dir() -> Path:
    """The folder of shipped models: `$STMA_WEIGHTS_DIR`, else `weights/` beside the package."""
    override = os.environ.get("STMA_WEIGHTS_DIR")
    return Path(override) if override else Path(stma_cli.__file__).resolve().parents[1] / "weights"


def shipped_names() -> list[str]:
    """Names of the shipped models."""
    root = shipped_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_FILE).is_file())


def resolve_weights(spec: str | None = None, revision: str | None = None) -> ResolvedWeights:
    """Find the weights folder for `spec`: a local folder, a shipped name or a Hub repo id (see module docs)."""
    spec = spec or DEFAULT_WEIGHTS
    local = Path(spec).expanduser()
    shipped = shipped_dir() / spec
    if local.is_dir():
        source: Source = "local"
    elif local.exists():
        raise StmaError(f"weights '{spec}' is a file: give the folder that holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    elif "/" not in spec and shipped.is_dir():
        local, source = shipped, "shipped"
    elif _REPO_ID.fullmatch(spec):
        return download(spec, revision)
    else:
        names = ", ".join(shipped_names()) or "none installed"
        raise StmaError(
            f"weights '{spec}': not a folder, not a shipped model ({names}) and not a Hub repo id (owner/name)"
        )
    if revision is not None:
        raise StmaError(f"weights '{spec}' is a {source} folder: --revision applies only to Hub repo ids")
    return ResolvedWeights(_checked_folder(local), spec, None, source)


def download(repo_id: str, revision: str | None = None) -> ResolvedWeights:
    """Fetch config.json, model.safetensors and the model card (if any) of a Hub repo into the cache.

    All files come from the commit that `revision` pointed at when config.json was fetched. Offline
    (`HF_HUB_OFFLINE=1`), the files come from the cache or not at all.
    """
    where = f"{repo_id}@{revision}" if revision else repo_id
    endpoint = _endpoint()
    fetching = CONFIG_FILE
    try:
        config = Path(_hub_file(repo_id, CONFIG_FILE, revision, endpoint))
        commit = config.parent.name  # the cache keeps files under snapshots/<commit>/
        fetching = WEIGHTS_FILE
        _hub_file(repo_id, WEIGHTS_FILE, commit, endpoint)
        fetching = CARD_FILE
        try:
            _hub_file(repo_id, CARD_FILE, commit, endpoint)
        except EntryNotFoundError:
            pass  # the model card is optional
    except GatedRepoError:
        raise StmaError(
            f"weights '{where}': gated repo on {endpoint}; accept its terms there and set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise StmaError(
            f"weights '{where}': repository not found on {endpoint} (check the name; for a private repo set HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise StmaError(f"weights '{repo_id}': revision '{revision}' not found on {endpoint}") from None
    except RemoteEntryNotFoundError:
        raise StmaError(f"weights '{where}': the repository has no {fetching}") from None
    except LocalEntryNotFoundError:
        cache = constants.HF_HUB_CACHE
        if is_offline_mode():
            raise StmaError(
                f"weights '{where}': {fetching} is not in the cache ({cache}) and HF_HUB_OFFLINE is set; "
                f"run `stma weights download {repo_id}{f' --revision {revision}' if revision else ''}` while online"
            ) from None
        raise StmaError(
            f"weights '{where}': cannot reach {endpoint} and {fetching} is not in the cache ({cache})"
        ) from None
    except HfHubHTTPError as error:
        status = error.response.status_code
        raise StmaError(f"weights '{where}': {endpoint} answered HTTP {status} for {fetching}") from None
    except HFValidationError as error:
        raise StmaError(f"weights '{where}': {_first_line(str(error))}") from None
    return ResolvedWeights(config.parent, repo_id, commit, "hub")


def _hub_file(repo_id: str, filename: str, revision: str | None, endpoint: str) -> str:
    return hf_hub_download(
        repo_id,
        filename,
        revision=revision,
        endpoint=endpoint,
        library_name="stma",
        library_version=stma_cli.__version__,
    )


def _endpoint() -> str:
    # huggingface_hub reads HF_ENDPOINT once, at import; reading it per call gives the same result in a CLI run.
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or constants.ENDPOINT


def _checked_folder(folder: Path) -> Path:
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise StmaError(f"{folder}: no {name} (a weights folder holds {CONFIG_FILE} and {WEIGHTS_FILE})")
    return folder.resolve()


# -- loading ---------------------------------------------------------------------------------------


def read_config(folder: str | Path) -> STMAConfig:
    """The STMA config in `folder/config.json`; StmaError if it is unreadable or for another architecture."""
    path = Path(folder) / CONFIG_FILE
    data = _read_json(path)
    architecture = data.get("architecture", data.get("model_type"))
    if architecture != ARCHITECTURE:
        raise StmaError(f"{path}: config is for architecture {architecture!r}, not {ARCHITECTURE!r}")
    try:
        return STMAConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise StmaError(f"{path}: invalid STMA config: {_first_line(str(error))}") from None


def load_weights_folder(folder: str | Path, device: str | torch.device = "cpu", new_modules: tuple[str, ...] = ()) -> STMA:
    """Build the model of `folder/config.json` and load `folder/model.safetensors` into it, strictly.

    `new_modules` (name prefixes, for starting training from older weights) may be absent from the
    file; they keep their fresh initialisation.
    """
    folder = _checked_folder(Path(folder))
    config = read_config(folder)
    try:
        model = STMA(config)
    except (ValueError, RuntimeError) as error:
        raise StmaError(f"{folder / CONFIG_FILE}: invalid STMA config: {_first_line(str(error))}") from None
    path = folder / WEIGHTS_FILE
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as error:
        raise StmaError(f"{path}: corrupted or truncated safetensors file ({_first_line(str(error))})") from None
    expected = {k: v for k, v in model.state_dict().items() if k in state or not k.startswith(new_modules)}
    _check_state_dict(path, expected, state)
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()


def load_model(
    spec: str | None = None, revision: str | None = None, device: str | torch.device = "cpu"
) -> tuple[STMA, ResolvedWeights]:
    """Resolve `spec` (see `resolve_weights`) and load the model, in eval mode, on `device`."""
    weights = resolve_weights(spec, revision)
    return load_weights_folder(weights.path, device), weights


def _check_state_dict(path: Path, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    mismatched = sorted(k for k in expected.keys() & found.keys() if expected[k].shape != found[k].shape)
    problems = [
        f"{len(keys)} {kind} (first: {keys[0]})"
        for kind, keys in (("missing", missing), ("unexpected", unexpected), ("with another shape", mismatched))
        if keys
    ]
    if problems:
        raise StmaError(f"{path}: tensors do not match {CONFIG_FILE}: " + "; ".join(problems))


# -- inspection ------------------------------------------------------------------------------------


def model_info(spec: str | None = None, revision: str | None = None) -> WeightsInfo:
    """Config, parameter count, file hashes and origin of some weights (works offline from the cache)."""
    model, weights = load_model(spec, revision)
    files = [
        FileInfo(name, (weights.path / name).stat().st_size, file_sha256(weights.path / name))
        for name in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
        if (weights.path / name).is_file()
    ]
    return WeightsInfo(weights, model.config.to_dict(), model.num_parameters(), files)


def list_models() -> list[ModelEntry]:
    """Shipped models, then STMA models in the Hub cache (each cached commit on its own)."""
    entries = [
        ModelEntry(name, "shipped", shipped_dir() / name, _folder_size(shipped_dir() / name))
        for name in shipped_names()
    ]
    try:
        cache = scan_cache_dir(constants.HF_HUB_CACHE)
    except CacheNotFound:
        return entries
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            if (rev.snapshot_path / WEIGHTS_FILE).is_file() and _is_stma_config(rev.snapshot_path / CONFIG_FILE):
                entries.append(ModelEntry(
                    repo.repo_id, "hub", rev.snapshot_path, rev.size_on_disk, rev.commit_hash, tuple(sorted(rev.refs))
                ))
    return entries


def _is_stma_config(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("architecture") == ARCHITECTURE
    except (OSError, ValueError, AttributeError):
        return False


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- conversion ------------------------------------------------------------------------------------


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
    data = _read_json(path)
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
    bad = [k for k, v in data["metrics"].items() if not isinstance(v, (int, float)) or isinstance(v, bool)]
    if bad:
        raise StmaError(f"{path}: metric '{bad[0]}' is not a number")
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StmaError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StmaError(f"{path}: not valid JSON ({_first_line(str(error))})") from None
    if not isinstance(data, dict):
        raise StmaError(f"{path}: expected a JSON object")
    return data


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
