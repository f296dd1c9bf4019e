"""ONNX Runtime sessions, set up one way for every part that runs a graph (runtime, validation, calibration,
benchmarks). Torch-free; imports onnxruntime, so only the parts that run graphs import this module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort

CPU = "CPUExecutionProvider"


def session_options(
    threads: int | None = None,
    spin: bool = True,
    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    profile_prefix: str | None = None,
    optimized_path: str | Path | None = None,
) -> ort.SessionOptions:
    """Options with full graph optimisation. ``threads``: intra-op threads (None or 0: ONNX Runtime's default);
    ``spin=False``: idle worker threads sleep at once instead of busy-waiting for the next run;
    ``profile_prefix``: write ONNX Runtime's profile JSON with this prefix; ``optimized_path``: save the
    optimised graph there."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3  # a provider that fails to initialise is reported by the caller, not logged
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def cpu_session(path: str | Path, threads: int | None = None, spin: bool = True,
                **options: Any) -> ort.InferenceSession:
    """A CPU session on ``path`` (see :func:`session_options` for the rest)."""
    return ort.InferenceSession(str(path), session_options(threads, spin, **options), providers=[CPU])
