"""The training loop: it learns, checkpoints, resumes exactly, and runs under two gloo processes."""
import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from safetensors.torch import save_file

from stma_cli.errors import StmaError, UsageError
from stma_cli.hub import load_weights_folder
from stma_cli.model import STMA, STMAConfig
from stma_cli.train.loop import (NEW_MODULES, ClipModel, StepSampler, TrainConfig, build_model, collate, hard_pixel_fraction,
                                 learning_rate_factor, parse_mem_sizes, parse_skip_schedule, step_clip, train)
from stma_cli.train.distributed import DistributedContext
from stma_cli.train.losses import presence_loss, vos_loss
from stma_cli.train.seeded import ClipKey


class MovingSquares(torch.utils.data.Dataset):
    """Clips of 1-2 squares moving over noise: item i is a pure function of i."""

    def __len__(self) -> int:
        return 10_000

    def __getitem__(self, key: ClipKey) -> dict:
        index = key.index
        g = torch.Generator().manual_seed(index)
        frames = torch.rand(3, 3, 48, 48, generator=g) * 0.3
        masks = torch.zeros(3, 48, 48, dtype=torch.long)
        count = 1 + index % 2
        for obj in range(count):
            y, x = (int(v) for v in torch.randint(4, 24, (2,), generator=g))
            for t in range(3):
                frames[t, obj, y + 2 * t:y + 2 * t + 14, x + t:x + t + 14] = 1.0
                masks[t, y + 2 * t:y + 2 * t + 14, x + t:x + t + 14] = obj + 1
        return {"frames": frames, "masks": masks, "num_objects": count}


def _config(out: Path, steps: int) -> TrainConfig:
    return TrainConfig(out=out, steps=steps, batch=2, crop=48, frames=3, max_objects=2, workers=0, warmup=2,
                       log_every=1, device="cpu", seed=3)


class Interrupted(MovingSquares):
    """Dies when step 3's data is fetched, as a killed run would."""

    def __getitem__(self, key: ClipKey) -> dict:
        if key.index >= 4:
            raise KeyboardInterrupt
        return super().__getitem__(key)


