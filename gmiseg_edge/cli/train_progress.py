"""A rich progress display for training: one bar per epoch with the running loss and validation Dice (torch side:
imported by the ``train`` command only)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from gmiseg_edge.train.callbacks import Callback, EpochRecord, StartInfo, StepInfo, TrainResult


class RichProgress(Callback):
    """Shows the run on rank 0 only: what trains, then per epoch steps, mean loss and validation Dice."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.epochs = 0
        self.loss_sum = 0.0
        self.best: float | None = None

    def on_start(self, info: StartInfo) -> None:
        if info.rank != 0:
            return
        self.epochs = info.epochs
        adapter = info.adapter
        where = f"{info.device} x{info.world_size}" if info.world_size > 1 else info.device
        self.console.print(
            f"{info.model} + {adapter.kind} rank {adapter.rank}"
            f"{' (decoder too)' if adapter.include_decoder else ''}: {info.counts}", markup=False, highlight=False,
        )
        self.console.print(
            f"{info.n_train} training samples, {info.n_val} validation samples, {info.steps_per_epoch} steps "
            f"per epoch per process, on {where}; checkpoint {info.checkpoint}", markup=False, highlight=False,
        )
        if info.start_epoch:
            self.console.print(f"resuming after epoch {info.start_epoch}", highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("val Dice {task.fields[val]}"), TimeElapsedColumn(),
            console=self.console,
        )
        self.progress.start()

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        if self.progress is None:
            return
        self.loss_sum = 0.0
        self.task = self.progress.add_task(f"epoch {epoch}/{self.epochs}", total=steps, loss="-", val="-")

    def on_step(self, step: StepInfo) -> None:
        if self.progress is None or self.task is None:
            return
        self.loss_sum += step.loss
        self.progress.update(self.task, advance=1, loss=f"{self.loss_sum / step.step:.4f}")

    def on_epoch_end(self, record: EpochRecord) -> None:
        if self.progress is None or self.task is None:
            return
        val = "-" if record.val_dice is None else f"{record.val_dice:.4f}" + (" (best)" if record.best else "")
        self.progress.update(self.task, loss=f"{record.loss:.4f}", val=val)

    def on_end(self, result: TrainResult) -> None:
        self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
