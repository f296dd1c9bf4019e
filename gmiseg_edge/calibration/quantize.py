"""INT8 Q/DQ quantisation of the encoder graph with ONNX Runtime's static quantisation.

Why ONNX Runtime and not NVIDIA ModelOpt: ModelOpt's ONNX PTQ pins onnx~=1.21 and onnxruntime-gpu~=1.24
and pulls torch and cupy, which conflicts with this project's own pins (PITFALLS), and its output keeps FP32
weights (no size or CPU gain). ONNX Runtime's quantiser is already a dependency and runs here.

What is quantised: the MatMul and Gemm nodes with a constant weight (the linear layers: ~40% of the
encoder's time on a CPU). Left in float, each for a measured reason on lite_medsam (held-out sample cases):
- Conv nodes: quantising them dropped the embeddings' cosine similarity to ~0.7, for no speed gain here;
- the second MLP layer of each block (``mlp.fc2`` in TinyViT, ``mlp.lin2`` in SAM's ViT), whose input is the
  GELU output with its large outliers: with it, the worst held-out mask Dice vs FP32 was 0.950, without 0.969;
- every linear layer of TinyViT's last stage (``layers.3``), which feeds the neck directly: keeping it in float
  raised the worst held-out mask Dice from 0.973 to 0.980 (lite_medsam) and from 0.948 to 0.984 (mobile_sam);
- the attention MatMuls whose inputs are both activations (Q·Kᵀ, attention·V), the most range-sensitive.

Two targets, from the same calibration images:
- ``cpu``: activations uint8 with zero points, weights int8 per channel (8-bit: with fc2 left in float,
  ``reduce_range`` measured worse here, 0.969 vs 0.973 worst held-out Dice, although PITFALLS saw it help
  ViT-B with every layer quantised).
- ``tensorrt``: symmetric int8 activations and weights (zero point 0), the only Q/DQ form TensorRT takes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from gmiseg_edge.calibration.dataset import calibration_inputs, calibration_slices
from gmiseg_edge.runtime.transforms import PreprocessConfig

QUANTIZED_OPS = ("MatMul", "Gemm")
FLOAT_NODE_PATTERNS = ("/mlp/fc2/", "/mlp/lin2/", "/image_encoder/layers.3/")  # kept in float, see above
TARGETS = ("cpu", "tensorrt")


class _Reader(CalibrationDataReader):
    """Feeds one preprocessed image per call; re-iterable (``rewind``)."""

    def __init__(self, inputs: Sequence[np.ndarray]) -> None:
        self.inputs = list(inputs)
        self._it: Iterator[np.ndarray] = iter(self.inputs)
        self.served = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._it, None)
        if item is None:
            return None
        self.served += 1
        return {"image": item}

    def rewind(self) -> None:
        self._it = iter(self.inputs)


def activation_matmuls(path: Path) -> list[str]:
    """Names of the MatMul nodes of a graph whose inputs are both activations (no constant weight)."""
    model = onnx.load(str(path), load_external_data=False)
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in constants for i in n.input)]


def _post_gelu_nodes(path: Path) -> list[str]:
    model = onnx.load(str(path), load_external_data=False)
    return [n.name for n in model.graph.node if any(p in n.name for p in FLOAT_NODE_PATTERNS)]


def quantize_encoder(
    source: Path,
    target: Path,
    inputs: Sequence[np.ndarray],
    mode: str = "cpu",
    exclude_nodes: Sequence[str] = (),
) -> dict[str, Any]:
    """Write an int8 Q/DQ copy of the fp32 encoder ``source``; returns what was done (for the manifest)."""
    if mode not in TARGETS:
        raise ValueError(f"quantisation target must be one of {TARGETS}, got {mode!r}")
    if not inputs:
        raise ValueError("no calibration inputs")
    with tempfile.TemporaryDirectory(prefix="gmiseg-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Legacy-exporter graphs fail symbolic shape inference; ONNX's own is enough here (PITFALLS).
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        exclude = list(exclude_nodes) + activation_matmuls(prepared) + _post_gelu_nodes(prepared)
        reader = _Reader(inputs)
        symmetric = mode == "tensorrt"
        quantize_static(
            str(prepared),
            str(target),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
        )
        if reader.served < len(inputs):
            raise RuntimeError(f"calibration stopped after {reader.served} of {len(inputs)} inputs")
    return {
        "method": "onnxruntime static quantisation, Q/DQ, MinMax calibration",
        "target": mode,
        "ops": list(QUANTIZED_OPS),
        "activations": "int8 symmetric" if symmetric else "uint8 asymmetric",
        "weights": "int8 symmetric per channel",
        "excluded_nodes": len(exclude),
        "calibration_images": len(inputs),
    }


def quantize_graphs(
    folder: Path,
    config: PreprocessConfig,
    calib: str | Path,
    limit: int = 16,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Quantise ``folder/encoder.onnx`` to ``encoder.int8.onnx`` (CPU) and ``encoder.int8-trt.onnx`` (TensorRT).

    The decoder stays fp32: it is ~4M parameters and runs once per prompt on a cached embedding, so int8
    would save little and cost mask accuracy.
    """
    say = log or (lambda message: None)
    slices = calibration_slices(calib, limit=limit)
    say(f"calibrating int8 on {len(slices)} real slices from {calib} ...")
    inputs = calibration_inputs(slices, config)
    info = {}
    for mode, name in (("cpu", "encoder.int8.onnx"), ("tensorrt", "encoder.int8-trt.onnx")):
        info[name] = quantize_encoder(folder / "encoder.onnx", folder / name, inputs, mode)
        info[name]["calibration_slices"] = [s.name for s in slices]
    return info
