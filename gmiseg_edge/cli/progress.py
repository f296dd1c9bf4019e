"""A rich progress bar for file segmentation (one task per file, advancing per slice)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


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