def test_resume_is_exact(tmp_path):
    straight = train(_config(tmp_path / "a", 4), dataset=MovingSquares(), log=lambda _: None)
    interrupted = _config(tmp_path / "b", 4)
    interrupted.checkpoint_minutes = 0
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, dataset=Interrupted(), log=lambda _: None)
    assert json.loads((tmp_path / "b" / "checkpoint" / "train_state.json").read_text())["step"] == 2
    resumed = train(_config(tmp_path / "b", 4), dataset=MovingSquares(), log=lambda _: None)
    assert straight["step"] == resumed["step"] == 4
    a = load_file(tmp_path / "a" / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoint" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    state = json.loads((tmp_path / "b" / "checkpoint" / "train_state.json").read_text())
    assert state["step"] == 4 and state["recipe"]["batch"] == 2


def test_evaluation_keeps_the_best(tmp_path):
    scores = iter([0.5, 0.4])
    config = _config(tmp_path, 4)
    config.eval_every = 2
    train(config, dataset=MovingSquares(), evaluate=lambda model, out: {"J&F-Mean": next(scores)}, log=lambda _: None)
    best = json.loads((tmp_path / "best" / "train_state.json").read_text())
    last = json.loads((tmp_path / "checkpoint" / "train_state.json").read_text())
    assert best["step"] == 2 and best["metrics"]["J&F-Mean"] == 0.5
    assert last["step"] == 4 and last["best"] == 0.5


def test_loss_falls_on_an_easy_task(tmp_path):
    config = _config(tmp_path, 50)
    config.lr = 1e-3
    train(config, dataset=MovingSquares(), log=lambda _: None)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    first = sum(r["loss"] for r in log[:5]) / 5
    last = sum(r["loss"] for r in log[-5:]) / 5
    assert last < 0.8 * first


def test_an_encoder_that_gives_the_matching_keys_stays_frozen(tmp_path):
    """The tiny preset matches on its encoder's ImageNet features: training leaves them as they are."""
    config = _config(tmp_path, 2)
    config.lr = 1e-3
    train(config, dataset=MovingSquares(), log=lambda _: None)
    trained = load_file(tmp_path / "checkpoint" / "model.safetensors")
    torch.manual_seed(config.seed)  # as train() does before it builds the model
    fresh = build_model(config).state_dict()
    assert STMAConfig.preset(config.model).matching_keys == "encoder"
    encoder = [k for k in trained if k.startswith("encoder.")]
    assert encoder and all(torch.equal(trained[k], fresh[k]) for k in encoder)
    assert not all(torch.equal(trained[k], fresh[k]) for k in trained if k.startswith("decoder."))


def test_train_only_tunes_the_named_parts_and_leaves_the_rest(tmp_path):
    """--train-only presence. changes the presence head and nothing else; a prefix that names no parameter is refused."""
    config = _config(tmp_path, 2)
    config.lr, config.train_only = 1e-3, ("presence.",)
    train(config, dataset=MovingSquares(), log=lambda _: None)
    trained = load_file(tmp_path / "checkpoint" / "model.safetensors")
    torch.manual_seed(config.seed)  # as train() does before it builds the model
    fresh = build_model(config).state_dict()
    changed = {k for k in trained if not torch.equal(trained[k], fresh[k])}
    assert changed and all(k.startswith("presence.") for k in changed)
    config = _config(tmp_path / "other", 2)
    config.train_only = ("no_such_module.",)
    with pytest.raises(UsageError, match="--train-only no_such_module."):
        train(config, dataset=MovingSquares(), log=lambda _: None)


def test_max_minutes_stops_with_a_checkpoint(tmp_path):
    config = _config(tmp_path, 10)
    config.max_minutes = 0
    state = train(config, dataset=MovingSquares(), log=lambda _: None)
    assert state["step"] == 1
    assert json.loads((tmp_path / "checkpoint" / "train_state.json").read_text())["step"] == 1


def test_init_from_weights_that_predate_new_modules(tmp_path):
    """Older weights lack the modules added since; --init starts those fresh, plain loading refuses."""
    model = STMA(STMAConfig.preset("tiny"))
    model.save_pretrained(tmp_path / "old")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(NEW_MODULES)}
    save_file(state, tmp_path / "old" / "model.safetensors")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in ("learned_key_dim", "propagation_radius"):
        del config[key]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))

    started = build_model(TrainConfig(out=tmp_path / "run", init=str(tmp_path / "old")))
    assert all(torch.equal(started.state_dict()[k], v) for k, v in state.items())
    assert started.propagation.weight.item() == 1  # fresh
    with pytest.raises(StmaError, match="missing"):
        load_weights_folder(tmp_path / "old")


def test_sampler_splits_steps_between_ranks():
    config = TrainConfig(out=Path("x"), steps=5, skip_schedule=((0.0, 2), (0.8, 7)))
    ranks = [list(StepSampler(1000, 2, 3, config, DistributedContext(r, 2, r))) for r in range(2)]
    assert [[k.index for k in batch] for batch in ranks[0]] == [[12, 13], [16, 17]]
    assert [[k.index for k in batch] for batch in ranks[1]] == [[14, 15], [18, 19]]
    assert [batch[0].max_skip for batch in ranks[0]] == [2, 7]  # steps 3 and 4 of 5: the curriculum moves at 80%


def test_memory_settings_are_drawn_per_step_within_their_ranges():
    config = TrainConfig(out=Path("x"), steps=100, mem_size=(2, 5), mem_every=(1, 3))
    drawn = [config.memory(step) for step in range(100)]
    assert drawn == [config.memory(step) for step in range(100)]
    assert {size for size, _ in drawn} == {2, 3, 4, 5} and {every for _, every in drawn} == {1, 2, 3}


def test_mem_size_parsing():
    assert parse_mem_sizes("2:20") == (2, 20) and parse_mem_sizes("5") == (5, 5)
    for bad in ("1:5", "6:5", "2:65", "x", "2:"):
        with pytest.raises(UsageError):
            parse_mem_sizes(bad)


def test_clips_are_long_enough_to_fill_the_largest_memory():
    config = TrainConfig(out=Path("x"), frames=8, mem_size=(2, 20))
    assert config.clip_frames == 8 + 18


