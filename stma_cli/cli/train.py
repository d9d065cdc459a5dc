"""`stma train`: train an STMA model (single process, or under torchrun)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from stma_cli.cli.common import reporting_errors
from stma_cli.errors import UsageError

MAX_CROP = 2048  # pixels: a clip of 8 frames at this size is already 400 MB of float32 input


def train(
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Run folder: checkpoint/, best/, log.jsonl (resumed if present)."),
    config: str = typer.Option("tiny", metavar="PRESET", help="Model preset: tiny or base."),
    data: str = typer.Option(
        "events:2+synthetic+pseudo", "--data", metavar="DATA",
        help="events, synthetic, pseudo, a DAVIS-2017 / YouTube-VOS folder, or a mixture: A:WEIGHT+B:WEIGHT."),
    steps: int = typer.Option(20000, min=1, metavar="N", help="Total optimiser steps (the schedule's length)."),
    batch: int = typer.Option(4, min=1, metavar="N", help="Clips per step and process."),
    crop: int = typer.Option(384, min=64, max=MAX_CROP, metavar="PX", help="Square crop size of training clips."),
    frames: int = typer.Option(8, min=2, metavar="N", help="Supervised frames per clip (the first one annotated)."),
    mem_size: str = typer.Option(
        "2:20", metavar="MIN:MAX",
        help="Memory sizes drawn per step (as --mem-size of stma segment); a step of size M first fills the memory "
             "with M-2 context frames, segmented without gradient. MAX-2 context frames make clips longer."),
    skip_schedule: str = typer.Option(
        "0:3,0.1:6,0.3:10,0.8:4", metavar="F:GAP,...",
        help="Curriculum of the largest gap between a clip's frames: from each fraction F of the steps on, at most GAP."),
    max_objects: int = typer.Option(
        3, min=1, metavar="N", help="Most objects per clip (at most the model's ID table: 32 for tiny, 64 for base)."),
    lr: float = typer.Option(4e-4, "--lr", metavar="LR", help="Peak learning rate (warm-up, then cosine decay)."),
    warmup: Optional[int] = typer.Option(
        None, min=0, metavar="N",
        help="Steps of linear warm-up to the peak learning rate (default: 1.5% of --steps, 300 of 20000)."),
    init: Optional[str] = typer.Option(
        None, metavar="ID|PATH",
        help="Start from these weights: a local folder (config.json + model.safetensors), a model shipped in "
             "weights/ (e.g. stma-tiny) or a Hub repo id. Default: the ImageNet encoder, the rest from scratch."),
    train_only: Optional[str] = typer.Option(
        None, metavar="PREFIX,...",
        help="Train only the parameters whose names start with these prefixes (e.g. presence. to tune the presence "
             "head of --init weights); the rest stay frozen."),
    workers: int = typer.Option(1, min=0, metavar="N", help="Data-loading processes per training process."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (under torchrun: LOCAL_RANK's GPU)."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="Mixed precision on CUDA (bf16, else fp16)."),
    eval_every: int = typer.Option(1000, min=1, metavar="N", help="Validation J&F every N steps (keeps best/)."),
    eval_sequences: int = typer.Option(6, min=0, metavar="N", help="Short validation sequences (0: none)."),
    eval_long_sequences: int = typer.Option(
        3, min=0, metavar="N", help="Long validation sequences: occlusion, exits, look-alikes (0: none)."),
    checkpoint_minutes: float = typer.Option(5.0, metavar="MIN", help="Save a checkpoint at least this often."),
    max_minutes: Optional[float] = typer.Option(None, metavar="MIN", help="Stop (with a checkpoint) after this many minutes."),
    seed: int = typer.Option(0, metavar="N", help="Seed of the training data and the ID assignment."),
    threads: Optional[int] = typer.Option(
        None, min=1, metavar="N",
        help="CPU threads per training process (default: OMP_NUM_THREADS, else the CPUs it may use)."),
    force: bool = typer.Option(False, "--force",
                               help="Resume a run with other --steps, --lr, --data, ... (from the current step on)."),
) -> None:
    """Train (or resume) an STMA model.

    `stma weights convert OUT/best DIR` turns the result into weights.
    """
    with reporting_errors():
        if not (math.isfinite(lr) and lr > 0):
            raise UsageError(f"--lr {lr}: expected a finite number > 0")
        for name, value in (("--checkpoint-minutes", checkpoint_minutes), ("--max-minutes", max_minutes)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} {value}: expected a finite number >= 0")
        from stma_cli.hub import read_config, resolve_weights
        from stma_cli.model import STMAConfig
        from stma_cli.threads import use_threads
        from stma_cli.train.loop import (TrainConfig, default_warmup, parse_mem_sizes, parse_skip_schedule,
                                        train as run_training)
        from stma_cli.train.validation import ValidationEvaluator

        if config not in STMAConfig.PRESETS:
            raise UsageError(f"--config {config!r}: expected one of {', '.join(STMAConfig.PRESETS)}")
        model_config = read_config(resolve_weights(init).path) if init else STMAConfig.preset(config)
        if max_objects > model_config.num_ids:
            raise UsageError(f"--max-objects {max_objects}: the model's ID table holds at most "
                             f"{model_config.num_ids} objects ({init or '--config ' + config})")
        settings = TrainConfig(out=out, model=config, data=data, steps=steps, batch=batch, crop=crop, frames=frames,
                               mem_size=parse_mem_sizes(mem_size), skip_schedule=parse_skip_schedule(skip_schedule),
                               max_objects=max_objects, lr=lr,
                               warmup=default_warmup(steps) if warmup is None else warmup, init=init,
                               train_only=tuple(p for p in (train_only or "").split(",") if p), workers=workers,
                               device=device, amp=amp, eval_every=eval_every,
                               checkpoint_minutes=checkpoint_minutes, max_minutes=max_minutes, seed=seed)
        evaluator = None
        if eval_sequences or eval_long_sequences:
            evaluator = ValidationEvaluator(out / "validation", eval_sequences, eval_long_sequences)
        use_threads(threads)
        state = run_training(settings, evaluate=evaluator, log=lambda line: typer.echo(line, err=True), force=force)
        typer.echo(f"step {state['step']}: checkpoint in {out / 'checkpoint'}", err=True)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("train")(train)
