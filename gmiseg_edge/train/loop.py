"""The training loop: adapters on a frozen SAM-family model, focal + Dice loss, AdamW, checkpoint per epoch,
resume, early stopping on validation Dice, and the final adapter file (safetensors).

Determinism: the visiting order of epoch ``e`` is a permutation seeded by ``(seed, e)`` and the augmentation
and prompt of the sample at position ``p`` of it draw from ``np.random.default_rng([seed, 0, e, p])``, so
resuming from an epoch checkpoint replays exactly what the uninterrupted run does.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from gmiseg_edge.adapters import (
    AdapterConfig,
    AdapterError,
    adapter_sites,
    adapter_state_dict,
    apply_adapter,
    inject_adapters,
    parameter_counts,
    save_adapter,
)
from gmiseg_edge.core.transforms import PreprocessConfig
from gmiseg_edge.data.intensity import Window
from gmiseg_edge.models.build import build_model, checkpoint_sha256
from gmiseg_edge.models.zoo import DEFAULT_MODEL, get_spec
from gmiseg_edge.train import distributed
from gmiseg_edge.train.augment import AugmentConfig
from gmiseg_edge.train.callbacks import Callback, EpochRecord, StartInfo, StepInfo, TrainResult
from gmiseg_edge.train.checkpoint import (
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    load_tensors,
    save_checkpoint,
)
from gmiseg_edge.train.losses import segmentation_loss
from gmiseg_edge.train.prompts import PromptConfig
from gmiseg_edge.train.samples import TrainSample, load_samples, make_example
from gmiseg_edge.train.segmenter import PromptedSam, set_adapter_training, validation_dice

TRAIN_STREAM = 0  # the training examples' random stream: np.random.default_rng([seed, TRAIN_STREAM, epoch, pos])
@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. ``patience``: epochs without a better validation Dice before stopping
    (None: never; ignored without ``val``). ``init``: start from an existing adapter file. ``resume``: continue
    from the checkpoint beside ``out`` (:func:`checkpoint_path`)."""

    data: Path
    out: Path
    model: str = DEFAULT_MODEL
    val: Path | None = None
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    base_checkpoint: Path | None = None
    init: Path | None = None
    epochs: int = 10
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    patience: int | None = 5
    resume: bool = False
    window: Window = "percentile"
    axis: int = 2
    label: int | None = None
    prompts: PromptConfig = field(default_factory=PromptConfig)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    focal_weight: float = 1.0
    dice_weight: float = 1.0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("data", "out", "val", "base_checkpoint", "init"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 (or None), got {self.patience}")

    def fingerprint(self, samples: Sequence[TrainSample]) -> dict[str, Any]:
        """The settings a resumed run must share with the checkpoint (JSON-normalised)."""
        names = "\n".join(f"{s.name}:{s.image.shape}" for s in samples)
        data = {
            "model": self.model,
            "adapter": self.adapter.to_dict(),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "prompts": asdict(self.prompts),
            "augmentation": asdict(self.augmentation),
            "loss_weights": [self.focal_weight, self.dice_weight],
            "samples": hashlib.sha256(names.encode()).hexdigest(),
        }
        return json.loads(json.dumps(data))


@dataclass
class _State:
    """What a checkpoint restores besides the tensors."""

    epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    best_dice: float = -1.0
    best_epoch: int = 0
    best_adapter: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    stopped: bool = False

    def end_epoch(self, val: float | None, sam: torch.nn.Module, patience: int | None) -> bool:
        """Count the epoch just run; keep the adapter if ``val`` is the best Dice so far (True), else count
        it towards early stopping."""
        self.epoch += 1
        if val is None:
            return False
        if val > self.best_dice:
            self.best_dice, self.best_epoch, self.bad_epochs = val, self.epoch, 0
            self.best_adapter = {k: v.detach().cpu().clone() for k, v in adapter_state_dict(sam).items()}
            return True
        self.bad_epochs += 1
        self.stopped = patience is not None and self.bad_epochs >= patience
        return False


def train(config: TrainConfig, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train adapters as ``config`` says and write the adapter file ``config.out`` (rank 0 only, atomically,
    at the very end: a failed run never touches an existing file there). Works in one process (CPU or GPU)
    or under ``torchrun`` with DistributedDataParallel (gloo on the CPU)."""
    ctx = distributed.setup(config.device)
    try:
        return _train(config, list(callbacks), ctx)
    finally:
        for callback in callbacks:
            callback.close()
        distributed.teardown(ctx)


def _prepare_model(config: TrainConfig, base_sha256: str) -> tuple[torch.nn.Module, AdapterConfig]:
    torch.manual_seed(config.seed)
    sam = build_model(config.model, config.base_checkpoint)
    if config.init is None:
        inject_adapters(sam, config.adapter)
        return sam, config.adapter
    adapter = apply_adapter(sam, config.init, config.model, base_sha256)
    if adapter != config.adapter:
        raise AdapterError(f"{config.init}: --init adapter is {adapter}, but this run asks for {config.adapter}")
    return sam, adapter


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; the output must be an adapter file path (e.g. adapter.safetensors)")


def _train(config: TrainConfig, callbacks: list[Callback], ctx: distributed.DistContext) -> TrainResult:
    started = time.perf_counter()
    _check_out(config.out)
    spec = get_spec(config.model)
    options = {"window": config.window, "axis": config.axis, "label": config.label}
    samples = load_samples(config.data, **options)
    val_samples = load_samples(config.val, **options) if config.val is not None else []
    base_sha256 = checkpoint_sha256(config.model, config.base_checkpoint)
    sam, adapter = _prepare_model(config, base_sha256)
    sam.to(ctx.device)
    trainable = [p for p in sam.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    fingerprint = config.fingerprint(samples)
    ckpt = checkpoint_path(config.out)
    state = _State()
    if config.resume:
        state = _restore(ckpt, fingerprint, config.model, base_sha256, sam, optimizer, ctx)
    resumed_from = state.epoch
    net: torch.nn.Module = PromptedSam(sam)
    if ctx.distributed:
        net = DistributedDataParallel(net, broadcast_buffers=False)  # the base (batch norm included) is frozen
    n_positions = len(distributed.epoch_order(len(samples), config.seed, 0, ctx.world_size))
    steps = -(-len(distributed.shard(n_positions, ctx.rank, ctx.world_size)) // config.batch_size)
    counts = parameter_counts(sam)
    info = StartInfo(
        model=config.model, adapter=adapter, counts=counts, n_train=len(samples), n_val=len(val_samples),
        epochs=config.epochs, start_epoch=state.epoch, steps_per_epoch=steps, device=str(ctx.device),
        world_size=ctx.world_size, rank=ctx.rank, checkpoint=ckpt,
    )
    for callback in callbacks:
        callback.on_start(info)
    preprocess_config = spec.preprocess
    while state.epoch < config.epochs and not state.stopped:
        epoch_start = time.perf_counter()
        loss = _run_epoch(config, samples, net, optimizer, preprocess_config, state.epoch, steps, ctx, callbacks)
        val = None
        if val_samples:
            val = validation_dice(sam, val_samples, preprocess_config, config.prompts, config.seed, ctx)
        best = state.end_epoch(val, sam, config.patience)
        record = EpochRecord(state.epoch, loss, val, best, time.perf_counter() - epoch_start)
        state.history.append(record)
        if ctx.is_main:
            _save_state(ckpt, fingerprint, config.model, base_sha256, sam, optimizer, state, ctx)
        distributed.barrier(ctx)
        for callback in callbacks:
            callback.on_epoch_end(record)
    final = state.best_adapter if val_samples and state.best_adapter is not None else adapter_state_dict(sam)
    if ctx.is_main:
        save_adapter(config.out, final, config=adapter, base_model_name=config.model, base_sha256=base_sha256,
                     sites=adapter_sites(sam))
    distributed.barrier(ctx)
    result = TrainResult(
        out=config.out,
        checkpoint=ckpt,
        counts=counts,
        history=tuple(state.history),
        best_epoch=state.best_epoch if val_samples else state.epoch,
        best_dice=state.best_dice if val_samples else None,
        stopped_early=state.stopped,
        resumed_from=resumed_from,
        seconds=time.perf_counter() - started,
        rank=ctx.rank,
    )
    for callback in callbacks:
        callback.on_end(result)
    return result


def _run_epoch(
    config: TrainConfig,
    samples: Sequence[TrainSample],
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    preprocess_config: PreprocessConfig,
    epoch: int,
    steps: int,
    ctx: distributed.DistContext,
    callbacks: Sequence[Callback],
) -> float:
    """One epoch over this process's shard; returns the mean loss over all processes' samples."""
    sam = net.module.sam if isinstance(net, DistributedDataParallel) else net.sam
    set_adapter_training(sam, True)
    order = distributed.epoch_order(len(samples), config.seed, epoch, ctx.world_size)
    positions = distributed.shard(len(order), ctx.rank, ctx.world_size)
    loss_sum = 0.0
    for callback in callbacks:
        callback.on_epoch_start(epoch + 1, steps)
    for step in range(steps):
        batch = positions[step * config.batch_size : (step + 1) * config.batch_size]
        examples = [
            make_example(
                samples[order[p]], preprocess_config, np.random.default_rng([config.seed, TRAIN_STREAM, epoch, p]),
                config.augmentation, config.prompts,
            )
            for p in batch
        ]
        images = torch.from_numpy(np.stack([e.image for e in examples])).to(ctx.device)
        targets = torch.from_numpy(np.stack([e.target for e in examples])).to(ctx.device)
        logits = net(images, [e.prompt for e in examples])
        loss = segmentation_loss(logits, targets, config.focal_weight, config.dice_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        loss_sum += value * len(batch)
        for callback in callbacks:
            callback.on_step(StepInfo(epoch + 1, step + 1, steps, value, ctx.rank))
    total, count = distributed.all_reduce_sum(ctx, [loss_sum, float(len(positions))])
    return total / count


def _save_state(
    path: Path,
    fingerprint: dict[str, Any],
    model: str,
    base_sha256: str,
    sam: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: _State,
    ctx: distributed.DistContext,
) -> None:
    rng: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
    if ctx.device.type == "cuda":
        rng["cuda_rng"] = torch.cuda.get_rng_state(ctx.device)
    save_checkpoint(
        path,
        {
            "fingerprint": json.dumps(fingerprint, sort_keys=True),
            "base_model": model,
            "base_sha256": base_sha256,
            "epoch": state.epoch,
            "adapter": {k: v.detach().cpu() for k, v in adapter_state_dict(sam).items()},
            "optimizer": optimizer.state_dict(),
            **rng,
            "history": [asdict(r) for r in state.history],
            "best_dice": state.best_dice,
            "best_epoch": state.best_epoch,
            "best_adapter": state.best_adapter,
            "bad_epochs": state.bad_epochs,
            "stopped": state.stopped,
        },
    )


def _restore(
    path: Path,
    fingerprint: dict[str, Any],
    model: str,
    base_sha256: str,
    sam: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ctx: distributed.DistContext,
) -> _State:
    saved = load_checkpoint(path, fingerprint, model, base_sha256)
    load_tensors(path, adapter_state_dict(sam), saved["adapter"])
    try:
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        if ctx.device.type == "cuda" and "cuda_rng" in saved:
            torch.cuda.set_rng_state(saved["cuda_rng"], ctx.device)
        history = [EpochRecord(**r) for r in saved["history"]]
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: checkpoint optimizer/RNG state does not fit this run ({exc})") from None
    return _State(
        epoch=int(saved["epoch"]),
        history=history,
        best_dice=float(saved.get("best_dice", -1.0)),
        best_epoch=int(saved.get("best_epoch", 0)),
        best_adapter=saved.get("best_adapter"),
        bad_epochs=int(saved.get("bad_epochs", 0)),
        stopped=bool(saved.get("stopped", False)),
    )

