"""Weights resolution, loading, listing and conversion, against a local Hub driven by the real client."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stma_cli import hub as hubmod
from stma_cli.errors import StmaError
from stma_cli.hub import (
    ResolvedWeights,
    list_models,
    load_model,
    load_weights_folder,
    model_info,
    resolve_weights,
    shipped_names,
    weights_sha256,
)
from stma_cli.model import STMA, STMAConfig

WeightsFactory = Callable[[int], Path]


def _weights_bytes(weights: ResolvedWeights) -> bytes:
    return (weights.path / "model.safetensors").read_bytes()


def _copy(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


def _same_tensors(model: STMA, folder: Path) -> bool:
    expected = load_file(folder / "model.safetensors")
    state = model.state_dict()
    return all(torch.equal(state[key], value) for key, value in expected.items())


# -- local and shipped -----------------------------------------------------------------------------


def test_local_folder_loads_its_weights(tiny_weights: WeightsFactory) -> None:
    folder = tiny_weights(0)
    model, weights = load_model(str(folder))
    assert weights == ResolvedWeights(folder.resolve(), str(folder), None, "local")
    assert _same_tensors(model, folder) and not _same_tensors(model, tiny_weights(1))
    assert not model.training


def test_default_is_the_shipped_stma_tiny(tiny_weights: WeightsFactory, tmp_path: Path, monkeypatch) -> None:
    shipped = tmp_path / "weights"
    _copy(tiny_weights(0), shipped / "stma-tiny")
    (shipped / "notes").mkdir()  # not a model: no config.json
    monkeypatch.setenv("STMA_WEIGHTS_DIR", str(shipped))
    assert shipped_names() == ["stma-tiny"]
    assert resolve_weights() == ResolvedWeights((shipped / "stma-tiny").resolve(), "stma-tiny", None, "shipped")


def test_local_folder_comes_before_a_hub_id(tiny_weights: WeightsFactory, tmp_path: Path, monkeypatch) -> None:
    _copy(tiny_weights(0), tmp_path / "acme" / "stma")
    monkeypatch.chdir(tmp_path)
    assert resolve_weights("acme/stma").source == "local"  # offline, and no Hub request was needed


def test_unknown_name_says_what_was_tried(tiny_weights: WeightsFactory, tmp_path: Path, monkeypatch) -> None:
    _copy(tiny_weights(0), tmp_path / "stma-tiny")
    monkeypatch.setenv("STMA_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(StmaError, match=r"^weights 'stma-large': not a folder, not a shipped model \(stma-tiny\)"):
        resolve_weights("stma-large")


def test_revision_applies_only_to_hub_ids(tiny_weights: WeightsFactory) -> None:
    with pytest.raises(StmaError, match="--revision applies only to Hub repo ids"):
        resolve_weights(str(tiny_weights(0)), revision="v1")


def test_a_file_is_not_a_weights_folder(tiny_weights: WeightsFactory) -> None:
    with pytest.raises(StmaError, match="is a file: give the folder"):
        resolve_weights(str(tiny_weights(0) / "model.safetensors"))


def test_pickle_checkpoints_are_never_loaded(tiny_weights: WeightsFactory, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny_weights(0) / "config.json", folder)
    torch.save(load_file(tiny_weights(0) / "model.safetensors"), folder / "pytorch_model.bin")
    with pytest.raises(StmaError, match=r"pickled: no model\.safetensors"):
        load_model(str(folder))


# -- the Hub ---------------------------------------------------------------------------------------


def test_download_then_reuse_offline(hub, tiny_weights: WeightsFactory, hf_home: Path, set_offline) -> None:
    commit = hub.commit_folder("acme/stma", tiny_weights(0))
    weights = resolve_weights("acme/stma")
    assert weights == ResolvedWeights(
        (hf_home / "hub" / "models--acme--stma" / "snapshots" / commit).resolve(), "acme/stma", commit, "hub"
    )
    assert sorted(p.name for p in weights.path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert _weights_bytes(weights) == (tiny_weights(0) / "model.safetensors").read_bytes()

    served = len(hub.requests)
    assert resolve_weights("acme/stma") == weights
    assert not [r for r in hub.requests[served:] if r.startswith("GET")]  # online again: checked, not fetched

    set_offline(True)
    served = len(hub.requests)
    model, again = load_model("acme/stma")
    assert again == weights and len(hub.requests) == served
    assert _same_tensors(model, tiny_weights(0))


def test_model_card_is_optional(hub, tiny_weights: WeightsFactory, set_offline) -> None:
    folder = tiny_weights(0)
    hub.commit("acme/bare", {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")})
    weights = resolve_weights("acme/bare")
    assert not (weights.path / "README.md").exists()
    set_offline(True)
    assert resolve_weights("acme/bare") == weights


def test_revision_pins_branch_tag_or_commit(hub, tiny_weights: WeightsFactory, set_offline) -> None:
    v1 = hub.commit_folder("acme/stma", tiny_weights(0), refs=("main", "v1.0"))
    dev = hub.commit_folder("acme/stma", tiny_weights(1), refs=("dev",))
    latest = hub.commit_folder("acme/stma", tiny_weights(2), refs=("main",))
    pins = {None: latest, "main": latest, "v1.0": v1, "dev": dev, v1: v1}
    for revision, commit in pins.items():
        assert resolve_weights("acme/stma", revision).revision == commit
    assert _weights_bytes(resolve_weights("acme/stma", "v1.0")) == (tiny_weights(0) / "model.safetensors").read_bytes()
    model, _ = load_model("acme/stma", "dev")
    assert _same_tensors(model, tiny_weights(1))

    set_offline(True)
    for revision, commit in pins.items():
        assert resolve_weights("acme/stma", revision).revision == commit


def test_branch_that_moved_gives_the_new_commit(hub, tiny_weights: WeightsFactory) -> None:
    first = hub.commit_folder("acme/stma", tiny_weights(0))
    assert resolve_weights("acme/stma").revision == first
    second = hub.commit_folder("acme/stma", tiny_weights(1))
    weights = resolve_weights("acme/stma")
    assert weights.revision == second
    assert _weights_bytes(weights) == (tiny_weights(1) / "model.safetensors").read_bytes()


def test_private_repo_needs_hf_token(hub, tiny_weights: WeightsFactory, monkeypatch) -> None:
    hub.commit_folder("acme/private", tiny_weights(0))
    hub.repos["acme/private"].token = "hf_secret"
    with pytest.raises(StmaError, match=r"repository not found on http://127\.0\.0\.1:\d+ .*set HF_TOKEN"):
        resolve_weights("acme/private")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert resolve_weights("acme/private").source == "hub"


def test_gated_repo(hub, tiny_weights: WeightsFactory) -> None:
    hub.commit_folder("acme/gated", tiny_weights(0))
    hub.repos["acme/gated"].token, hub.repos["acme/gated"].gated = "hf_secret", True
    with pytest.raises(StmaError, match="gated repo on http://127.0.0.1"):
        resolve_weights("acme/gated")


@pytest.mark.parametrize(
    ("spec", "revision", "message"),
    [
        ("acme/missing", None, r"^weights 'acme/missing': repository not found on http://127\.0\.0\.1:\d+ "),
        ("acme/stma", "v9", r"^weights 'acme/stma': revision 'v9' not found on http://127\.0\.0\.1:\d+$"),
        ("acme/config-only", None, r"^weights 'acme/config-only': the repository has no model\.safetensors$"),
    ],
)
def test_hub_errors(hub, tiny_weights: WeightsFactory, spec: str, revision: str | None, message: str) -> None:
    hub.commit_folder("acme/stma", tiny_weights(0))
    hub.commit("acme/config-only", {"config.json": (tiny_weights(0) / "config.json").read_bytes()})
    with pytest.raises(StmaError, match=message):
        resolve_weights(spec, revision)


def test_offline_and_not_cached() -> None:
    message = r"^weights 'acme/stma': config\.json is not in the cache \(.*\) and HF_HUB_OFFLINE is set; run `stma"
    with pytest.raises(StmaError, match=message):
        resolve_weights("acme/stma")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:{port}", "http://stma-hub.invalid"])
def test_unreachable_hub_is_one_answer_without_retries(endpoint: str, set_offline, monkeypatch, caplog) -> None:
    endpoint = endpoint.format(port=_closed_port())
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    set_offline(False)
    with pytest.raises(StmaError) as raised:
        resolve_weights("acme/stma")
    message = str(raised.value)
    assert message.startswith(f"weights 'acme/stma': cannot reach {endpoint} (")
    assert "config.json is not in the cache" in message and "to work offline, run `stma weights download acme/stma`" in message
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub")]  # no request, so no retry


def test_unreachable_hub_uses_the_cache(hub, tiny_weights: WeightsFactory, monkeypatch) -> None:
    hub.commit_folder("acme/stma", tiny_weights(0))
    weights = resolve_weights("acme/stma")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert resolve_weights("acme/stma") == weights


def test_unreachable_reason(hub, monkeypatch) -> None:
    assert hubmod.unreachable_reason(hub.url) is None
    assert hubmod.unreachable_reason(f"http://127.0.0.1:{_closed_port()}") == "Connection refused"
    proxy = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("http_proxy", proxy)  # the Hub is reached through the proxy, so the proxy is what is checked
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    hubmod.unreachable_reason.cache_clear()
    assert hubmod.unreachable_reason("http://hub.example:8080") == "Connection refused"


def test_offline_revision_not_cached(hub, tiny_weights: WeightsFactory, set_offline) -> None:
    hub.commit_folder("acme/stma", tiny_weights(0), refs=("main", "v1.0"))
    resolve_weights("acme/stma")
    set_offline(True)
    with pytest.raises(StmaError, match=r"^weights 'acme/stma@v1\.0': config\.json is not in the cache"):
        resolve_weights("acme/stma", "v1.0")


def test_truncated_safetensors_from_the_hub(hub, tiny_weights: WeightsFactory) -> None:
    folder = tiny_weights(0)
    data = (folder / "model.safetensors").read_bytes()
    hub.commit("acme/cut", {"config.json": (folder / "config.json").read_bytes(), "model.safetensors": data[:100_000]})
    with pytest.raises(StmaError, match=r"model\.safetensors: corrupted or truncated safetensors file \("):
        load_model("acme/cut")


def test_corrupted_safetensors(tiny_weights: WeightsFactory, tmp_path: Path) -> None:
    folder = _copy(tiny_weights(0), tmp_path / "broken")
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(StmaError, match=r"broken/model\.safetensors: corrupted or truncated safetensors file"):
        load_model(str(folder))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"architecture": "xmem"}, r"config\.json: config is for architecture 'xmem', not 'stma'$"),
        ({"model_type": "bert", "hidden_size": 768}, r"config\.json: not an STMA config \(no \"architecture\": \"stma\" entry\)$"),
        ({"architecture": "stma", "layers": 3}, r"config\.json: invalid STMA config: unknown config keys: layers$"),
        ({"architecture": "stma", "heads": 3}, r"config\.json: invalid STMA config: dim 128 is not divisible by heads 3$"),
        ([1, 2], r"config\.json: the weights config is not a JSON object$"),
    ],
)
def test_config_errors(tiny_weights: WeightsFactory, tmp_path: Path, config: object, message: str) -> None:
    folder = _copy(tiny_weights(0), tmp_path / "other")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(StmaError, match=message):
        load_model(str(folder))


def test_config_that_is_not_json(tiny_weights: WeightsFactory, tmp_path: Path) -> None:
    folder = _copy(tiny_weights(0), tmp_path / "other")
    (folder / "config.json").write_text("{architecture: stma")
    with pytest.raises(StmaError, match=r"other/config\.json: the weights config is not valid JSON \(Expecting "
                                        r"property name"):
        load_model(str(folder))


def test_weights_that_do_not_fit_the_config(tiny_weights: WeightsFactory, tmp_path: Path) -> None:
    folder = _copy(tiny_weights(0), tmp_path / "deeper")
    (folder / "config.json").write_text(json.dumps({**STMAConfig.preset("tiny").to_dict(), "depth": 3, "dim": 64}))
    with pytest.raises(StmaError, match=r"tensors do not match config\.json: \d+ missing \(first: blocks\.2\..*\); "
                                        r"\d+ with another shape \(first: "):
        load_model(str(folder))


# -- list and info ---------------------------------------------------------------------------------


def test_list_shows_shipped_and_cached_stma_models(
    hub, tiny_weights: WeightsFactory, tmp_path: Path, monkeypatch
) -> None:
    _copy(tiny_weights(0), tmp_path / "shipped" / "stma-tiny")
    monkeypatch.setenv("STMA_WEIGHTS_DIR", str(tmp_path / "shipped"))
    v1 = hub.commit_folder("acme/stma", tiny_weights(0), refs=("main", "v1.0"))
    latest = hub.commit_folder("acme/stma", tiny_weights(1), refs=("main",))
    bert = tmp_path / "bert"
    _copy(tiny_weights(0), bert)
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    hub.commit_folder("other/bert", bert)
    for spec, revision in (("acme/stma", "v1.0"), ("acme/stma", "main"), ("other/bert", None)):
        resolve_weights(spec, revision)

    entries = list_models()
    assert entries[0].to_dict() == {
        "model_id": "stma-tiny",
        "source": "shipped",
        "path": str(tmp_path / "shipped" / "stma-tiny"),
        "size": sum(p.stat().st_size for p in tiny_weights(0).iterdir()),
        "revision": None,
        "refs": [],
    }
    hub_entries = {(e.model_id, e.revision, e.refs) for e in entries[1:]}
    assert hub_entries == {("acme/stma", v1, ("v1.0",)), ("acme/stma", latest, ("main",))}
    assert all(e.size > 1_000_000 and (e.path / "model.safetensors").is_file() for e in entries)


def test_list_with_no_cache_and_nothing_shipped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STMA_WEIGHTS_DIR", str(tmp_path / "none"))
    assert list_models() == []


def test_info_works_offline_from_the_cache(hub, tiny_weights: WeightsFactory, set_offline) -> None:
    folder = tiny_weights(0)
    commit = hub.commit_folder("acme/stma", folder, refs=("main", "v1.0"))
    resolve_weights("acme/stma", "v1.0")
    set_offline(True)
    info = model_info("acme/stma", "v1.0")
    assert info.weights.revision == commit and info.weights.source == "hub"
    assert info.config == STMAConfig.preset("tiny").to_dict()
    assert info.parameters == sum(t.numel() for t in STMA(STMAConfig.preset("tiny")).parameters())
    assert {f.name: (f.size, f.sha256) for f in info.files} == {
        name: ((folder / name).stat().st_size, hashlib.sha256((folder / name).read_bytes()).hexdigest())
        for name in ("config.json", "model.safetensors", "README.md")
    }
    assert json.loads(json.dumps(info.to_dict()))["files"][1]["name"] == "model.safetensors"


@pytest.mark.parametrize("revision", ["../..", "..", "/etc", "main/../x", "a b"])
def test_revision_that_is_no_git_name_is_refused(revision: str) -> None:
    with pytest.raises(StmaError, match=r"^--revision .*: not a branch, tag or commit name$"):
        resolve_weights("acme/stma", revision)


def test_weights_of_an_unknown_user() -> None:
    with pytest.raises(StmaError, match=r"^weights '~nosuchuser-stma': cannot expand '~' \(no such user here\)$"):
        resolve_weights("~nosuchuser-stma")


def test_weights_with_non_finite_values_are_refused(tiny_weights: WeightsFactory, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    folder = tmp_path / "nan"
    shutil.copytree(tiny_weights(0), folder)
    state = load_file(folder / "model.safetensors")
    name = sorted(state)[0]
    state[name] = state[name].clone().fill_(float("nan"))
    save_file(state, folder / "model.safetensors")
    with pytest.raises(StmaError, match=rf"model\.safetensors: tensor {re.escape(name)} holds NaN or infinite values"):
        load_weights_folder(folder)


@pytest.mark.parametrize(("change", "message"), [
    ({"dim": "128"}, "dim is '128', expected an integer from 1 to 4096"),
    ({"heads": 0}, "heads is 0, expected an integer from 1 to 64"),
    ({"propagation_radius": -1}, "propagation_radius is -1, expected an integer from 0 to 32"),
    ({"mlp_ratio": None}, "mlp_ratio is None, expected a number > 0 and at most 16"),
    ({"decoder_widths": [64, 48]}, r"decoder_widths is \(64, 48\), expected 3 integers from 1 to 4096"),
    ({"num_ids": 4_000_000}, "num_ids is 4000000, expected an integer from 1 to 1024"),
    ({"depth": 10**9}, "depth is 1000000000, expected an integer from 1 to 64"),
    ({"mlp_ratio": 1e9}, "mlp_ratio is 1000000000.0, expected a number > 0 and at most 16"),
    ({"decoder_widths": [64, 48, 10**6]}, r"decoder_widths is \(64, 48, 1000000\), expected 3 integers from 1 to 4096"),
    ({"window_frames": -1}, "window_frames is -1, expected an integer from 0 to 1000"),
    ({"window_margin": float("inf")}, "window_margin is inf, expected a number from 0 to 100"),
    ({"window_growth": -0.5}, r"window_growth is -0\.5, expected a number from 0 to 100"),
    ({"speck_share": 1.5}, r"speck_share is 1\.5, expected a number from 0 to below 1"),
    ({"edge_radius": 33}, "edge_radius is 33, expected an integer from 0 to 32"),
    ({"given_area": -1.0}, r"given_area is -1\.0, expected a number from 0 to 100"),
    ({"part_match": 1.0}, r"part_match is 1\.0, expected a number from 0 to below 1"),
])
def test_config_values_of_the_wrong_type_or_range(tiny_weights: WeightsFactory, tmp_path: Path, change: dict,
                                                  message: str) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(tiny_weights(0), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(StmaError, match=rf"config\.json: invalid STMA config: {message}$"):
        load_weights_folder(folder)


# -- untrusted config.json ---------------------------------------------------------------------------

NESTED = '{"architecture": ' + "[" * 100_000 + "]" * 100_000 + "}"


def test_config_sizes_are_checked_against_the_weights_before_any_allocation(tiny_weights: WeightsFactory,
                                                                            tmp_path: Path) -> None:
    """A config.json that asks for a far larger network than its safetensors holds fails at the header check:
    the process grows by much less than the 375 MB that building that network would take."""
    folder = _copy(tiny_weights(0), tmp_path / "inflated")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "dim": 1024, "depth": 4, "heads": 8}))
    peak = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"  # kB, this process
    code = ("import sys\n"
            "import safetensors, torch\n"
            "from stma_cli.errors import StmaError\n"
            "from stma_cli.hub import load_weights_folder\n"
            "from stma_cli.model import STMA\n"
            f"before = {peak}\n"
            "try:\n    load_weights_folder(sys.argv[1])\nexcept StmaError as error:\n    print(error)\n"
            f"print(({peak} - before) // 1024)\n")
    run = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300)
    message, grown_mb = run.stdout.splitlines()
    assert re.search(r"model\.safetensors: tensors do not match config\.json: .*with another shape", message), \
        run.stderr
    assert int(grown_mb) < 100, run.stdout


def test_a_deeply_nested_config_is_one_error(tiny_weights: WeightsFactory, tmp_path: Path) -> None:
    folder = _copy(tiny_weights(0), tmp_path / "nested")
    (folder / "config.json").write_text(NESTED)
    message = rf"^{re.escape(str(folder / 'config.json'))}: the weights config is nested too deeply to be read$"
    with pytest.raises(StmaError, match=message):
        load_model(str(folder))
    with pytest.raises(StmaError, match=message):
        STMA.from_pretrained(folder)


def test_listing_skips_a_cached_config_nested_too_deeply(hub, tiny_weights: WeightsFactory) -> None:
    hub.commit("acme/nested", {"config.json": NESTED.encode(),
                               "model.safetensors": (tiny_weights(0) / "model.safetensors").read_bytes()})
    resolve_weights("acme/nested")
    assert [entry.source for entry in list_models()] == ["shipped"]


def test_a_cache_ref_that_leads_outside_the_cache(hf_home: Path) -> None:
    ref = hf_home / "hub" / "models--acme--stma" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("../..")
    with pytest.raises(StmaError, match=rf"^{re.escape(str(ref))}: the Hub cache's ref 'main' holds '\.\./\.\.', not a "
                                        r"commit hash; delete the file"):
        resolve_weights("acme/stma")


def test_the_weights_fingerprint_covers_the_config(tiny_weights: WeightsFactory, tmp_path: Path) -> None:
    """What a run's manifest records of its model: editing config.json alone makes it another model."""
    folder = _copy(tiny_weights(0), tmp_path / "w")
    listing = "".join(f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n"
                      for name in ("config.json", "model.safetensors"))
    assert weights_sha256(folder) == hashlib.sha256(listing.encode()).hexdigest()
    before = weights_sha256(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "cut_threshold": 0.5}))
    assert weights_sha256(folder) != before