def test_step_clip_keeps_the_anchor_the_last_context_frames_and_the_supervised_ones():
    frames = torch.arange(10).view(1, 10, 1).float()  # clip frame t holds t
    labels = torch.arange(10).view(1, 10)
    cut, cut_labels, context = step_clip(frames, labels, mem_size=5, supervised=4)
    assert context == 3 and cut.flatten().tolist() == [0, 4, 5, 6, 7, 8, 9] == cut_labels.flatten().tolist()
    cut, _, context = step_clip(frames, labels, mem_size=2, supervised=4)
    assert context == 0 and cut.flatten().tolist() == [0, 7, 8, 9]
    cut, _, context = step_clip(frames[:, :5], labels[:, :5], mem_size=20, supervised=4)  # a short clip: what it holds
    assert context == 1 and cut.flatten().tolist() == [0, 1, 2, 3, 4]
    cut, _, context = step_clip(frames[:, :3], labels[:, :3], mem_size=20, supervised=4)
    assert context == 0 and cut.flatten().tolist() == [0, 1, 2]


def test_training_steps_use_context_frames_up_to_the_memory_drawn(tmp_path, monkeypatch):
    """Clips of 5 frames, 3 supervised, a memory of 4: each step segments 2 context frames first."""
    calls = []
    forward = ClipModel.forward

    def recording(self, frames, labels, ids, valid, mem_size, mem_every, context=0):
        outputs, presences = forward(self, frames, labels, ids, valid, mem_size, mem_every, context)
        calls.append((frames.shape[1], mem_size, context, len(outputs), self.mem_full))
        return outputs, presences

    monkeypatch.setattr(ClipModel, "forward", recording)

    class LongerSquares(MovingSquares):
        def __getitem__(self, key: ClipKey) -> dict:
            item = super().__getitem__(key)
            order = [0, 1, 2, 1, 2]
            return {**item, "frames": item["frames"][order], "masks": item["masks"][order]}

    config = _config(tmp_path, 2)
    config.mem_size, config.mem_full = (4, 4), 1
    state = train(config, dataset=LongerSquares(), log=lambda _: None)
    assert state["step"] == 2 and calls == [(5, 4, 2, 2, 1)] * 2


def test_skip_schedule_parsing():
    assert parse_skip_schedule("0:3,0.1:6,0.8:4") == ((0.0, 3), (0.1, 6), (0.8, 4))
    for bad in ("0.1:3", "0:3,0.5", "0:0", "0:3,0.9:2,0.5:1", "x"):
        with pytest.raises(StmaError):
            parse_skip_schedule(bad)


def test_collate_pads_objects():
    batch = collate([MovingSquares()[ClipKey(0, 1)], MovingSquares()[ClipKey(1, 1)]], max_objects=3)
    assert batch["valid"].tolist() == [[True, False, False], [True, True, False]]


def test_schedules():
    config = TrainConfig(out=Path("x"), steps=100, warmup=10)
    assert learning_rate_factor(0, config) == pytest.approx(0.1)
    assert learning_rate_factor(10, config) == pytest.approx(1.0)
    assert learning_rate_factor(100, config) == pytest.approx(0.05)
    assert hard_pixel_fraction(0, config) == 1.0
    assert hard_pixel_fraction(100, config) == pytest.approx(config.hard_pixels_final)


def test_loss_is_low_for_a_confident_correct_prediction():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6] = 1
    good = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 20
    bad = good.flip(1)
    valid = torch.ones(1, 1, dtype=torch.bool)
    assert vos_loss(good, target, valid, 0.5)["loss"] < 0.01 < vos_loss(bad, target, valid, 0.5)["loss"]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(_config(Path(out), 2), dataset=MovingSquares(), log=lambda _: None)


def test_two_processes_with_gloo(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # spawn, not fork: a fork of this process, after other tests ran torch's thread pools and server threads,
    # can inherit a lock that no thread of the child will release, and hang
    mp.start_processes(_worker, args=(port, str(tmp_path)), nprocs=2, start_method="spawn")
    state = json.loads((tmp_path / "checkpoint" / "train_state.json").read_text())
    assert state["step"] == 2
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]


class LateClock:
    """A clock that runs an hour ahead from its 8th reading on: one rank's view of --time-limit."""

    def __init__(self) -> None:
        import time

        self.real, self.readings = time.monotonic, 0

    def monotonic(self) -> float:
        self.readings += 1
        return self.real() + (3600 if self.readings >= 8 else 0)


