"""ONNX Runtime backend: the exported graphs on the best execution provider that actually initialises.

Each candidate provider is tried in order (TensorRT, CUDA, CPU) and kept only if the session really runs on
it (:func:`~gmiseg_edge.runtime.backends.onnxrt.session.open_session`); the decoder then uses the provider the
encoder got. Task decoders (DESIGN §11) are ONNX graphs on every backend, so they run here too
(:func:`open_task_decoder`), on the provider their backend prefers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gmiseg_edge.core.errors import BackendError
from gmiseg_edge.core.graph_io import DECODER_OUTPUTS, ENCODER_INPUT, POINT_COORDS, DecoderInputs
from gmiseg_edge.core.manifest import Manifest
from gmiseg_edge.runtime.backends.base import Backend, TaskDecoder
from gmiseg_edge.runtime.backends.onnxrt.session import CPU, candidate_providers, open_session
from gmiseg_edge.runtime.backends.options import BackendOptions


def _shrinking() -> ort.RunOptions:
    """Run options that give the CPU arena's free chunks back at the end of each run."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


#: decoder runs of several objects on the CPU: the arena serves a run's many large buffers (K objects' upscaled
#: masks) from memory it already holds, then gives back what it grew by, so memory returns to its baseline after
#: each run (issue 26).
#: Measured, lite_medsam, 2-core CPU: without an arena a K = 8 run maps fresh pages for every buffer (125 nuclei
#: decoded in 16.9 s); with the shrinking arena 1000 boxes on 512² took 63 s and peaked at 909 MiB
#: (``benchmarks/objects_memory.py``); with a plain arena 47 s but 1156 MiB, the arena kept at its largest run
DECODER_RUN_OPTIONS = _shrinking()


def decoder_run_options(session: ort.InferenceSession) -> ort.RunOptions | None:
    """:data:`DECODER_RUN_OPTIONS` for a session on the CPU (its arena is the one that shrinks), else None."""
    return DECODER_RUN_OPTIONS if session.get_providers()[0] == CPU else None


def _run_decoder(session: ort.InferenceSession, inputs: DecoderInputs,
                 options: ort.RunOptions | None) -> tuple[np.ndarray, np.ndarray]:
    """One decoder run; ``options`` (the shrinking arena) only for several objects: a one-object run's memory is
    small and kept for the next click (shrinking after it cost ~15% of a one-object run here)."""
    low_res, iou = session.run(list(DECODER_OUTPUTS), inputs.feed(), options if inputs.objects > 1 else None)
    return np.asarray(low_res, dtype=np.float32), np.asarray(iou, dtype=np.float32)


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
        self._decoder_options = decoder_run_options(decoder)
        objects = next(i.shape[0] for i in decoder.get_inputs() if i.name == POINT_COORDS)
        if isinstance(objects, int):  # a folder exported before the prompt dimension K: its decoder takes K = 1
            self.max_objects = objects

    def encode(self, image: np.ndarray) -> np.ndarray:
        (embedding,) = self._encoder.run(None, {ENCODER_INPUT: image})
        return np.asarray(embedding, dtype=np.float32)

    def decode(self, inputs: DecoderInputs) -> tuple[np.ndarray, np.ndarray]:
        return _run_decoder(self._decoder, inputs, self._decoder_options)

    def task_providers(self) -> tuple[str, ...]:
        """Task decoders run on this backend's provider (the CPU if they do not start there)."""
        return (self.providers[0],)


class OnnxTaskDecoder(TaskDecoder):
    """One task's decoder graph in an ONNX Runtime session (``run`` is thread-safe)."""

    def __init__(self, task: str, session: ort.InferenceSession) -> None:
        super().__init__(task)
        self.session = session
        self._options = decoder_run_options(session)

    def decode(self, inputs: DecoderInputs) -> tuple[np.ndarray, np.ndarray]:
        return _run_decoder(self.session, inputs, self._options)


def open_task_decoder(task: str, path: Path, providers: Sequence[str] = (),
                      threads: int | None = None) -> OnnxTaskDecoder:
    """The decoder graph of ``task`` at ``path`` on the first of ``providers`` that starts, else on the CPU
    (which raises, naming the file, if it cannot load the graph)."""
    for provider in [p for p in providers if p != CPU]:
        session = open_session(path, provider, threads)
        if session is not None:
            return OnnxTaskDecoder(task, session)
    session = open_session(path, CPU, threads)
    assert session is not None  # the CPU provider raises rather than falls back
    return OnnxTaskDecoder(task, session)


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
