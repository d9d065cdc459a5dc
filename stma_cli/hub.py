"""Model weights: local folders, models shipped in `weights/`, and the Hugging Face Hub.

A weights folder holds `config.json` (an `STMAConfig`), `model.safetensors` and optionally a
`README.md` model card. A `--weights` value is resolved in this order:

1. an existing local folder;
2. the name of a model shipped in the repository's `weights/` folder (`stma-tiny` is the default;
   the environment variable `STMA_WEIGHTS_DIR` points elsewhere);
3. a Hub repo id `owner/name`, at `--revision` (branch, tag or commit; default `main`).

Hub files go through `huggingface_hub.hf_hub_download` into the shared cache, so `HF_HOME`,
`HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_HUB_OFFLINE` and `HF_TOKEN` behave as in every Hub tool. The
endpoint is checked once per process with a short connection attempt: when it cannot be reached,
files come from the cache or the error says at once how to work offline (no retries). Weights are
only ever read with safetensors: pickle files are never loaded.

torch, safetensors and the model are imported by the loading functions only, so resolving,
downloading and listing weights do not pay for them.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import socket
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from huggingface_hub import constants, hf_hub_download, is_offline_mode, scan_cache_dir
from huggingface_hub.file_download import repo_folder_name
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

import stma_cli
from stma_cli.errors import StmaError
from stma_cli.io import safe_fs

if TYPE_CHECKING:
    import torch

    from stma_cli.model import STMA, STMAConfig

DEFAULT_WEIGHTS = "stma-tiny"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
MAX_CONFIG_BYTES = 1 << 20  # an STMA config.json is about 1 kB
REACH_TIMEOUT_S = 3.0  # the one connection attempt that decides whether the Hub is reachable

_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
_COMMIT = re.compile(r"[0-9a-f]{40}")

# What a Hub client exception means, most specific first (a GatedRepoError is a RepositoryNotFoundError,
# and all of them are HfHubHTTPErrors). Fields: where (repo[@revision]), repo, revision, endpoint, file,
# status, detail.
_HUB_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (GatedRepoError, "weights '{where}': gated repo on {endpoint}; accept its terms there and set HF_TOKEN"),
    (RepositoryNotFoundError,
     "weights '{where}': repository not found on {endpoint} (check the name; for a private repo set HF_TOKEN)"),
    (RevisionNotFoundError, "weights '{repo}': revision '{revision}' not found on {endpoint}"),
    (RemoteEntryNotFoundError, "weights '{where}': the repository has no {file}"),
    (HfHubHTTPError, "weights '{where}': {endpoint} answered HTTP {status} for {file}"),
    (HFValidationError, "weights '{where}': {detail}"),
)

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
    if revision is not None:
        check_revision(revision)
    try:
        local = Path(spec).expanduser()
    except RuntimeError:  # ~user of a user this machine does not know
        raise StmaError(f"weights '{spec}': cannot expand '~' (no such user here)") from None
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


_BAD_REVISION = re.compile(r"(^|/)\.|\.\.|//|^/|/$|\.lock(/|$)|@\{|[\\~^:?*\[\x00-\x20\x7f]")


def check_revision(revision: str) -> None:
    """A branch, tag or commit name as git allows it; StmaError otherwise (e.g. '../..', which would
    point the Hub cache's refs/ lookup outside the repository)."""
    if not revision or _BAD_REVISION.search(revision):
        raise StmaError(f"--revision {revision!r}: not a branch, tag or commit name")


def download(repo_id: str, revision: str | None = None) -> ResolvedWeights:
    """Fetch config.json, model.safetensors and the model card (if any) of a Hub repo into the cache.

    All files come from the commit that `revision` pointed at when config.json was fetched. Offline
    (`HF_HUB_OFFLINE=1`) or when the endpoint cannot be reached, the files come from the cache or not at all.
    """
    if revision is not None:
        check_revision(revision)
    _check_cached_ref(repo_id, revision or "main")
    endpoint = _endpoint()
    unreachable = None if is_offline_mode() else unreachable_reason(endpoint)
    fetching = CONFIG_FILE
    try:
        config = Path(_hub_file(repo_id, CONFIG_FILE, revision, endpoint, cache_only=unreachable is not None))
        commit = config.parent.name  # the cache keeps files under snapshots/<commit>/
        fetching = WEIGHTS_FILE
        _hub_file(repo_id, WEIGHTS_FILE, commit, endpoint, cache_only=unreachable is not None)
        fetching = CARD_FILE
        try:
            _hub_file(repo_id, CARD_FILE, commit, endpoint, cache_only=unreachable is not None)
        except EntryNotFoundError:
            pass  # the model card is optional
    except LocalEntryNotFoundError:
        raise StmaError(_not_cached_message(repo_id, revision, fetching, endpoint, unreachable)) from None
    except tuple(kind for kind, _ in _HUB_ERRORS) as error:
        raise StmaError(_hub_error_message(error, repo_id, revision, fetching, endpoint)) from None
    return ResolvedWeights(config.parent, repo_id, commit, "hub")


def _check_cached_ref(repo_id: str, revision: str) -> None:
    """StmaError if the Hub cache's `refs/<revision>` file holds anything but a commit hash: the Hub client
    would join what it holds (e.g. `../..`) to the cache's path."""
    ref = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "refs" / revision
    if _COMMIT.fullmatch(revision) or not ref.is_file():
        return
    held = safe_fs.read_regular(ref, 1024, "Hub cache ref").decode("utf-8", "replace").strip()
    if not _COMMIT.fullmatch(held):
        raise StmaError(f"{ref}: the Hub cache's ref {revision!r} holds {held[:60]!r}, not a commit hash; delete the "
                        f"file (or the folder {ref.parent.parent}) and download the weights again")


@functools.cache
def unreachable_reason(endpoint: str, timeout: float = REACH_TIMEOUT_S) -> str | None:
    """Why a TCP connection to `endpoint` (or to the proxy that serves it) fails; None when it opens.

    Checked once per process and endpoint, within `timeout` seconds (name lookup included), so that an
    offline machine gets an answer at once instead of the Hub client's retries.
    """
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname or "", proxy_parts.port or 80
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(error.strerror or str(error) or type(error).__name__)

    attempt = threading.Thread(target=connect, name="stma-reach", daemon=True)
    attempt.start()
    attempt.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def _hub_file(repo_id: str, filename: str, revision: str | None, endpoint: str, cache_only: bool) -> str:
    return hf_hub_download(
        repo_id,
        filename,
        revision=revision,
        endpoint=endpoint,
        local_files_only=cache_only,
        library_name="stma",
        library_version=stma_cli.__version__,
    )


def _not_cached_message(repo_id: str, revision: str | None, file: str, endpoint: str, unreachable: str | None) -> str:
    where = f"{repo_id}@{revision}" if revision else repo_id
    fetch = f"stma weights download {repo_id}{f' --revision {revision}' if revision else ''}"
    cache = constants.HF_HUB_CACHE
    if is_offline_mode():
        return f"weights '{where}': {file} is not in the cache ({cache}) and HF_HUB_OFFLINE is set; run `{fetch}` while online"
    reason = f" ({unreachable})" if unreachable else ""
    return (f"weights '{where}': cannot reach {endpoint}{reason} and {file} is not in the cache ({cache}); "
            f"to work offline, run `{fetch}` where the Hub is reachable and use that cache (HF_HOME), "
            "or pass a local weights folder")


def _hub_error_message(error: Exception, repo_id: str, revision: str | None, file: str, endpoint: str) -> str:
    response = getattr(error, "response", None)
    fields = {
        "where": f"{repo_id}@{revision}" if revision else repo_id,
        "repo": repo_id,
        "revision": revision,
        "endpoint": endpoint,
        "file": file,
        "status": getattr(response, "status_code", "?"),
        "detail": _first_line(str(error)),
    }
    template = next(template for kind, template in _HUB_ERRORS if isinstance(error, kind))
    return template.format(**fields)


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
    from stma_cli.model import STMAConfig
    from stma_cli.model.stma import ARCHITECTURE

    path = Path(folder) / CONFIG_FILE
    data = read_json(path, "weights config")
    if "architecture" not in data:
        raise StmaError(f"{path}: not an STMA config (no \"architecture\": \"{ARCHITECTURE}\" entry)")
    if data["architecture"] != ARCHITECTURE:
        raise StmaError(f"{path}: config is for architecture {data['architecture']!r}, not {ARCHITECTURE!r}")
    try:
        return STMAConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise StmaError(f"{path}: invalid STMA config: {_first_line(str(error))}") from None


def load_weights_folder(
    folder: str | Path, device: str | torch.device = "cpu", new_modules: tuple[str, ...] = ()
) -> STMA:
    """Build the model of `folder/config.json` and load `folder/model.safetensors` into it, strictly.

    This is the one loader: `load_model`, `STMA.from_pretrained` and training's `--init` use it.
    config.json is not trusted to size the model: its sizes are bounded (`STMAConfig`), and the shapes
    it implies (`STMA.tensor_shapes`, which takes no memory) are compared with the safetensors header
    before the model is built, so that it takes no more memory than the file's own tensors. Tensors are
    then read one at a time into the model, so loading holds one copy of the weights. `new_modules` (name
    prefixes, for starting training from older weights) may be absent from the file; they keep their fresh
    initialisation.
    """
    import torch
    from safetensors import SafetensorError, safe_open

    from stma_cli.model import STMA

    folder = _checked_folder(Path(folder))
    config = read_config(folder)
    path = folder / WEIGHTS_FILE
    try:
        with safe_open(str(path), framework="pt") as weights, torch.no_grad():
            shapes = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
            with _config_errors(folder):
                expected = STMA.tensor_shapes(config)
            _check_tensors(path, expected, shapes, new_modules)
            with _config_errors(folder):
                model = STMA(config)
            state = model.state_dict()
            for key in shapes:
                tensor = weights.get_tensor(key)
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    raise StmaError(f"{path}: tensor {key} holds NaN or infinite values (did the training diverge?)")
                state[key].copy_(tensor)
    except SafetensorError as error:
        raise StmaError(f"{path}: corrupted or truncated safetensors file ({_first_line(str(error))})") from None
    except OSError as error:
        raise StmaError(f"{path}: cannot read the weights ({error.strerror or error})") from None
    return model.to(device).eval()


@contextlib.contextmanager
def _config_errors(folder: Path) -> Iterator[None]:
    """A model that config.json cannot make (ValueError, RuntimeError) as a StmaError naming config.json."""
    try:
        yield
    except (ValueError, RuntimeError) as error:  # RuntimeError: also address space that a limit refuses
        raise StmaError(f"{folder / CONFIG_FILE}: invalid STMA config: {_first_line(str(error))}") from None


def load_model(
    spec: str | None = None, revision: str | None = None, device: str | torch.device = "cpu"
) -> tuple[STMA, ResolvedWeights]:
    """Resolve `spec` (see `resolve_weights`) and load the model, in eval mode, on `device`."""
    weights = resolve_weights(spec, revision)
    return load_weights_folder(weights.path, device), weights


def weights_sha256(folder: str | Path) -> str:
    """What a run's provenance records of its weights: the SHA-256 of the `sha256sum` listing of the folder's
    config.json and model.safetensors, so that a change to either one is a different model."""
    from stma_cli.io.provenance import file_sha256

    listing = "".join(f"{file_sha256(Path(folder) / name)}  {name}\n" for name in (CONFIG_FILE, WEIGHTS_FILE))
    return hashlib.sha256(listing.encode()).hexdigest()


def _check_tensors(path: Path, expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]],
                   new_modules: tuple[str, ...]) -> None:
    missing = sorted(k for k in expected.keys() - found.keys() if not k.startswith(new_modules))
    unexpected = sorted(found.keys() - expected.keys())
    mismatched = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
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
    from stma_cli.io.provenance import file_sha256

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
    """Whether a cached config.json is an STMA one (the model's ARCHITECTURE; torch is not loaded to list)."""
    try:
        return read_json(path, "weights config").get("architecture") == "stma"
    except StmaError:
        return False


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def read_json(path: Path, what: str = "file") -> dict[str, Any]:
    """A JSON object from `path`, a regular file of at most 1 MiB; StmaError naming the file if it is missing,
    unreadable, malformed, nested too deeply or not an object."""
    data = safe_fs.read_json(path, what, MAX_CONFIG_BYTES)
    if not isinstance(data, dict):
        raise StmaError(f"{path}: the {what} is not a JSON object")
    return data


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
