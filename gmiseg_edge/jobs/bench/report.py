"""A matplotlib plot of a :class:`~gmiseg_edge.jobs.bench.latency.BenchResult` (its tables are in
:mod:`gmiseg_edge.cli.render`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from gmiseg_edge.core.files import atomic_path
from gmiseg_edge.jobs.bench.latency import STAGES, BenchResult

NOT_AVAILABLE = "not available (matplotlib is not installed: pip install 'gmiseg-edge[plot]')"


def plot_bench(result: BenchResult, path: str | Path) -> str:
    """A bar chart of p50 per stage per timed variant; returns the path written or :data:`NOT_AVAILABLE`."""
    if importlib.util.find_spec("matplotlib") is None:
        return NOT_AVAILABLE
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in result.rows if row.timed]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        stats = row.stats()
        ax.bar([s + i * width for s in range(len(STAGES))], [stats[s]["p50"] for s in STAGES], width, label=row.label)
    ax.set_xticks([s + 0.4 - width / 2 for s in range(len(STAGES))], STAGES)
    ax.set_ylabel("p50 latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"{result.model}: latency per stage")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return str(path)
