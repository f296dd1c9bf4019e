"""``gmiseg-edge adapt`` and ``gmiseg-edge add-task``: task adapters on the decoder side (DESIGN §11).

Registered on the main app by :mod:`gmiseg_edge.cli`; the torch side is imported only when they run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from gmiseg_edge.cli import _user_errors, app, console, say
from gmiseg_edge.data.intensity import parse_window


@app.command()
def adapt(
    model_dir: Annotated[Path, typer.Option(help="model folder written by `gmiseg-edge export`")],
    support: Annotated[Path, typer.Option(help="support set: a dataset folder (images/ + masks/, or dataset.json)")],
    task: Annotated[str, typer.Option(help="task name (a-z, 0-9, _ and -): the decoder becomes decoders/<task>.onnx")],
    out: Annotated[Path | None, typer.Option(help="also write the adapter file here (default: only the model "
                                             "folder's decoders/<task>.safetensors; with --no-add, adapters/)")] = None,
    adapter: Annotated[str, typer.Option(help="adapter kind: loose (Loose LoRA) or lora")] = "loose",
    rank: Annotated[int, typer.Option(help="adapter rank")] = 4,
    time_budget: Annotated[float, typer.Option(help="seconds of training (then the held-back part is scored)")] = 10.0,
    seed: Annotated[int, typer.Option(help="random seed (split, prompts, initialisation)")] = 0,
    patience: Annotated[int, typer.Option(help="epochs without a better held-back Dice before stopping")] = 10,
    prompt: Annotated[str, typer.Option(help="training prompts: box, points or mixed")] = "mixed",
    label: Annotated[int | None, typer.Option(help="label of interest (default: every non-zero label)")] = None,
    window: Annotated[str, typer.Option(help="non-uint8: percentile, minmax, a CT preset, or low,high")] = "percentile",
    cache_dir: Annotated[Path | None, typer.Option(
        help="disk embedding cache (default: the user cache's embeddings/)")] = None,
    no_add: Annotated[bool, typer.Option("--no-add", help="only write the adapter; do not add its decoder")] = False,
    add_unchanged: Annotated[bool, typer.Option(
        "--add-unchanged", help="add the task even when no epoch beat the untouched decoder on the held-back "
        "supports (its masks then equal the base decoder's)")] = False,
    threads: Annotated[int | None, typer.Option(help="CPU threads of the encoder runs")] = None,
) -> None:
    """Train a task adapter (LoRA / Loose LoRA on the mask decoder) from a support set on cached embeddings, and
    add its decoder to the model folder: the encoder and its embedding cache stay shared by every task."""
    # torch: the training and export side is imported only by the commands that use it
    from gmiseg_edge.jobs.adapt import AdaptOptions, default_cache_dir
    from gmiseg_edge.jobs.adapt import adapt as run_adapt

    with _user_errors():
        options = AdaptOptions(
            model_dir=model_dir, support=support, task=task, out=out, kind=adapter, rank=rank,
            time_budget=time_budget, seed=seed, patience=patience, prompt=prompt, label=label,
            window=parse_window(window), cache_dir=cache_dir or default_cache_dir(),
            add=not no_add, add_unchanged=add_unchanged, threads=threads,
        )
        bar = Progress(TextColumn("training {task.description}", markup=False), BarColumn(),
                       TextColumn("{task.fields[status]}", markup=False),
                       TimeElapsedColumn(), console=console, transient=True)
        bar_task = bar.add_task(task, total=time_budget, status="")

        def progress(record) -> None:
            val = "" if record.val_dice is None else f", held-back Dice {record.val_dice:.4f}"
            bar.update(bar_task, completed=min(record.seconds, time_budget),
                       status=f"epoch {record.epoch}, loss {record.loss:.4f}{val}")

        with bar:
            result = run_adapt(options, log=say, progress=progress)
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items() if k != "total")
    say(f"adapt took {result.seconds['total']:.1f} s ({parts})")


@app.command("add-task")
def add_task(
    model_dir: Annotated[Path, typer.Option(help="model folder written by `gmiseg-edge export`")],
    task: Annotated[str, typer.Option(help="task name (a-z, 0-9, _ and -)")],
    adapter: Annotated[Path, typer.Option(help="task adapter (.safetensors) from `gmiseg-edge adapt --no-add`")],
) -> None:
    """Export a task adapter's decoder into the model folder (validated against PyTorch on the sample cases)."""
    # torch: the training and export side is imported only by the commands that use it
    from gmiseg_edge.export.task_decoder import add_task_decoder

    with _user_errors():
        add_task_decoder(model_dir, task, adapter, log=say)
