"""What the training loop reports, and the callback interface through which it reports it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gmiseg_edge.adapters import AdapterConfig, ParameterCounts


@dataclass(frozen=True)
class StartInfo:
    """The run about to start (``start_epoch`` > 0 when resumed)."""

    model: str
    adapter: AdapterConfig
    counts: ParameterCounts
    n_train: int
    n_val: int
    epochs: int
    start_epoch: int
    steps_per_epoch: int
    device: str
    world_size: int
    rank: int
    checkpoint: Path


@dataclass(frozen=True)
class StepInfo:
    """One optimiser step: ``epoch`` (1-based), ``step`` of ``steps`` in it, this process's batch loss."""

    epoch: int
    step: int
    steps: int
    loss: float
    rank: int


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch: mean training loss over all processes, validation Dice (None without --val)."""

    epoch: int
    loss: float
    val_dice: float | None
    best: bool
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """A finished run: the adapter written, its history (resumed epochs included) and the best epoch."""

    out: Path
    checkpoint: Path
    counts: ParameterCounts
    history: tuple[EpochRecord, ...]
    best_epoch: int
    best_dice: float | None
    stopped_early: bool
    resumed_from: int
    seconds: float
    rank: int = 0


class Callback:
    """Hooks called on every process (check ``rank`` to act once); an exception raised in one stops the run
    (the last epoch checkpoint stays, the output adapter is not written)."""

    def on_start(self, info: StartInfo) -> None:
        """Before the first step."""

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        """Before the first step of ``epoch`` (1-based), which has ``steps`` steps on this process."""

    def on_step(self, step: StepInfo) -> None:
        """After each optimiser step."""

    def on_epoch_end(self, record: EpochRecord) -> None:
        """After each epoch's validation and checkpoint."""

    def on_end(self, result: TrainResult) -> None:
        """After the final adapter is written."""

    def close(self) -> None:
        """Always last, even when the run failed."""
