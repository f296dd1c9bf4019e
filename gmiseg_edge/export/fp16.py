"""FP16 graphs with their numerically sensitive ops kept in FP32 (DESIGN §5).

LayerNorm in fp16 overflows on SAM's activations (the best-known cause of garbage SAM masks on TensorRT),
and Softmax and the reductions of SAM's hand-written ``LayerNorm2d`` (ReduceMean, Pow, Sqrt, Div) lose too
much range, so these stay in fp32 with casts around them. Inputs and outputs stay float32 (``keep_io_types``),
so the runtime feeds every precision the same arrays. The conversion is ONNX Runtime's own
(``onnxruntime.transformers.float16``): onnxconverter-common's produced graphs ONNX Runtime refuses to load.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "Pow", "Sqrt", "Div", "Erf")


def convert_to_fp16(source: Path, target: Path) -> None:
    """Write an fp16 copy of the fp32 graph ``source`` to ``target`` (float32 inputs and outputs)."""
    model = onnx.load(str(source))
    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP32_OPS)
    )
    onnx.save_model(converted, str(target))
