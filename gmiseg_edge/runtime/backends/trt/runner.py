"""Native TensorRT backend: the strongly typed engines that ``gmiseg-edge build`` recorded in the manifest.

An engine only runs on the GPU model and TensorRT version it was built with, so each manifest entry is
checked against this machine (:func:`engine_problem`) before anything is deserialised; a mismatch is refused
with the command that rebuilds it. Needs ``tensorrt`` and ``polygraphy`` (its small CUDA wrapper holds the
device buffers and the stream): the ``[trt]`` extra, on a machine with an NVIDIA GPU.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from gmiseg_edge.core.errors import BackendError, ManifestError
from gmiseg_edge.core.graph_io import DECODER_OUTPUTS, ENCODER_INPUT, ENCODER_OUTPUT, POINT_COORDS, DecoderInputs
from gmiseg_edge.core.manifest import GRAPHS, Manifest, verify_bytes
from gmiseg_edge.core.manifest import engine_filename as engine_name
from gmiseg_edge.runtime.backends.base import Backend
from gmiseg_edge.runtime.backends.options import BackendOptions
from gmiseg_edge.runtime.backends.trt.device import (
    DECODER_MAX_OBJECTS,
    DECODER_MAX_POINTS,
    ENCODER_MAX_BATCH,
    TensorRTStatus,
    engine_matches,
    tensorrt_status,
)


def _build_hint(folder: Path, precision: str) -> str:
    return f"run `gmiseg-edge build --model-dir {folder} --precision {precision}` on this machine"


def engine_entries(manifest: Manifest, precision: str) -> dict[str, dict[str, Any]]:
    """The manifest's engine entries of ``precision`` by graph (``encoder``/``decoder``), those present."""
    engines = manifest.engines()
    return {g: engines[engine_name(g, precision)] for g in GRAPHS if engine_name(g, precision) in engines}


def engine_problem(manifest: Manifest, precision: str, status: TensorRTStatus) -> str | None:
    """Why the ``precision`` engines of a model folder cannot run here (None: they can)."""
    entries = engine_entries(manifest, precision)
    missing = [engine_name(g, precision) for g in GRAPHS if g not in entries]
    if missing:
        return f"{manifest.folder}: no TensorRT engine {', '.join(missing)} in the manifest; " + _build_hint(
            manifest.folder, precision)
    if not status.available:
        built = ", ".join(sorted({f"{e.get('gpu')} / TensorRT {e.get('tensorrt')}" for e in entries.values()}))
        return (f"{manifest.folder}: its {precision} engines were built for {built}, but TensorRT cannot run here "
                f"({status.reason}); on a GPU machine with TensorRT, " + _build_hint(manifest.folder, precision))
    assert status.device is not None
    for graph, entry in entries.items():
        if not engine_matches(entry, status):
            return (
                f"{manifest.folder / engine_name(graph, precision)}: built for {entry.get('gpu')} "
                f"(compute capability {entry.get('compute_capability')}) with TensorRT {entry.get('tensorrt')}, "
                f"but this machine has {status.device.name} (compute capability "
                f"{status.device.compute_capability}) with TensorRT {status.version}; an engine only runs on the GPU "
                f"and TensorRT version it was built for: " + _build_hint(manifest.folder, precision)
            )
    return None


def _verify_engine(path: Path, entry: dict[str, Any]) -> tuple[bytes, str]:
    """The engine's bytes, read once, and their sha256 (checked against the manifest): what is deserialised is
    what was verified."""
    if not path.is_file():
        raise ManifestError(f"{path}: listed in the manifest but missing")
    data = path.read_bytes()
    return data, verify_bytes(path, data, entry, "the engine was altered or corrupted after it was built")


