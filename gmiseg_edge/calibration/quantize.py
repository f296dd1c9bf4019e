"""INT8 quantisation of the encoder graph with ONNX Runtime: a CPU graph and a TensorRT graph.

Why ONNX Runtime and not NVIDIA ModelOpt: ModelOpt's ONNX PTQ pins onnx~=1.21 and onnxruntime-gpu~=1.24
and pulls torch and cupy, which conflicts with this project's own pins (PITFALLS), and its output keeps FP32
weights (no size or CPU gain). ONNX Runtime's quantiser is already a dependency and runs here.

Modes (measured on lite_medsam, ONNX Runtime 1.32, a 2-core AMD EPYC with AVX512-VNNI; accuracy against FP32
PyTorch on the *calibration* cases, speed as the FP32/INT8 encoder ratio timed interleaved in one process):

- ``dynamic`` (CPU, tried first): every MatMul/Gemm with a constant weight, uint8 weights per output channel,
  uint8 activations whose range is measured per image at run time. ONNX Runtime runs each as one
  ``DynamicQuantizeMatMul`` kernel, with no Q/DQ pairs in float between layers: 1.29-1.34x, min mask Dice
  0.979 (per-tensor weights: embedding cosine 0.970, dropped). Weights are uint8 (U8U8), not int8 (U8S8):
  on x86 CPUs without VNNI (AVX2 only) ONNX Runtime's U8S8 kernel adds pairs of u8 x s8 products in 16 bits,
  which saturate; the same int8 graph that kept 0.979 on an AVX512-VNNI EPYC gave min mask Dice 0.879
  (breast1 lesion) on an AVX2-only EPYC, where U8U8 keeps 0.979 (held-out cases, lite_medsam, ORT 1.32). An
  exported graph runs on whatever CPU the user has, so it must not depend on VNNI.
- ``static`` (CPU, the fallback): static Q/DQ of the same MatMuls, uint8 activations with zero points,
  calibrated (MinMax) on real slices, keeping in float the post-GELU ``mlp.fc2``/``mlp.lin2`` (worst held-out
  Dice 0.950 with it, 0.969 without) and TinyViT's last stage ``layers.3`` (0.973 -> 0.980 lite_medsam,
  0.948 -> 0.984 mobile_sam): 1.01-1.13x. Each MatMul pays a Q and a DQ over its activations in float.
- ``tensorrt``: the static form with symmetric int8 activations and weights (zero point 0), the only Q/DQ
  form TensorRT takes, same float layers as ``static``.

Conv stays float in every mode: quantised alone, single convs of TinyViT's first stage dropped the embedding
cosine to 0.76-0.96 (a conv output's per-tensor range is set by a few channels; Entropy and Percentile
calibration did not help), and the safe ones (the neck) gained nothing measurable. The attention MatMuls whose
inputs are both activations (Q·Kᵀ, attention·V) stay float.

The CPU graph must pass the export's held-out accuracy gate: ``quantize_graphs`` writes the dynamic graph,
asks the caller's ``accept`` check, and writes the static one instead if the dynamic one missed. (mobile_sam's
dynamic graph missed on one small lesion, 0.966 < 0.97, so it gets the static graph.)
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from gmiseg_edge.calibration.dataset import calibration_inputs, calibration_slices
from gmiseg_edge.core.graph_io import ENCODER_INPUT
from gmiseg_edge.core.transforms import PreprocessConfig

QUANTIZED_OPS = ("MatMul", "Gemm")
FLOAT_NODE_PATTERNS = ("/mlp/fc2/", "/mlp/lin2/", "/image_encoder/layers.3/")  # float in static modes
MODES = ("dynamic", "static", "tensorrt")
CPU_GRAPH, TENSORRT_GRAPH = "encoder.int8.onnx", "encoder.int8-trt.onnx"


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
        return {ENCODER_INPUT: item}

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
    mode: str = "dynamic",
    exclude_nodes: Sequence[str] = (),
) -> dict[str, Any]:
    """Write an int8 copy of the fp32 encoder ``source`` in ``mode`` (module docstring); returns what was done
    (for the manifest). ``inputs``: preprocessed calibration images (unused by ``dynamic``)."""
    if mode not in MODES:
        raise ValueError(f"quantisation mode must be one of {MODES}, got {mode!r}")
    if mode != "dynamic" and not inputs:
        raise ValueError("no calibration inputs")
    with tempfile.TemporaryDirectory(prefix="gmiseg-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Legacy-exporter graphs fail symbolic shape inference; ONNX's own is enough here (PITFALLS).
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        if mode == "dynamic":
            exclude = list(exclude_nodes) + activation_matmuls(prepared)
            quantize_dynamic(str(prepared), str(target), op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                             reduce_range=False, weight_type=QuantType.QUInt8, nodes_to_exclude=exclude,
                             extra_options={"MatMulConstBOnly": True})
            return {"method": "onnxruntime dynamic quantisation (activation range measured per image at run time)",
                    "mode": mode, "ops": list(QUANTIZED_OPS), "activations": "uint8 asymmetric, dynamic",
                    "weights": "uint8 asymmetric per channel (no u8 x s8 saturation on CPUs without VNNI)",
                    "excluded_nodes": len(exclude), "calibration_images": 0}
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
        "mode": mode,
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
    accept: Callable[[Path], tuple[bool, str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Quantise ``folder/encoder.onnx`` to ``encoder.int8.onnx`` (CPU) and ``encoder.int8-trt.onnx`` (TensorRT).

    The CPU graph is ``dynamic`` unless ``accept(path)`` (the caller's accuracy gate) returns ``(False, why)``
    for it; it is then rewritten ``static`` and the rejection is recorded. The decoder stays fp32: it is ~4M
    parameters and runs once per prompt on a cached embedding, so int8 would save little and cost accuracy.
    """
    say = log or (lambda message: None)
    slices = calibration_slices(calib, limit=limit)
    say(f"calibrating int8 on {len(slices)} real slices from {calib} ...")
    inputs = calibration_inputs(slices, config)
    names = [s.name for s in slices]
    cpu_path = folder / CPU_GRAPH
    say("int8 for the CPU: dynamic quantisation of the linear layers ...")
    info = {CPU_GRAPH: quantize_encoder(folder / "encoder.onnx", cpu_path, inputs, "dynamic")}
    passed, why = accept(cpu_path) if accept is not None else (True, "")
    if not passed:
        say(f"dynamic int8 missed the accuracy gate ({why}); using static Q/DQ for the CPU graph instead ...")
        info[CPU_GRAPH] = quantize_encoder(folder / "encoder.onnx", cpu_path, inputs, "static")
        info[CPU_GRAPH].update(calibration_slices=names, rejected={"mode": "dynamic", "reason": why})
    say("int8 for TensorRT: static symmetric Q/DQ ...")
    info[TENSORRT_GRAPH] = quantize_encoder(folder / "encoder.onnx", folder / TENSORRT_GRAPH, inputs, "tensorrt")
    info[TENSORRT_GRAPH]["calibration_slices"] = names
    return info
