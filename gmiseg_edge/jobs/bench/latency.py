"""Latency, throughput, memory and model size of every backend/precision of a model folder, in one run.

Each round times, for every variant (the order rotated every round so machine noise hits them alike):
``preprocess`` (check + resize/normalise/pad), ``encoder`` (the backend's encoder alone), ``decoder`` (one
box prompt), ``postprocess`` (logits to the original size, threshold), ``cold_prompt`` (``Predictor.predict``
on an image not in the embedding cache: encode + decode, the end-to-end latency) and ``cached_prompt``
(``predict`` again on the same image: the embedding comes from the cache, only the decoder runs).

A precision is timed only if it was exported and passed its validation against PyTorch; otherwise its row
says ``failed to export`` or ``failed accuracy`` with the reason, and nothing is run. A run in which none of
the requested backend/precision variants can be timed (the PyTorch reference column does not count) is an
error (:class:`NothingMeasuredError`) naming each variant's reason, rather than an empty result. Memory: the process's
resident-set high-water mark (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, all variants together, since it
only grows) and, per variant, how much the current RSS grew while it was loaded (``/proc/self/statm``).
"""

from __future__ import annotations

import importlib.util
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gmiseg_edge.core.errors import GmisegError
from gmiseg_edge.core.manifest import PRECISIONS, Manifest
from gmiseg_edge.core.prediction import SINGLE_OUTPUT, make_prediction
from gmiseg_edge.core.prompts import box_from_mask, make_prompt
from gmiseg_edge.core.transforms import preprocess
from gmiseg_edge.data.samples import load_sample_cases
from gmiseg_edge.jobs.bench.environment import environment
from gmiseg_edge.jobs.bench.tasks import TaskBench, bench_tasks
from gmiseg_edge.runtime import load
from gmiseg_edge.runtime.backends import BACKEND_CHOICES
from gmiseg_edge.runtime.cache import EmbeddingCache
from gmiseg_edge.runtime.images import check_image
from gmiseg_edge.runtime.predictor import Predictor

STAGES = ("preprocess", "encoder", "decoder", "postprocess", "cold_prompt", "cached_prompt")
PASSED, NO_EXPORT, NO_ACCURACY, UNAVAILABLE = "passed", "failed to export", "failed accuracy", "unavailable"
TORCH_LABEL = "torch eager"


class NothingMeasuredError(GmisegError, ValueError):
    """None of the requested variants could be timed (the message gives each one's reason)."""


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark. ``precisions`` None: every precision of :data:`PRECISIONS` (absent ones are reported
    as ``failed to export``). ``torch_reference``: add the PyTorch eager FP32 column when torch is importable."""

    model_dir: str | Path
    backends: tuple[str, ...] = ("auto",)
    precisions: tuple[str, ...] | None = None
    warmup: int = 2
    runs: int = 10
    threads: int | None = None
    torch_reference: bool = True
    case: str = "lung2"
    tasks: tuple[str, ...] | None = None  # task decoders to time (None: all of the folder's; (): none)

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0:
            raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={self.runs}, warmup={self.warmup}")
        unknown = [p for p in self.precisions or () if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"unknown precision(s) {unknown}; choose from {', '.join(PRECISIONS)}")
        bad = [b for b in self.backends if b not in BACKEND_CHOICES]
        if bad or not self.backends:
            raise ValueError(f"unknown backend(s) {bad}; choose from {', '.join(BACKEND_CHOICES)}")


@dataclass
class VariantResult:
    """One backend/precision row: its status, what ran, and its timings (seconds) and statistics (ms)."""

    backend: str
    precision: str
    status: str
    reason: str = ""
    detail: str = ""
    model_bytes: int | None = None
    load_rss_mib: float | None = None
    times: dict[str, list[float]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    @property
    def timed(self) -> bool:
        return bool(self.times.get("cold_prompt"))

    def stats(self) -> dict[str, dict[str, float]]:
        """min/p50/p90/p99/max in ms per stage."""
        return {stage: summarise_times(values) for stage, values in self.times.items() if values}

    def throughput(self) -> dict[str, float]:
        """images/s (cold prompts: encode + decode) and prompts/s (cached-image prompts), from total time."""
        if not self.timed:
            return {}
        return {"images_per_s": len(self.times["cold_prompt"]) / sum(self.times["cold_prompt"]),
                "prompts_per_s": len(self.times["cached_prompt"]) / sum(self.times["cached_prompt"])}

    def cold_over_cached(self) -> float | None:
        """p50 of a cold prompt over p50 of a cached-image prompt."""
        if not self.timed:
            return None
        return float(np.median(self.times["cold_prompt"]) / np.median(self.times["cached_prompt"]))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("times")
        data.update(label=self.label, stats_ms=self.stats(), throughput=self.throughput(),
                    cold_over_cached=self.cold_over_cached(),
                    times_ms={k: [round(v * 1e3, 3) for v in vs] for k, vs in self.times.items()})
        return data


@dataclass
class BenchResult:
    """All rows of one run, with the environment and the process's RSS high-water mark."""

    model: str
    model_dir: str
    config: dict[str, Any]
    environment: dict[str, Any]
    rows: list[VariantResult]
    peak_rss_mib: float
    input_shape: tuple[int, ...]
    tasks: list[TaskBench] = field(default_factory=list)  # task decoders (DESIGN §11), base decoder first

    def ratios(self) -> list[dict[str, Any]]:
        """Per timed variant, ratios of p50s measured side by side in this run: encoder speed-up over PyTorch
        eager and over the first timed ORT/TensorRT fp32 row, and a cached-image prompt as a share of a cold one.
        A ratio whose reference row was not timed is None."""
        timed = [row for row in self.rows if row.timed]
        p50 = {row.label: row.stats() for row in timed}
        eager = next((row.label for row in timed if row.backend == "torch"), None)
        fp32 = next((row.label for row in timed if row.backend != "torch" and row.precision == "fp32"), None)

        def speedup(reference: str | None, label: str) -> float | None:
            if reference is None:
                return None
            return p50[reference]["encoder"]["p50"] / p50[label]["encoder"]["p50"]

        out = []
        for row in timed:
            stats = p50[row.label]
            out.append({
                "variant": row.label,
                "encoder_ms": stats["encoder"]["p50"],
                "decoder_ms": stats["decoder"]["p50"],
                "encoder_speedup_vs_torch_eager": speedup(eager, row.label),
                "encoder_speedup_vs_fp32": speedup(fp32, row.label),
                "cached_prompt_share_of_cold": stats["cached_prompt"]["p50"] / stats["cold_prompt"]["p50"],
                "cold_prompt_ms": stats["cold_prompt"]["p50"],
            })
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ratios": self.ratios(),
            "model": self.model, "model_dir": self.model_dir, "config": self.config,
            "environment": self.environment, "input_shape": list(self.input_shape),
            "peak_rss_mib": self.peak_rss_mib,
            "peak_rss_measures": "resource.getrusage(RUSAGE_SELF).ru_maxrss: the whole process's resident-set "
                                 "high-water mark over the run (all variants loaded together)",
            "rows": [row.to_dict() for row in self.rows],
            "tasks": [row.to_dict() for row in self.tasks],
        }