def _worker_with_own_clock(rank: int, port: int, out: str) -> None:
    from stma_cli.train import loop

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if rank == 1:
        loop.time = LateClock()  # this process only
    config = _config(Path(out), 6)
    config.max_minutes = 30
    state = train(config, dataset=MovingSquares(), log=lambda _: None)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"step": state["step"]}))


def test_a_time_limit_stops_every_rank_at_the_same_step(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    processes = mp.start_processes(_worker_with_own_clock, args=(port, str(tmp_path)), nprocs=2, join=False,
                                   start_method="spawn")
    deadline = time.monotonic() + 120
    while not processes.join(timeout=1):
        if time.monotonic() > deadline:  # a rank waits in a collective that the other left
            for process in processes.processes:
                process.kill()
            pytest.fail("a rank stopped on its own clock and the other hung")
    steps = [json.loads((tmp_path / f"rank{rank}.json").read_text())["step"] for rank in (0, 1)]
    assert steps[0] == steps[1] < 6
    assert json.loads((tmp_path / "checkpoint" / "train_state.json").read_text())["step"] == steps[0]


def test_a_non_finite_loss_stops_training(tmp_path):
    config = _config(tmp_path, 4)
    config.lr = float("nan")
    with pytest.raises(StmaError, match=r"step 2: the loss is not finite"):
        train(config, dataset=MovingSquares(), log=lambda _: None)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda c: (c / "train_state.json").write_text("{broken"), r"train_state\.json: the train state is not valid JSON"),
    (lambda c: (c / "train_state.json").write_text('{"step": -1}'), r"train_state\.json: not a train state"),
    (lambda c: (c / "optimizer.pt").write_bytes(b"\x00" * 10), r"optimizer\.pt: unreadable optimiser state"),
    (lambda c: (c / "model.safetensors").write_bytes(b"\x00" * 10), r"model\.safetensors: cannot be loaded"),
])
def test_resuming_from_a_damaged_checkpoint_names_the_file(tmp_path, damage, message):
    train(_config(tmp_path, 1), dataset=MovingSquares(), log=lambda _: None)
    checkpoint = (tmp_path / "checkpoint").resolve()
    damage(checkpoint)
    with pytest.raises(StmaError, match=message):
        train(_config(tmp_path, 2), dataset=MovingSquares(), log=lambda _: None)


def test_resuming_with_another_config_is_refused(tmp_path):
    train(_config(tmp_path, 1), dataset=MovingSquares(), log=lambda _: None)
    config = _config(tmp_path, 2)
    config.init = None
    (tmp_path / "checkpoint" / "config.json").write_text(
        json.dumps({**STMAConfig.preset("tiny").to_dict(), "depth": 3}))
    with pytest.raises(StmaError, match=r"trained with another model config \(differs in depth\); resume it with "
                                        r"the same --config"):
        train(config, dataset=MovingSquares(), log=lambda _: None)


def test_a_run_resumes_across_a_change_in_the_inference_only_rules(tmp_path):
    """cut_match and cut_share do not change what training computes: a run started before the shipped
    config.json gained them resumes, and its checkpoint takes today's values."""
    train(_config(tmp_path, 1), dataset=MovingSquares(), log=lambda _: None)
    saved = tmp_path / "checkpoint" / "config.json"
    saved.write_text(json.dumps({**json.loads(saved.read_text()), "cut_match": 0.0, "cut_share": 0.3}))
    assert train(_config(tmp_path, 2), dataset=MovingSquares(), log=lambda _: None, force=True)["step"] == 2
    resumed = json.loads((tmp_path / "checkpoint" / "config.json").read_text())
    today = STMAConfig.preset("tiny")
    assert (resumed["cut_match"], resumed["cut_share"]) == (today.cut_match, today.cut_share) == (0.8, 0.15)


