"""``load``: a model folder, a backend and a precision -> a :class:`Predictor`.

Checks, in order: the manifest reads; the precision exists and passed its validation against PyTorch at
export (a failed or missing validation is refused, with the recorded reasons); the backend supports the
precision; the files the backend loads match their sha256 in the manifest (an altered file is named).

``backend="auto"``: native TensorRT when its engines for this precision are in the manifest and were built
for this GPU and TensorRT version; otherwise ONNX Runtime on the best execution provider that initialises
(TensorRT EP, CUDA EP, CPU). Why TensorRT was not used is kept in ``Predictor.backend_note`` and logged;
``backend="trt"`` raises the same reason as an error instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from gmiseg_edge.core.errors import BackendError
from gmiseg_edge.core.manifest import PRECISIONS, Manifest, ManifestError
from gmiseg_edge.runtime.backends import BACKEND_CHOICES, BACKENDS, Backend, BackendOptions
from gmiseg_edge.runtime.backends.trt.device import tensorrt_status
from gmiseg_edge.runtime.backends.trt.runner import engine_problem
from gmiseg_edge.runtime.cache import EmbeddingCache
from gmiseg_edge.runtime.predictor import Predictor
from gmiseg_edge.runtime.tasks import TaskDecoders

log = logging.getLogger(__name__)


def check_precision(manifest: Manifest, precision: str) -> None:
    """Refuse a precision that was not exported, or whose validation failed or is missing."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision not in manifest.precisions():
        raise ManifestError(f"{manifest.folder}: no {precision} graphs; present: {', '.join(manifest.precisions())} "
                            f"(export with --{precision} to add them)")
    report = manifest.validation(precision)
    if not report:
        raise ManifestError(f"{manifest.folder}: the {precision} graphs were never validated against PyTorch; "
                            "export the model again")
    if not report.get("passed", False):
        reasons = "; ".join(report.get("failures") or ["no reason recorded"])
        raise ManifestError(f"{manifest.folder}: the {precision} graphs failed validation against PyTorch at export "
                            f"({reasons}); they may give wrong masks: use another precision or export again")


def _open_auto(manifest: Manifest, precision: str, options: BackendOptions) -> tuple[Backend, str]:

    problem = engine_problem(manifest, precision, tensorrt_status())
    if problem is None:
        try:
            return BACKENDS["trt"].open(manifest, precision, options), ""
        except BackendError as exc:
            problem = str(exc)
    note = f"native TensorRT not used: {problem}"
    log.info("%s; using ONNX Runtime", note)
    return BACKENDS["ort"].open(manifest, precision, options), note


def _as_cache(cache: EmbeddingCache | str | Path | None, max_gb: float | None) -> EmbeddingCache:
    if isinstance(cache, EmbeddingCache):
        return cache
    if cache is None:
        return EmbeddingCache()
    if max_gb is None:
        return EmbeddingCache(folder=cache)
    if not 0 < max_gb < 1 << 20:  # also refuses NaN and inf
        raise ValueError(f"the disk cache bound must be a positive number of GB, got {max_gb}")
    return EmbeddingCache(folder=cache, max_disk_bytes=int(max_gb * 2**30))


def load(
    model_dir: str | Path,
    backend: str = "auto",
    precision: str = "fp32",
    threads: int | None = None,
    cache: EmbeddingCache | str | Path | None = None,
    providers: Sequence[str] | None = None,
    cache_max_gb: float | None = None,
    task: str | None = None,
) -> Predictor:
    """Open a model folder written by ``gmiseg-edge export`` and return a thread-safe :class:`Predictor`.

    ``backend``: ``auto``, ``trt``, ``ort`` or ``torch``; ``precision``: ``fp32``, ``fp16`` or ``int8``;
    ``threads``: CPU threads per run (None: the backend's default); ``cache``: an :class:`EmbeddingCache`, a
    folder for a disk cache (plus the default in-memory LRU), or None for the in-memory LRU only;
    ``providers``: ONNX Runtime providers to try in order (default: TensorRT, CUDA, CPU); ``cache_max_gb``:
    the bound of a disk cache folder given as ``cache`` (default: the cache's own); ``task``: decode with that
    task decoder of the folder by default (DESIGN §11; checked and opened here, so a wrong name fails now).
    """
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    manifest = Manifest.load(model_dir)
    check_precision(manifest, precision)
    options = BackendOptions(threads=threads, providers=providers)
    if backend == "auto":
        opened, note = _open_auto(manifest, precision, options)
    else:
        spec = BACKENDS[backend]
        if precision not in spec.precisions:
            raise BackendError(f"the {backend} backend ({spec.description}) runs {', '.join(spec.precisions)} only, "
                               f"not {precision}")
        opened, note = spec.open(manifest, precision, options), ""
    tasks = TaskDecoders(manifest, opened, threads)
    if task is not None:
        try:
            tasks.get(task)
        except Exception:
            opened.close()
            raise
    return Predictor(opened, manifest.preprocess, _as_cache(cache, cache_max_gb), manifest.model_name, note,
                     tasks=tasks, task=task)
