"""Rich tables, JSON and an optional matplotlib plot of a :class:`~gmiseg_edge.bench.latency.BenchResult`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rich.table import Table

from gmiseg_edge.atomic import atomic_path
from gmiseg_edge.bench.latency import STAGES, BenchResult
from gmiseg_edge.manifest import write_json_atomic

NOT_AVAILABLE = "not available (matplotlib is not installed: pip install 'gmiseg-edge[plot]')"


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def bench_tables(result: BenchResult) -> list[Table]:
    """Three tables: per-stage p50 with status, size and memory; end-to-end latency and throughput; ratios."""
    env = result.environment
    stages = Table(title=f"{result.model} on {env['cpu']} ({env['cores_usable']} cores, threads "
                         f"{env['threads'] or 'default'}), {result.config['runs']} interleaved runs: p50 ms per stage")
    for column in ("variant", "status", "preprocess", "encoder", "decoder", "postprocess", "graphs MB", "load MiB"):
        stages.add_column(column, overflow="fold")
    e2e = Table(title="end to end, ms: cold prompt (encode + decode) and cached-image prompt (decode only)")
    for column in ("variant", "cold min", "p50", "p90", "p99", "max", "cached p50", "cached p99", "cold/cached",
                   "images/s", "prompts/s"):
        e2e.add_column(column)
    e2e.caption = _caption(result)
    for row in result.rows:
        size = "-" if row.model_bytes is None else f"{row.model_bytes / 1e6:.1f}"
        if not row.timed:
            stages.add_row(row.label, f"{row.status}: {row.reason}" if row.reason else row.status, *"----", size, "-")
            continue
        stats, rate = row.stats(), row.throughput()
        load = "-" if row.load_rss_mib is None else f"{row.load_rss_mib:.0f}"
        stages.add_row(row.label, row.status, *(_ms(stats[s]["p50"]) for s in STAGES[:4]), size, load)
        cold, cached = stats["cold_prompt"], stats["cached_prompt"]
        e2e.add_row(row.label, *(_ms(cold[k]) for k in ("min", "p50", "p90", "p99", "max")), _ms(cached["p50"]),
                    _ms(cached["p99"]), f"{row.cold_over_cached():.1f}x", f"{rate['images_per_s']:.2f}",
                    f"{rate['prompts_per_s']:.2f}")
    return [stages, e2e, ratio_table(result)]


def ratio_table(result: BenchResult) -> Table:
    """The side-by-side ratios of :meth:`BenchResult.ratios` (p50s of this run)."""
    table = Table(title="measured side by side in this run (p50): encoder speed-up, decoder, cached vs cold prompt")
    for column in ("variant", "encoder ms", "vs torch eager", "vs fp32", "decoder ms", "cold prompt ms",
                   "cached prompt / cold"):
        table.add_column(column)

    def times(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    for r in result.ratios():
        table.add_row(r["variant"], _ms(r["encoder_ms"]), times(r["encoder_speedup_vs_torch_eager"]),
                      times(r["encoder_speedup_vs_fp32"]), _ms(r["decoder_ms"]), _ms(r["cold_prompt_ms"]),
                      f"{r['cached_prompt_share_of_cold']:.1%}")
    return table


def _caption(result: BenchResult) -> str:
    return (f"peak RSS {result.peak_rss_mib:.0f} MiB (ru_maxrss: process high-water, all variants loaded); "
            "load MiB: RSS growth while loading a variant")


def write_json(data: dict, path: str | Path) -> Path:
    """Write ``data`` as indented JSON, atomically (a failed write leaves no half file)."""
    path = Path(path)
    write_json_atomic(path, data)
    return path


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
