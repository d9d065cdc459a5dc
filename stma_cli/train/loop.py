"""The training loop: clips unrolled through the memory the way inference uses it.

A clip's first frame comes with its ground-truth masks and enters the memory as its anchor; every
later frame is segmented from the memory, and its predicted (soft) masks then enter the memory too,
through the same `MemoryBank` that inference uses (the anchor, a working frame every `mem_every`
frames, the previous frame, at most `mem_size` frames, working frames beyond the newest `mem_full`
pooled; size and interval drawn per step). So the network learns from its own mistakes as it will
meet them at inference. Before the supervised frames, `mem_size - 2` context frames are segmented
without gradient and each kept as a working frame, so that every step reads a memory of the size it
drew, up to the largest sizes users set (20 by default), at the cost of forward passes only.
Clips sample frames with gaps, up to a
maximum that follows a curriculum (`skip_schedule`), so the memory must bridge long absences.
Checkpoints (`stma_cli.train.checkpoint`) hold everything needed to resume exactly: model, optimiser,
schedule, step (the data is a pure function of the step).
"""
from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from stma_cli.device import autocast, resolve_device
from stma_cli.errors import StmaError, UsageError
from stma_cli.inference.config import SegmenterConfig
from stma_cli.inference.memory import MemoryBank
from stma_cli.model import STMA, STMAConfig, upsample_logits
from stma_cli.train.checkpoint import BEST, CHECKPOINT, checkpoint_in, load_checkpoint, save_checkpoint
from stma_cli.train.distributed import (DistributedContext, all_reduce_mean, any_process, barrier, init_distributed,
                                       shutdown)
from stma_cli.train.losses import presence_loss, vos_loss
from stma_cli.train.seeded import ClipKey

LOG = "log.jsonl"
MAX_MEM_SIZE = 64  # the largest memory a training step may draw (each size above 2 adds a context frame)
MAX_SKIP = 100  # the largest gap of --skip-schedule: generated clips plan every frame of the span they sample
# Modules that weights from before their introduction lack; `--init` from such weights starts them fresh.
NEW_MODULES = ("propagation.", "decoder.prior.", "presence.", "tokenizer.absent", "matching.", "decoder.readout.")
# The parts that let the memory find objects again start from neutral values (zero weights, gates, scalar
# temperatures and floors), from which Adam moves about one learning rate per step: they learn faster.
FAST_MODULES = ("presence.", "matching.", "decoder.readout.", "tokenizer.absent", "propagation.weight",
                "propagation.log_")


