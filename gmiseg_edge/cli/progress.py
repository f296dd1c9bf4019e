"""Rich progress displays: a bar per file for file segmentation (advancing per slice), a bar per step for a job of
several steps (the main job)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: ``(step, done, total, detail)``: see :func:`step_progress`
StepCallback = Callable[[str, int, int, str], None]


@contextlib.contextmanager
def file_progress(console: Console | None = None) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar (one task per file, advancing per slice) as a ``(name, done, total)`` callback; file
    names are shown verbatim (no rich markup read in them)."""
    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=console, transient=False)
    tasks: dict[str, TaskID] = {}

    def update(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=total)
        bar.update(tasks[name], completed=done, total=total)

    with bar:
        yield update


@contextlib.contextmanager
def step_progress(console: Console | None = None, quiet: bool = False) -> Iterator[StepCallback]:
    """A rich progress display for a job of several steps as a ``(step, done, total, detail)`` callback: a bar per
    step with done/total, elapsed and remaining time, and the unit just done (verbatim). ``quiet``: nothing shown
    (for logs)."""
    if quiet:
        yield lambda step, done, total, detail: None
        return
    bar = Progress(SpinnerColumn(finished_text="done"), TextColumn("{task.description}", markup=False), BarColumn(),
                   MofNCompleteColumn(), TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("remaining"),
                   TimeRemainingColumn(), TextColumn("{task.fields[detail]}", markup=False), console=console,
                   transient=False)
    tasks: dict[str, TaskID] = {}

    def update(step: str, done: int, total: int, detail: str) -> None:
        if step not in tasks:
            tasks[step] = bar.add_task(step, total=total, detail="")
        bar.update(tasks[step], completed=done, total=total, detail=_short(detail))

    with bar:
        yield update


def _short(text: str, width: int = 60) -> str:
    """``text`` on one line, at most ``width`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"