def test_clip_model_reads_memory_as_inference_builds_it():
    """The anchor, a working frame every mem_every frames, and the previous frame, at most mem_size frames."""
    model = STMA(STMAConfig.preset("tiny"))
    read: list[list[int]] = []
    predict = model.predict

    def recording(features, memory, ids, valid=None):
        read.append([id(entry) for entry in memory])
        return predict(features, memory, ids, valid)

    model.predict = recording
    written: list[int] = []
    made = []
    memorize = model.memorize

    def remembering(*args, **kwargs):
        entry = memorize(*args, **kwargs)
        written.append(id(entry))
        made.append(entry)
        return entry

    model.memorize = remembering
    clip = MovingSquares()[ClipKey(1, 1)]
    frames = torch.cat([clip["frames"]] * 2)[None]  # 6 frames
    labels = torch.cat([clip["masks"]] * 2)[None]
    with torch.no_grad():
        outputs, presences = ClipModel(model)(frames, labels, torch.tensor([[4, 9]]), torch.tensor([[True, True]]), 3, 2)
    assert len(outputs) == len(presences) == 5 and presences[0].shape == (1, 2)
    frame = {entry: index for index, entry in enumerate(written)}  # memory entry -> clip frame
    assert [[frame[e] for e in memory] for memory in read] == [[0], [0, 1], [0, 2], [0, 2, 3], [0, 2, 4]]

    read.clear(), written.clear(), made.clear()
    outputs, _ = ClipModel(model)(frames, labels, torch.tensor([[4, 9]]), torch.tensor([[True, True]]), 5, 2, 3)
    assert len(outputs) == 2 and all(output.requires_grad for output in outputs)  # frames 4 and 5 are supervised
    frame = {entry: index for index, entry in enumerate(written)}
    # Context frames 1-3 each join the working memory; then a working frame every 2nd frame again.
    assert [[frame[e] for e in memory] for memory in read] == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4]]
    # Only the anchor and the supervised frames carry gradients: context frames cost forward passes only.
    assert [entry.levels[-1][1].requires_grad for entry in made] == [True, False, False, False, True]


def test_presence_loss_targets_visibility():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 0, 0] = 2  # object 2 shows, object 1 does not
    valid = torch.tensor([[True, True, False]])
    confident = torch.tensor([[-20.0, 20.0, 20.0]])
    assert presence_loss(confident, labels, valid) < 1e-6  # the padded third object does not count
    assert presence_loss(-confident, labels, valid) > 10


def test_learning_rates_by_part():
    """The pretrained encoder learns slower, the parts that start from neutral values faster (a model
    with learned matching keys; one that matches on its encoder's features keeps the encoder frozen)."""
    from stma_cli.train.loop import make_optimizer

    model = STMA(STMAConfig(matching_keys="learned"))
    config = TrainConfig(out=Path("x"), lr=1e-4, encoder_lr_scale=0.25, fast_lr_scale=10.0)
    optimizer = make_optimizer(model, config)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["encoder.features.10.conv.0.0.weight"])] == pytest.approx(2.5e-5)
    assert lr_of[id(named["blocks.0.correlation.q.weight"])] == pytest.approx(1e-4)
    for fast in ("presence.head.3.bias", "matching.weight", "decoder.readout.weight", "tokenizer.absent",
                 "propagation.log_tau", "propagation.weight"):
        assert lr_of[id(named[fast])] == pytest.approx(1e-3), fast
    assert lr_of[id(named["propagation.key.weight"])] == pytest.approx(1e-4)


def test_resuming_with_other_steps_or_lr_asks_for_force(tmp_path):
    train(_config(tmp_path, 1), dataset=MovingSquares(), log=lambda _: None)
    longer = _config(tmp_path, 3)
    longer.lr = 1e-4
    with pytest.raises(StmaError, match=r"other settings \(steps 1 -> 3; lr 0.0004 -> 0.0001\); pass --force"):
        train(longer, dataset=MovingSquares(), log=lambda _: None)
    lines: list[str] = []
    state = train(longer, dataset=MovingSquares(), log=lines.append, force=True)
    assert state["step"] == 3 and lines[1] == "settings changed from here on (--force): steps 1 -> 3; lr 0.0004 -> 0.0001"
    assert json.loads((tmp_path / "checkpoint" / "train_state.json").read_text())["recipe"]["steps"] == 3


def test_warm_up_scales_with_the_steps():
    from stma_cli.train.loop import default_warmup

    assert default_warmup(20000) == 300 and default_warmup(2000) == 30 and default_warmup(10) == 1
