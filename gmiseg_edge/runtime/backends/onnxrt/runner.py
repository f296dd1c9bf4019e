"""ONNX Runtime backend: the exported graphs on the best execution provider that actually initialises.

``onnxruntime-gpu`` lists the CUDA and TensorRT providers even where they cannot run and silently falls back
to the CPU (PITFALLS). So each candidate is tried in order (TensorRT, CUDA, CPU) and kept only if the created
session reports it first in ``get_providers()``; the decoder then uses the provider the encoder got.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from gmiseg_edge.core.errors import BackendError
from gmiseg_edge.core.files import user_cache_dir
from gmiseg_edge.core.graph_io import DECODER_OUTPUTS, ENCODER_INPUT, POINT_COORDS, DecoderInputs
from gmiseg_edge.core.manifest import Manifest
from gmiseg_edge.core.onnx_session import CPU, session_options
from gmiseg_edge.runtime.backends.base import Backend, TaskDecoder
from gmiseg_edge.runtime.backends.options import BackendOptions

log = logging.getLogger(__name__)

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


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


class OnnxRuntimeBackend(Backend):
    """Encoder and decoder sessions on one execution provider; ``InferenceSession.run`` is thread-safe."""

    name = "ort"

    def __init__(self, encoder: ort.InferenceSession, decoder: ort.InferenceSession, encoder_id: str,
                 precision: str) -> None:
        providers = encoder.get_providers()
        super().__init__(encoder_id, precision, f"onnxruntime {ort.__version__} {providers[0]}")
        self.providers = providers
        self._encoder = encoder
        self._decoder = decoder
        objects = next(i.shape[0] for i in decoder.get_inputs() if i.name == POINT_COORDS)
        if isinstance(objects, int):  # a folder exported before the prompt dimension K: its decoder takes K = 1
            self.max_objects = objects

    def encode(self, image: np.ndarray) -> np.ndarray:
        (embedding,) = self._encoder.run(None, {ENCODER_INPUT: image})
        return np.asarray(embedding, dtype=np.float32)

    def decode(self, inputs: DecoderInputs) -> tuple[np.ndarray, np.ndarray]:
        low_res, iou = self._decoder.run(list(DECODER_OUTPUTS), inputs.feed())
        return np.asarray(low_res, dtype=np.float32), np.asarray(iou, dtype=np.float32)

    def open_task_decoder(self, path: Path, threads: int | None = None) -> TaskDecoder:
        """A task decoder on this backend's provider (the CPU if it does not start there)."""
        session = open_session(path, self.providers[0], threads) or open_session(path, CPU, threads)
        assert session is not None
        return TaskDecoder(path.stem, session)


def verify_graphs(manifest: Manifest, paths: Sequence[Path]) -> list[str]:
    """Check each graph file, by the very path that is then loaded, and its external data against the manifest
    (an error names the file); returns their identities (sha256 of the bytes read, see
    :meth:`Manifest.verify_path`)."""
    return [manifest.verify_path(path) for path in paths]


def open_onnxruntime(manifest: Manifest, precision: str, options: BackendOptions) -> OnnxRuntimeBackend:
    """Verify the graphs of ``precision`` (sha256) and open them on the best provider that starts."""
    encoder_path = manifest.graph_path("encoder", precision)
    decoder_path = manifest.graph_path("decoder", precision)
    encoder_id, _ = verify_graphs(manifest, [encoder_path, decoder_path])  # the cache key: the bytes loaded
    for provider in candidate_providers(options.providers):
        # The encoder's idle threads do not spin: they would steal the cores from the decoder run that follows
        # (measured: a cached-image prompt right after an encode took 23.5 ms with spinning, 15.1 ms without,
        # for the same encoder time; lite_medsam, 2 cores). The decoder keeps spinning for back-to-back prompts.
        encoder = open_session(encoder_path, provider, options.threads, spin=False)
        if encoder is None:
            continue
        decoder = open_session(decoder_path, provider, options.threads)
        if decoder is None:
            continue
        return OnnxRuntimeBackend(encoder, decoder, encoder_id, precision)
    raise BackendError(f"{manifest.folder}: no ONNX Runtime provider could run the {precision} graphs "
                       f"(tried {', '.join(candidate_providers(options.providers))})")
