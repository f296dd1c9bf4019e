"""Backends behind one base class (polygraphy-like), chosen from one table.

| name | runs | precisions | needs |
| --- | --- | --- | --- |
| ``trt`` | TensorRT engines from ``gmiseg-edge build`` | fp32, fp16, int8 | tensorrt, polygraphy, an NVIDIA GPU |
| ``ort`` | the ONNX graphs: TensorRT, CUDA or CPU execution provider | fp32, fp16, int8 | onnxruntime(-gpu) |
| ``torch`` | the PyTorch reference model (FP32) | fp32 | torch, segment-anything |

Each backend is one folder (as in Polygraphy's ``backend/``): ``onnxrt/`` (provider choice and runner), ``trt/``
(device probe, engine build, runner), ``pyt/`` (runner over the PyTorch reference). Each backend module is
imported only when its backend is opened, so the runtime never imports torch unless
``torch`` is asked for, nor tensorrt unless ``trt`` is.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from gmiseg_edge.core.graph_io import DecoderInputs
from gmiseg_edge.core.manifest import Manifest
from gmiseg_edge.runtime.backends.base import Backend
from gmiseg_edge.runtime.backends.options import BackendOptions


@dataclass(frozen=True)
class BackendSpec:
    """One row of the backend table."""

    name: str
    description: str
    precisions: tuple[str, ...]
    needs_gpu: bool
    opener: str  # "module:function", imported on use

    def open(self, manifest: Manifest, precision: str, options: BackendOptions) -> Backend:
        """Import this backend's module and open the model folder with it."""
        module, function = self.opener.split(":")
        opener: Callable[[Manifest, str, BackendOptions], Backend] = getattr(
            importlib.import_module(module), function)
        return opener(manifest, precision, options)


_PACKAGE = "gmiseg_edge.runtime.backends"
BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("trt", "native TensorRT engines", ("fp32", "fp16", "int8"), True,
                    f"{_PACKAGE}.trt.runner:open_tensorrt"),
        BackendSpec("ort", "ONNX Runtime", ("fp32", "fp16", "int8"), False,
                    f"{_PACKAGE}.onnxrt.runner:open_onnxruntime"),
        BackendSpec("torch", "PyTorch reference", ("fp32",), False, f"{_PACKAGE}.pyt.runner:open_torch"),
    )
}
BACKEND_CHOICES = ("auto", *BACKENDS)

__all__ = ["BACKENDS", "BACKEND_CHOICES", "Backend", "BackendOptions", "BackendSpec", "DecoderInputs"]