def summarise_times(values: list[float]) -> dict[str, float]:
    """min, p50, p90, p99, max of durations in seconds, as milliseconds."""
    ms = np.asarray(values, dtype=np.float64) * 1e3
    return {"min": float(ms.min()), "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max())}


def peak_rss_mib() -> float:
    """The process's RSS high-water mark in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def current_rss_mib() -> float | None:
    """The process's current RSS in MiB (Linux ``/proc/self/statm``), None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError):
        return None


def graph_bytes(manifest: Manifest, precision: str) -> int:
    """Bytes on disk of the encoder and decoder graphs of ``precision`` (external weights included)."""
    return sum(manifest.file_bytes(manifest.graph_path(graph, precision).name) or 0 for graph in ("encoder", "decoder"))


def torch_available() -> bool:
    """Whether torch can be imported here (checked without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def precision_status(manifest: Manifest, precision: str) -> tuple[str, str]:
    """(status, reason) of a precision from the manifest: passed, failed to export or failed accuracy."""
    if precision not in manifest.precisions():
        how = f"--{precision}" + (" --calib DATA" if precision == "int8" else "")
        return NO_EXPORT, (f"no {precision} graphs in {manifest.folder}: export them with `gmiseg-edge export "
                           f"--model {manifest.model_name} --out {manifest.folder} {how} --force`")
    report = manifest.validation(precision)
    if not report:
        return NO_ACCURACY, "never validated against PyTorch; export again"
    if not report.get("passed", False):
        return NO_ACCURACY, "validation against PyTorch failed at export: " + "; ".join(
            report.get("failures") or ["no reason recorded"])
    return PASSED, ""


def _open(row: VariantResult, config: BenchConfig) -> Predictor | None:
    """Load the row's predictor, or mark it unavailable with the reason."""
    before = current_rss_mib()
    try:
        predictor = load(config.model_dir, backend=row.backend, precision=row.precision, threads=config.threads,
                         cache=EmbeddingCache())
    except Exception as exc:  # a backend that cannot run here (no GPU, no torch, ...): reported, not fatal
        row.status, row.reason = UNAVAILABLE, f"{type(exc).__name__}: {exc}"
        return None
    after = current_rss_mib()
    row.load_rss_mib = None if before is None or after is None else after - before
    row.detail = predictor.backend.detail + (f" ({predictor.backend_note})" if predictor.backend_note else "")
    return predictor


def _warm_up(predictor: Predictor, image: np.ndarray, box: np.ndarray) -> None:
    """One prompt end to end (an encode and a decode) and one on the cached image, nothing timed."""
    predictor.cache.clear_memory()
    predictor.predict(image, box=box)
    predictor.predict(image, box=box)


def _round(predictor: Predictor, image: np.ndarray, box: np.ndarray) -> dict[str, float]:
    """One timing of every stage on ``predictor``."""
    clock = time.perf_counter
    out: dict[str, float] = {}
    t0 = clock()
    prepared = preprocess(check_image(image), predictor.preprocess_config)
    t1 = clock()
    embedding = predictor.backend.encode(prepared.tensor)
    t2 = clock()
    inputs = make_prompt(box=box, image_size=prepared.original_size).decoder_inputs(
        embedding, prepared.original_size, predictor.input_size)
    t3 = clock()
    low_res, iou = predictor.backend.decode(inputs)
    t4 = clock()
    make_prediction(prepared, low_res[0], iou[0], SINGLE_OUTPUT, predictor.input_size)
    t5 = clock()
    out.update(preprocess=t1 - t0, encoder=t2 - t1, decoder=t4 - t3, postprocess=t5 - t4)
    predictor.cache.clear_memory()
    t6 = clock()
    predictor.predict(image, box=box)
    t7 = clock()
    predictor.predict(image, box=box)
    t8 = clock()
    out.update(cold_prompt=t7 - t6, cached_prompt=t8 - t7)
    return out


def _rows(manifest: Manifest, config: BenchConfig) -> list[VariantResult]:
    precisions = config.precisions or PRECISIONS
    rows = []
    for backend in config.backends:
        for precision in precisions:
            if backend == "torch" and precision != "fp32":
                continue
            status, reason = precision_status(manifest, precision)
            size = graph_bytes(manifest, precision) if status != NO_EXPORT else None
            rows.append(VariantResult(backend, precision, status, reason, model_bytes=size))
    wants_torch = config.torch_reference and "torch" not in config.backends
    if wants_torch and torch_available():
        status, reason = precision_status(manifest, "fp32")
        rows.append(VariantResult("torch", "fp32", status, reason))
    return rows


def _check_something_runs(manifest: Manifest, config: BenchConfig, rows: list[VariantResult], opened: bool) -> None:
    """Raise :class:`NothingMeasuredError` unless a requested variant passed its checks (and, once ``opened``,
    loaded)."""
    requested = [row for row in rows if row.backend in config.backends]
    if any(row.status == PASSED for row in requested):
        return
    present = ", ".join(manifest.precisions()) or "none"
    reasons = "; ".join(f"{row.label}: {row.status}" + (f" ({row.reason})" if row.reason else "")
                        for row in requested) or "no variant (the torch backend runs fp32 only)"
    stage = "could be loaded" if opened else "can run"
    raise NothingMeasuredError(f"nothing measured: none of the requested variants {stage} ({reasons}); "
                          f"{manifest.folder} has {present}")


def run_bench(config: BenchConfig, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Benchmark every requested backend/precision of ``config.model_dir`` interleaved (module docstring)."""

    manifest = Manifest.load(config.model_dir)
    case = load_sample_cases([config.case])[0]
    image, box = case.image, box_from_mask(case.mask)
    rows = _rows(manifest, config)
    _check_something_runs(manifest, config, rows, opened=False)
    predictors: dict[int, Predictor] = {}
    for index, row in enumerate(rows):
        if row.status == PASSED:
            predictor = _open(row, config)
            if predictor is not None:
                predictors[index] = predictor
                row.times = {stage: [] for stage in STAGES}
    _check_something_runs(manifest, config, rows, opened=True)
    order = list(predictors)
    for round_index in range(config.warmup + config.runs):
        shift = round_index % max(len(order), 1)
        for index in order[shift:] + order[:shift]:
            if round_index < config.warmup:  # first-run effects (allocations, kernel choice): one prompt is enough
                _warm_up(predictors[index], image, box)
                continue
            for stage, seconds in _round(predictors[index], image, box).items():
                rows[index].times[stage].append(seconds)
        if progress is not None:
            progress(f"round {round_index + 1}/{config.warmup + config.runs}")
    shape = tuple(preprocess(check_image(image), manifest.preprocess).tensor.shape)
    for predictor in predictors.values():
        predictor.close()
    if progress is not None and manifest.tasks() and config.tasks != ():
        progress("task decoders")
    tasks = bench_tasks(config.model_dir, image, box, config.tasks, config.runs, config.warmup, config.threads)
    settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(config).items()}
    return BenchResult(model=manifest.model_name, model_dir=str(config.model_dir), config=settings,
                       environment=environment(config.threads), rows=rows, peak_rss_mib=peak_rss_mib(),
                       input_shape=shape, tasks=tasks)