class EngineRunner:
    """One deserialised engine, its execution context, device buffers and stream (one run at a time)."""

    def __init__(self, path: Path, data: bytes) -> None:
        import tensorrt as trt
        from polygraphy import cuda

        self._trt = trt
        self._cuda = cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BackendError(f"{path}: TensorRT could not deserialise this engine (another TensorRT version or "
                               "GPU?); rebuild it with `gmiseg-edge build`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.buffers = {n: cuda.DeviceArray(shape=(1,), dtype=self.dtypes[n]) for n in names}
        self.stream = cuda.Stream()
        self._lock = threading.Lock()

    def max_shape(self, name: str) -> tuple[int, ...]:
        """The largest shape the engine's (first) optimisation profile accepts for input ``name``."""
        return tuple(int(d) for d in self.engine.get_tensor_profile_shape(name, 0)[2])

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy ``feed`` in, execute, copy every output back (host arrays, engine dtypes)."""
        with self._lock:
            hosts = {}
            for name in self.inputs:
                host = np.ascontiguousarray(feed[name], dtype=self.dtypes[name])
                hosts[name] = host  # kept alive until the stream is synchronised
                self.context.set_input_shape(name, tuple(host.shape))
                buffer = self.buffers[name].resize(tuple(host.shape))
                buffer.copy_from(host, self.stream)
                self.context.set_tensor_address(name, buffer.ptr)
            results = {}
            for name in self.outputs:
                shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
                buffer = self.buffers[name].resize(shape)
                self.context.set_tensor_address(name, buffer.ptr)
                results[name] = np.empty(shape, dtype=self.dtypes[name])
            if not self.context.execute_async_v3(self.stream.ptr):
                raise BackendError("TensorRT execution failed (see the TensorRT log above)")
            for name, host in results.items():
                self.buffers[name].copy_to(host, self.stream)
            self.stream.synchronize()
            return results

    def close(self) -> None:
        for buffer in self.buffers.values():
            buffer.free()
        self.stream.free()


class TensorRTBackend(Backend):
    """The encoder and decoder engines of one precision."""

    name = "trt"
    max_points = DECODER_MAX_POINTS  # the decoder engine's optimisation profile
    max_objects = DECODER_MAX_OBJECTS
    max_batch = ENCODER_MAX_BATCH  # the encoder engine's optimisation profile

    def __init__(self, encoder: EngineRunner, decoder: EngineRunner, encoder_id: str, precision: str,
                 detail: str) -> None:
        super().__init__(encoder_id, precision, detail)
        self._encoder = encoder
        self._decoder = decoder
        # K as built: DECODER_MAX_OBJECTS, or 1 for an engine built from a graph exported before the prompt dimension
        self.max_objects = decoder.max_shape(POINT_COORDS)[0]

    def encode(self, image: np.ndarray) -> np.ndarray:
        out = self._encoder.run({ENCODER_INPUT: image})
        return out[ENCODER_OUTPUT].astype(np.float32, copy=False)

    def decode(self, inputs: DecoderInputs) -> tuple[np.ndarray, np.ndarray]:
        out = self._decoder.run(inputs.feed())
        low_res, iou = (out[name].astype(np.float32, copy=False) for name in DECODER_OUTPUTS)
        return low_res, iou

    def close(self) -> None:
        self._encoder.close()
        self._decoder.close()


def open_tensorrt(manifest: Manifest, precision: str, options: BackendOptions) -> TensorRTBackend:
    """Open the ``precision`` engines, refusing (with the command to run) engines built for another GPU."""
    status = tensorrt_status()
    problem = engine_problem(manifest, precision, status)
    if problem is not None:
        raise BackendError(problem)
    assert status.device is not None
    entries = engine_entries(manifest, precision)
    runners, identities = {}, {}
    for graph, entry in entries.items():
        path = manifest.file_path(engine_name(graph, precision), "engines")
        data, identities[graph] = _verify_engine(path, entry)
        runners[graph] = EngineRunner(path, data)
    detail = f"TensorRT {status.version} on {status.device.name}"
    # the cache key: the sha256 of the encoder engine bytes deserialised, not the manifest's record
    return TensorRTBackend(runners["encoder"], runners["decoder"], identities["encoder"], precision, detail)