@dataclass
class TrainConfig:
    """Settings of one training run (also written into every checkpoint as its recipe)."""

    out: Path
    model: str = "tiny"  # STMAConfig preset
    data: str = "events:2+synthetic+pseudo"  # see stma_cli.train.data.make_dataset
    steps: int = 20000
    batch: int = 4
    crop: int = 384
    frames: int = 8  # supervised frames of a clip, the annotated first one included (context frames come on top)
    max_objects: int = 3
    skip_schedule: tuple[tuple[float, int], ...] = ((0.0, 3), (0.1, 6), (0.3, 10), (0.8, 4))
    """(fraction of the steps, largest gap between a clip's sampled frames from there on)."""
    mem_size: tuple[int, int] = (2, 20)
    """Range of the memory size, drawn per step; a step of size M first fills the memory with M - 2 context
    frames, so clips hold `frames + mem_size[1] - 2` frames."""
    mem_every: tuple[int, int] = (1, 3)
    """Range of the working-memory interval in sampled frames (of the supervised frames), drawn per step."""
    mem_full: int = SegmenterConfig.mem_full
    """Working frames kept whole; older ones are pooled, as at inference."""
    presence_weight: float = 0.5
    lr: float = 4e-4
    encoder_lr_scale: float = 0.25
    fast_lr_scale: float = 10.0  # for FAST_MODULES
    frozen_encoder_blocks: int = 7  # MobileNetV2 blocks up to stride 8 keep their ImageNet weights
    train_only: tuple[str, ...] = ()
    """Parameter-name prefixes that train (e.g. "presence."); the rest stay as --init gave them. Empty: all."""
    weight_decay: float = 0.05
    warmup: int = 300
    grad_clip: float = 2.0
    hard_pixels_from: float = 0.1  # fraction of steps after which hard-pixel mining starts
    hard_pixels_final: float = 0.25  # fraction of pixels kept at the end
    init: str | None = None  # weights to start from (name, path or repo id)
    seed: int = 0
    workers: int = 1
    device: str = "auto"
    amp: bool = True  # autocast (bf16 if supported, else fp16) on CUDA
    checkpoint_minutes: float = 5.0
    eval_every: int = 1000
    max_minutes: float | None = None  # stop (with a checkpoint) after this much wall time in this run
    log_every: int = 20

    def max_skip(self, step: int) -> int:
        """The curriculum's largest gap between sampled frames at `step`."""
        progress = step / max(1, self.steps)
        return next(skip for start, skip in reversed(self.skip_schedule) if progress >= start)

    def memory(self, step: int) -> tuple[int, int]:
        """(mem_size, mem_every) of `step`'s clips, a pure function of the step."""
        rng = torch.Generator().manual_seed(self.seed * 1_000_033 + step)
        size = int(torch.randint(self.mem_size[0], self.mem_size[1] + 1, (1,), generator=rng))
        every = int(torch.randint(self.mem_every[0], self.mem_every[1] + 1, (1,), generator=rng))
        return size, every

    @property
    def clip_frames(self) -> int:
        """Frames of each training clip: the anchor, the most context frames a step uses, the supervised ones."""
        return self.frames + self.mem_size[1] - 2

    def recipe(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        return data


RUN_KEYS = ("model", "data", "init", "seed", "steps", "batch", "crop", "frames", "max_objects", "skip_schedule",
            "lr", "warmup", "train_only", "mem_size")
"""The recipe entries that make a run what it is: resuming with other values needs `force`."""


def default_warmup(steps: int) -> int:
    """Warm-up steps for a run of `steps` steps: 1.5% of them (300 of the default 20,000), at least 1."""
    return max(1, round(0.015 * steps))


def recipe_changes(saved: Any, config: TrainConfig) -> list[str]:
    """The run-defining entries of a checkpoint's recipe that `config` changes, as "name old -> new"."""
    if not isinstance(saved, dict):
        return []
    now = json.loads(json.dumps(config.recipe(), default=str))
    return [f"{key} {saved.get(key)} -> {now.get(key)}" for key in RUN_KEYS
            if key in saved and saved.get(key) != now.get(key)]


def parse_mem_sizes(text: str) -> tuple[int, int]:
    """"2:20" -> (2, 20), "5" -> (5, 5): the range of memory sizes that training draws from."""
    try:
        low, high = (int(part) for part in (text.split(":") if ":" in text else (text, text)))
    except ValueError:
        raise UsageError(f"--mem-size {text}: expected MIN:MAX, e.g. 2:20") from None
    if not 2 <= low <= high <= MAX_MEM_SIZE:
        raise UsageError(f"--mem-size {text}: sizes from 2 to {MAX_MEM_SIZE}, MIN at most MAX")
    return low, high


def parse_skip_schedule(text: str) -> tuple[tuple[float, int], ...]:
    """"0:3,0.3:10" -> ((0.0, 3), (0.3, 10)): from each fraction of the steps on, the largest gap."""
    try:
        pairs = [(float(a), int(b)) for a, b in (item.split(":") for item in text.split(","))]
    except ValueError:
        raise UsageError(f"--skip-schedule {text}: expected FRACTION:GAP pairs, e.g. 0:3,0.3:10") from None
    fractions, gaps = [a for a, _ in pairs], [b for _, b in pairs]
    if not all(0 <= a < 1 for a in fractions) or fractions[0] != 0 or fractions != sorted(fractions) or \
            not all(1 <= b <= MAX_SKIP for b in gaps):
        raise UsageError(f"--skip-schedule {text}: fractions must start at 0, increase and stay below 1 (nan is no "
                         f"fraction); gaps from 1 to {MAX_SKIP}")
    return tuple(pairs)


class ClipModel(nn.Module):
    """Unrolls a clip through STMA and a `MemoryBank` (the module DistributedDataParallel wraps)."""

    def __init__(self, model: STMA, mem_full: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.mem_full = mem_full

    def forward(self, frames: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor,
                mem_size: int, mem_every: int, context: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """frames (B, T, 3, H, W), labels (B, T, H, W), ids/valid (B, n) -> logits (B, 1+n, H, W) and
        presence logits (B, n) of frames 1+context..T-1.

        Frames 1..context are context: segmented without gradient, each then kept as a working frame (with
        the masks the model predicted, as at inference), so that the supervised frames read a full memory.
        """
        n = ids.shape[1]
        images = frames.transpose(0, 1)
        with torch.no_grad():
            context_features = self.model.encode(images[1:1 + context].flatten(0, 1)).chunk(context) if context else []
        supervised = self.model.encode(torch.cat([images[:1], images[1 + context:]]).flatten(0, 1))
        anchor, *later = supervised.chunk(frames.shape[1] - context)
        clip = [anchor, *context_features, *later]
        first = F.one_hot(labels[:, 0], n + 1).permute(0, 3, 1, 2)[:, 1:].to(frames.dtype)
        memory = MemoryBank(mem_size, mem_every, self.mem_full)
        memory.add(self.model.memorize(anchor, first, ids, valid), annotated=True)
        grad = torch.is_grad_enabled()
        outputs, presences = [], []
        for i in range(1, len(clip)):
            with torch.set_grad_enabled(grad and i > context):
                logits, presence = self.model.predict(clip[i], memory.entries(), ids, valid)
                logits = upsample_logits(logits, clip[i].size)
                if i > context:
                    outputs.append(logits)
                    presences.append(presence)
                if i < len(clip) - 1:
                    memory.add(self.model.memorize(clip[i], logits.softmax(1)[:, 1:], ids, valid), annotated=False,
                               working=i <= context)
        return outputs, presences


def step_clip(frames: torch.Tensor, labels: torch.Tensor, mem_size: int,
              supervised: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A batch's clips (B, T, ...) cut for a step of memory size `mem_size`: the anchor, the last context
    frames (up to mem_size - 2, as many as the clips hold) and the `supervised - 1` frames after the anchor
    that the loss sees. Returns the frames, the labels and the number of context frames kept."""
    context = max(0, min(mem_size - 2, frames.shape[1] - supervised))
    keep = [0] + list(range(max(1, frames.shape[1] - (supervised - 1) - context), frames.shape[1]))
    return frames[:, keep], labels[:, keep], context


class StepSampler(Sampler[list[ClipKey]]):
    """Batches of clip keys as a pure function of (step, rank): resuming at a step is exact."""

    def __init__(self, dataset_size: int, batch: int, start_step: int, config: "TrainConfig",
                 context: DistributedContext) -> None:
        self.size, self.batch, self.start, self.config, self.context = dataset_size, batch, start_step, config, context

    def __iter__(self) -> Iterator[list[ClipKey]]:
        for step in range(self.start, self.config.steps):
            first = (step * self.context.world_size + self.context.rank) * self.batch
            skip = self.config.max_skip(step)
            yield [ClipKey((first + i) % self.size, skip) for i in range(self.batch)]

    def __len__(self) -> int:
        return max(0, self.config.steps - self.start)


def collate(items: list[dict[str, Any]], max_objects: int) -> dict[str, torch.Tensor]:
    """Stack clips; objects are padded to `max_objects` with a validity mask."""
    frames = torch.stack([item["frames"] for item in items])
    labels = torch.stack([item["masks"] for item in items]).long()
    counts = torch.tensor([int(item["num_objects"]) for item in items])
    valid = torch.arange(max_objects)[None] < counts[:, None]
    return {"frames": frames, "labels": labels, "valid": valid}


def random_ids(valid: torch.Tensor, num_ids: int, step: int, seed: int) -> torch.Tensor:
    """Distinct random ID-table indices per sample (1..num_ids), a pure function of the step."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    b, n = valid.shape
    return torch.stack([torch.randperm(num_ids, generator=generator)[:n] + 1 for _ in range(b)])


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 5%."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def hard_pixel_fraction(step: int, config: TrainConfig) -> float:
    """All pixels at first, then linearly down to `hard_pixels_final` over the run."""
    start = config.hard_pixels_from * config.steps
    if step < start:
        return 1.0
    progress = min(1.0, (step - start) / max(1.0, config.steps - start))
    return 1.0 - progress * (1.0 - config.hard_pixels_final)


def build_model(config: TrainConfig) -> STMA:
    """A fresh model of the preset (ImageNet-initialised encoder when available), or `--init` weights."""
    if config.init:
        from stma_cli.hub import load_weights_folder, resolve_weights

        return load_weights_folder(resolve_weights(config.init).path, new_modules=NEW_MODULES)
    model = STMA(STMAConfig.preset(config.model))
    if model.config.encoder == "mobilenetv2":
        from stma_cli.train.imagenet import imagenet_checkpoint

        checkpoint = imagenet_checkpoint()
        if checkpoint is not None:
            model.encoder.load_imagenet(checkpoint)
    return model


def freeze_all_but(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    """Only the parameters whose names start with one of `prefixes` keep training; UsageError if none does."""
    if not any(name.startswith(prefixes) for name, _ in model.named_parameters()):
        raise UsageError(f"--train-only {','.join(prefixes)}: no parameter of the model starts with that")
    for name, param in model.named_parameters():
        if not name.startswith(prefixes):
            param.requires_grad_(False)


def make_optimizer(model: STMA, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; the pretrained encoder learns more slowly, FAST_MODULES faster; no decay on norms, biases and
    embeddings."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = config.encoder_lr_scale if name.startswith("encoder.") else 1.0
        lr = config.lr * (config.fast_lr_scale if name.startswith(FAST_MODULES) else scale)
        decay = 0.0 if param.ndim < 2 or name.startswith("ids.") else config.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    return torch.optim.AdamW(
        [{"params": p, "lr": lr, "initial_lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()],
        betas=(0.9, 0.99),
    )


def train(config: TrainConfig, dataset: Dataset | None = None,
          evaluate: Callable[[STMA, Path], dict[str, float]] | None = None,
          log: Callable[[str], None] = print, force: bool = False) -> dict[str, Any]:
    """Run (or resume) training; returns the final train state.

    `dataset` defaults to `make_dataset(config.data, ...)`; `evaluate(model, out)` returns validation
    metrics (J&F-Mean first) every `eval_every` steps. Resuming a run with other steps, learning rate,
    data or another entry of `RUN_KEYS` is a UsageError naming the changes, unless `force`.
    """
    device = resolve_device(config.device)
    context = init_distributed(device)
    if device.type == "cuda" and context.enabled:
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    torch.manual_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)

    model = build_model(config).to(device)
    if model.config.matching_keys == "encoder":
        model.encoder.requires_grad_(False)  # its features are the matching keys: they keep their ImageNet meaning
    elif model.config.encoder == "mobilenetv2":
        model.encoder.features[: config.frozen_encoder_blocks].requires_grad_(False)
    if config.train_only:
        freeze_all_but(model, config.train_only)
    optimizer = make_optimizer(model, config)
    amp_dtype = None
    if config.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    state: dict[str, Any] = {"step": 0, "wall_time_s": 0.0, "metrics": {}, "best": None, "recipe": config.recipe(),
                             "data": config.data}
    resume = checkpoint_in(out / CHECKPOINT)
    if resume is not None:
        saved = load_checkpoint(resume, model, optimizer, scaler)
        changes = recipe_changes(saved.get("recipe"), config)
        if changes and not force:
            raise UsageError(f"{resume}: this run was started with other settings ({'; '.join(changes)}); pass "
                             "--force to go on with the new ones from here, or use a new --out")
        state.update({k: saved[k] for k in ("step", "wall_time_s", "metrics", "best") if k in saved})
        if context.is_main:
            log(f"resumed from {resume} at step {state['step']}")
            if changes:
                log(f"settings changed from here on (--force): {'; '.join(changes)}")

    if dataset is None:
        from stma_cli.train.data import make_dataset

        dataset = make_dataset(config.data, seed=config.seed, num_frames=config.clip_frames,
                               size=(config.crop, config.crop), max_objects=config.max_objects)
    sampler = StepSampler(len(dataset), config.batch, state["step"], config, context)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=config.workers,
                        collate_fn=functools.partial(collate, max_objects=config.max_objects),
                        pin_memory=device.type == "cuda", persistent_workers=False,
                        prefetch_factor=4 if config.workers else None)
    clip_model: nn.Module = ClipModel(model, config.mem_full)
    if context.enabled:
        clip_model = DistributedDataParallel(clip_model, device_ids=[device.index] if device.type == "cuda" else None)
    clip_model.train()

    step = state["step"]
    started = time.monotonic() - state["wall_time_s"]
    run_started = last_checkpoint = time.monotonic()
    running: dict[str, float] = {}
    for batch in loader:
        mem_size, mem_every = config.memory(step)
        frames, labels, context_frames = step_clip(batch["frames"], batch["labels"], mem_size, config.frames)
        frames, labels = frames.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        valid = batch["valid"].to(device, non_blocking=True)
        ids = random_ids(batch["valid"], model.config.num_ids, step, config.seed).to(device)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * learning_rate_factor(step, config)
        with autocast(device, amp_dtype):
            outputs, presences = clip_model(frames, labels, ids, valid, mem_size, mem_every, context_frames)
        supervised = labels[:, -len(outputs):]
        fraction = hard_pixel_fraction(step, config)
        terms = [vos_loss(logits, supervised[:, i], valid, fraction) for i, logits in enumerate(outputs)]
        presence = sum(presence_loss(p, supervised[:, i], valid) for i, p in enumerate(presences)) / len(presences)
        loss = sum(t["loss"] for t in terms) / len(terms) + config.presence_weight * presence
        if all_reduce_mean({"finite": float(torch.isfinite(loss).item())}, context, device)["finite"] < 1:
            raise StmaError(f"step {step + 1}: the loss is not finite (NaN or inf); training stops, the last "
                            f"checkpoint is kept (a lower --lr may help)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        step += 1

        with torch.no_grad():
            pred = torch.stack([o.argmax(1) for o in outputs], 1)
            target = supervised
            iou = ((pred == target) & (target > 0)).sum() / ((pred > 0) | (target > 0)).sum().clamp(min=1)
        for key, value in {"loss": loss.item(), "ce": sum(t["ce"].item() for t in terms) / len(terms),
                           "dice": sum(t["dice"].item() for t in terms) / len(terms), "presence": presence.item(),
                           "iou": iou.item()}.items():
            running[key] = running.get(key, 0.0) + value
        running["n"] = running.get("n", 0.0) + 1

        if step % config.log_every == 0 or step == config.steps:
            n = running.pop("n")
            means = all_reduce_mean({k: v / n for k, v in running.items()}, context, device)
            running = {}
            elapsed = time.monotonic() - started
            record = {"step": step, "lr": config.lr * learning_rate_factor(step - 1, config), "hard_pixels": round(fraction, 4),
                      "wall_time_s": round(elapsed, 1), **{k: round(v, 5) for k, v in means.items()}}
            if context.is_main:
                _append_log(out, record)
                log(" ".join(f"{k}={v}" for k, v in record.items()))

        evaluated = evaluate is not None and (step % config.eval_every == 0 or step == config.steps)
        if evaluated and context.is_main:
            model.eval()
            metrics = evaluate(model, out)
            model.train()
            state["metrics"] = metrics
            _append_log(out, {"step": step, "eval": metrics})
            log(f"step {step} validation: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        state["step"] = step
        state["wall_time_s"] = time.monotonic() - started
        time_to_save = time.monotonic() - last_checkpoint > config.checkpoint_minutes * 60
        out_of_time = config.max_minutes is not None and any_process(
            time.monotonic() - run_started > config.max_minutes * 60, context, device)  # the same step on every rank
        if context.is_main and (evaluated or time_to_save or out_of_time or step == config.steps):
            save_checkpoint(out / CHECKPOINT, model, optimizer, scaler, state)
            last_checkpoint = time.monotonic()
            score = state["metrics"].get("J&F-Mean")
            if evaluated and score is not None and (state["best"] is None or score > state["best"]):
                state["best"] = score
                save_checkpoint(out / BEST, model, optimizer, scaler, state)
                save_checkpoint(out / CHECKPOINT, model, optimizer, scaler, state)
        barrier(context)
        if out_of_time:
            break
    shutdown(context)
    return state


def _append_log(out: Path, record: dict[str, Any]) -> None:
    with open(out / LOG, "a") as handle:
        handle.write(json.dumps(record) + "\n")
