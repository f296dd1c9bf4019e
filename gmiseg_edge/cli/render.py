"""Everything the command prints as tables (rich): the model zoo, export validation, evaluation, benchmarks.

The only module besides the command itself that knows rich; the library returns plain results.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from rich.table import Table
from rich.text import Text

from gmiseg_edge.jobs.bench.latency import STAGES, BenchResult


def fmt(value: float, digits: int = 3) -> str:
    return "inf" if math.isinf(value) else ("nan" if math.isnan(value) else f"{value:.{digits}f}")


def export_table(result) -> Table:
    table = Table(title=Text(f"{result.folder}: ONNX Runtime vs PyTorch FP32 on the sample cases"))
    for column in ("precision", "cases", "embedding max abs", "logits max abs", "min mask Dice", "verdict"):
        table.add_column(column)
    for precision, report in result.reports.items():
        data = report.to_dict()
        table.add_row(
            precision, str(len(report.cases)), f"{data['embedding_max_abs']:.2e}", f"{data['logits_max_abs']:.2e}",
            f"{data['mask_dice_min']:.4f}", "[green]passed[/]" if report.passed else "[red]failed[/]",
        )
    return table


def eval_table(result, title: str, reference: bool = False, instance_rows: bool = True) -> Table:
    """Per-case rows (instance cases only summarised unless ``instance_rows``) and per-dataset summaries."""
    table = Table(title=Text(f"{title}; NSD at {result.config.get('nsd_tolerance_mm', 2.0):g} mm"))
    notes = any(c.scores is not None and c.note for c in result.cases)  # e.g. the stops of propagation
    columns = ["case", "dataset", "Dice", "Jaccard", "ASD mm", "HD95 mm", "NSD"]
    columns += ["vs torch"] if reference else []
    columns += ["note"] if notes else []
    for column in columns:
        # the case (dataset/structure/slice) is never cut: "mean ± std (n=134)" on one line
        table.add_column(column, min_width=18 if column == "case" else None,
                         overflow="fold" if column == "case" else "ellipsis")
    for case in result.cases:
        if not instance_rows and "/instance_" in case.name:
            continue
        s = case.scores
        nsd = "-" if case.nsd is None else fmt(case.nsd, 4)
        values = [fmt(s.dice, 4), fmt(s.jaccard, 4), fmt(s.asd, 2), fmt(s.hd95, 2), nsd] if s else [
            Text(case.note), "-", "-", "-", "-"]
        extra = [] if not reference else ["-" if case.agreement is None else fmt(case.agreement, 4)]
        extra += [Text(case.note if s else "")] if notes else []
        table.add_row(Text(case.name), Text(case.dataset), *values, *extra)
    table.add_section()
    for name, summary in result.summary.items():
        digits = {"dice": 4, "jaccard": 4, "asd": 2, "hd95": 2, "nsd": 4}
        cells = [f"{fmt(summary[m]['mean'], d)} ± {fmt(summary[m]['std'], d)}" if m in summary else "-"
                 for m, d in digits.items()]
        table.add_row(f"[bold]mean ± std (n={summary['n']})", Text(name, style="bold"), *cells,
                      *([""] if reference else []), *([""] if notes else []))
    return table


def failures_table(failed) -> Table:
    """The inputs a batch could not segment (``FileResult``s with ``error``), one row each."""
    folder = Path(os.path.commonpath([str(r.image.parent) for r in failed]))
    table = Table(title=Text(f"{len(failed)} input(s) failed (nothing written for them), in {folder}"),
                  title_style="bold red")
    table.add_column("input", overflow="fold")
    table.add_column("error", overflow="fold", ratio=1)
    for r in failed:
        reason = r.error.replace(f"{r.image}: ", "", 1)
        table.add_row(Text(str(r.image.relative_to(folder))), Text(reason))
    return table


def ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def bench_tables(result: BenchResult) -> list[Table]:
    """Three tables: per-stage p50 with status, size and memory; end-to-end latency and throughput; ratios."""
    env = result.environment
    stages = Table(title=Text(f"{result.model} on {env['cpu']} ({env['cores_usable']} cores, threads "
                              f"{env['threads'] or 'default'}), {result.config['runs']} interleaved runs: p50 ms "
                              "per stage"))
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
            stages.add_row(Text(row.label), Text(f"{row.status}: {row.reason}" if row.reason else row.status), *"----",
                           size, "-")
            continue
        stats, rate = row.stats(), row.throughput()
        load = "-" if row.load_rss_mib is None else f"{row.load_rss_mib:.0f}"
        stages.add_row(row.label, row.status, *(ms(stats[s]["p50"]) for s in STAGES[:4]), size, load)
        cold, cached = stats["cold_prompt"], stats["cached_prompt"]
        e2e.add_row(row.label, *(ms(cold[k]) for k in ("min", "p50", "p90", "p99", "max")), ms(cached["p50"]),
                    ms(cached["p99"]), f"{row.cold_over_cached():.1f}x", f"{rate['images_per_s']:.2f}",
                    f"{rate['prompts_per_s']:.2f}")
    return [stages, e2e, ratio_table(result)] + ([task_table(result)] if result.tasks else [])


def task_table(result: BenchResult) -> Table:
    """Each task decoder's size and its prompt latency on an already-encoded image (ONNX Runtime fp32)."""
    table = Table(title="task decoders (ort fp32): prompt on an already-encoded image, p50 ms")
    for column in ("decoder", "MB on disk", "p50 ms", "encoder runs"):
        table.add_column(column)
    for row in result.tasks:
        data = row.to_dict()
        table.add_row(row.task, f"{row.bytes / 1e6:.1f}", ms(data["cached_prompt_p50_ms"]), str(row.encoder_runs))
    table.caption = "encoder runs: caused by that decoder's calls (0: the embedding is shared by every task)"
    return table


def ratio_table(result: BenchResult) -> Table:
    """The side-by-side ratios of :meth:`BenchResult.ratios` (p50s of this run)."""
    table = Table(title="measured side by side in this run (p50): encoder speed-up, decoder, cached vs cold prompt")
    for column in ("variant", "encoder ms", "vs torch eager", "vs fp32", "decoder ms", "cold prompt ms",
                   "cached prompt / cold"):
        table.add_column(column)

    def times(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    for r in result.ratios():
        table.add_row(r["variant"], ms(r["encoder_ms"]), times(r["encoder_speedup_vs_torch_eager"]),
                      times(r["encoder_speedup_vs_fp32"]), ms(r["decoder_ms"]), ms(r["cold_prompt_ms"]),
                      f"{r['cached_prompt_share_of_cold']:.1%}")
    return table


def _caption(result: BenchResult) -> str:
    return (f"peak RSS {result.peak_rss_mib:.0f} MiB (ru_maxrss: process high-water, all variants loaded); "
            "load MiB: RSS growth while loading a variant")
