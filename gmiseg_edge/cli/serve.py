"""The serving commands: ``serve`` (a Triton server through PyTriton), ``export-triton`` (a model repository for a
stock Triton) and the ``--server`` form of ``bench``. Registered on the app in :mod:`gmiseg_edge.cli`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from gmiseg_edge.cli.parse import csv_list, parse_named_folder
from gmiseg_edge.cli.render import ms
from gmiseg_edge.serve.app import ServeConfig, run_server
from gmiseg_edge.serve.bench import SERVER_STAGES, ServerBenchResult, run_server_bench
from gmiseg_edge.serve.protocol import MAX_PIXELS, MAX_POINTS, MAX_SIDE, MAX_SUPPORT_PIXELS, ServeLimits
from gmiseg_edge.serve.repository import RepositoryOptions, write_repository


def serve(
    model_dir: Annotated[Path, typer.Option(help="model folder written by `gmiseg-edge export`")],
    http_port: Annotated[int, typer.Option(help="Triton's HTTP/REST port")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="Triton's gRPC port")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Triton's Prometheus metrics port (/metrics)")] = 8002,
    address: Annotated[str, typer.Option(help="address to bind: 127.0.0.1 this machine only, 0.0.0.0 all")] = (
        "127.0.0.1"),
    backend: Annotated[str, typer.Option(help="auto, ort or trt")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8")] = "fp32",
    threads: Annotated[int | None, typer.Option(help="CPU threads per run (default: the backend's)")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="disk embedding cache (kept across restarts)")] = None,
    cache_max_gb: Annotated[float | None, typer.Option(help="bound of the disk cache in GB")] = None,
    max_batch: Annotated[int, typer.Option(help="encode: largest dynamic batch (1: no batching)")] = 8,
    queue_delay_us: Annotated[int, typer.Option(help="encode: longest wait for a batch, microseconds")] = 5000,
    instances: Annotated[int, typer.Option(help="decode/segment: requests run at once")] = 2,
    support: Annotated[list[str] | None, typer.Option(help="NAME=DIR: serve a support set (a dataset folder of "
                                                      "examples) as NAME of model segment_support; repeatable")] = None,
    task: Annotated[list[str] | None, typer.Option(hidden=True, help="deprecated name of --support")] = None,
    max_points: Annotated[int, typer.Option(help="prompt points a request may carry")] = MAX_POINTS,
    max_pixels: Annotated[int, typer.Option(help="pixels of an image a request may carry")] = MAX_PIXELS,
    max_side: Annotated[int, typer.Option(help="longest image side a request may carry")] = MAX_SIDE,
    max_support_pixels: Annotated[int, typer.Option(help="segment_support: query pixels x supports of the set a "
                                                    "request may take")] = MAX_SUPPORT_PIXELS,
) -> None:
    """Serve a model folder through a real Triton Inference Server (PyTriton): models encode, decode, segment (and
    segment_support with --support)."""
    from gmiseg_edge.cli import _user_errors, say, warn

    if task:
        warn("--task NAME=DIR is deprecated and goes in the next release: use --support NAME=DIR (--task names a "
             "task decoder elsewhere)")
    with _user_errors():
        support_sets = ([parse_named_folder(item, "--support") for item in support or []]
                        + [parse_named_folder(item, "--task") for item in task or []])
        config = ServeConfig(model_dir=model_dir, http_port=http_port, grpc_port=grpc_port,
                             metrics_port=metrics_port, address=address, backend=backend, precision=precision,
                             threads=threads, cache_dir=cache_dir, cache_max_gb=cache_max_gb, max_batch=max_batch,
                             queue_delay_us=queue_delay_us, instances=instances, support_sets=tuple(support_sets),
                             limits=ServeLimits(max_points=max_points, max_pixels=max_pixels, max_side=max_side,
                                                max_support_pixels=max_support_pixels))
        run_server(config, log=say)


def export_triton(
    model_dir: Annotated[Path, typer.Option(help="model folder written by `gmiseg-edge export`")],
    out: Annotated[Path, typer.Option(help="model repository folder to write")],
    precision: Annotated[str | None, typer.Option(help="comma-separated (default: every validated one)")] = None,
    format: Annotated[str, typer.Option(help="onnxruntime, or tensorrt (engines built with `gmiseg-edge build`)")] = (
        "onnxruntime"),
    kind: Annotated[str, typer.Option(help="instance kind of the encoder and decoder: gpu or cpu")] = "gpu",
    encoder_instances: Annotated[int, typer.Option(help="encoder instances per device")] = 1,
    decoder_instances: Annotated[int, typer.Option(help="decoder instances per device")] = 2,
    max_batch: Annotated[int, typer.Option(help="encoder: largest dynamic batch")] = 8,
    force: Annotated[bool, typer.Option("--force", help="replace an existing repository")] = False,
) -> None:
    """Write a Triton model repository (encoder/decoder per precision, a BLS segment pipeline) for a stock Triton."""
    from gmiseg_edge.cli import _user_errors, say

    with _user_errors():
        options = RepositoryOptions(model_dir=model_dir, out=out, precisions=csv_list(precision) if precision else None,
                                    format=format, kind=kind, encoder_instances=encoder_instances,
                                    decoder_instances=decoder_instances, max_batch=max_batch, force=force)
        written = write_repository(options, log=say)
    say(f"wrote {len(written)} models to {out}: {', '.join(written)}")


def bench_server(url: str, model_dir: Path | None, runs: int, warmup: int, threads: int | None) -> ServerBenchResult:
    """``bench --server``: time the served models (and the in-process runtime when ``model_dir`` is given)."""
    from gmiseg_edge.cli import console

    with console.status(f"benchmarking {url} ..."):
        result = run_server_bench(url, runs=runs, warmup=warmup, model_dir=model_dir, threads=threads)
    console.print(server_bench_table(result))
    return result


def server_bench_table(result: ServerBenchResult) -> Table:
    """One row per stage and place: min/p50/p90/p99/max ms and calls per second."""
    table = Table(title=Text(f"{result.url}: {result.case} {result.image_shape}, {result.runs} interleaved runs, "
                             "ms over gRPC (server) and in this process"))
    for column in ("stage", "where", "min", "p50", "p90", "p99", "max", "calls/s"):
        table.add_column(column)
    for place, stages in result.stats().items():
        for stage in SERVER_STAGES:
            s = stages[stage]
            rate = len(result.times[place][stage]) / sum(result.times[place][stage])
            table.add_row(stage, place, *(ms(s[k]) for k in ("min", "p50", "p90", "p99", "max")), f"{rate:.2f}")
    return table
