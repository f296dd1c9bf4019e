"""ONNX Runtime sessions, set up one way for every part that runs a graph: this backend's runner, export's
validation against PyTorch, the serving repository writer, calibration checks and the benchmarks.

The loader half of the backend (as Polygraphy's ``backend/onnxrt/loader.py``); :mod:`.runner` runs what it
opens. Torch-free; imports onnxruntime, so only the parts that run graphs import this module.

``onnxruntime-gpu`` lists the CUDA and TensorRT providers even where they cannot run and silently falls back to
the CPU (PITFALLS): :func:`open_session` keeps a session only if the provider asked for is the one it got.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from gmiseg_edge.core.errors import BackendError
from gmiseg_edge.core.files import user_cache_dir

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU)


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
    optimised graph there. The CPU memory arena stays on: decoder runs give back what they grew it by
    (:data:`gmiseg_edge.runtime.backends.onnxrt.runner.DECODER_RUN_OPTIONS`)."""
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


def _provider_options(provider: str) -> dict[str, Any]:
    if provider == "TensorrtExecutionProvider":
        folder = user_cache_dir() / "ort-tensorrt"
        folder.mkdir(parents=True, exist_ok=True)
        return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(folder),
                "trt_timing_cache_enable": True, "trt_timing_cache_path": str(folder)}
    return {}


def open_session(path: Path, provider: str, threads: int | None, spin: bool = True) -> ort.InferenceSession | None:
    """A session on ``provider`` (with the CPU as ONNX Runtime's fallback), or None if ``provider`` did not
    initialise (the session silently fell back, or creation failed). ``spin=False``: idle CPU worker threads
    sleep at once instead of busy-waiting for the next run."""
    chain: list[Any] = [(provider, _provider_options(provider))]
    if provider != CPU:
        chain.append(CPU)
    try:
        session = ort.InferenceSession(str(path), session_options(threads, spin), providers=chain)
    except Exception as exc:  # ONNX Runtime raises several types for a provider that cannot start
        if provider == CPU:
            raise BackendError(f"{path}: ONNX Runtime cannot load this graph ({exc})") from exc
        log.info("%s did not initialise for %s: %s", provider, path.name, exc)
        return None
    if session.get_providers()[0] != provider:
        log.info("%s listed but not usable for %s (session fell back to %s)", provider, path.name,
                 session.get_providers())
        return None
    return session


def candidate_providers(requested: Sequence[str] | None) -> list[str]:
    """Providers to try, best first: those requested (checked against the build), or TensorRT, CUDA, CPU."""
    available = ort.get_available_providers()
    if requested is None:
        return [p for p in PREFERENCE if p in available]
    missing = [p for p in requested if p not in available]
    if missing:
        raise BackendError(f"ONNX Runtime here has no {', '.join(missing)} (available: {', '.join(available)})")
    return list(requested)
