"""INT8 forms of the image encoder side by side: held-out mask Dice against FP32 PyTorch on this machine's CPU.

Usage (an FP32 model folder from `gmiseg-edge export`; weights fetched):

    .venv/bin/python benchmarks/int8_variants.py --model-dir models/lite_medsam --variants dyn_s8,dyn_u8,static

Each variant quantises the folder's ``encoder.onnx`` with ONNX Runtime (the MatMul/Gemm layers the export
quantises, the same float exclusions), then runs the export's own validation (``validate_graphs``) on the sample
cases that calibration does not use. Which form keeps its masks depends on the CPU: ONNX Runtime's U8S8 kernels
(uint8 activations x int8 weights) add pairs of products in 16 bits on CPUs without VNNI and saturate there.

Variants: ``dyn_s8`` dynamic, int8 weights (U8S8); ``dyn_s8_rr`` the same with 7-bit weights (reduce_range);
``dyn_u8`` dynamic, uint8 weights (U8U8: the export's CPU graph); ``static`` and ``static_rr`` the export's static
Q/DQ fallback (uint8 activations, int8 weights), without and with reduce_range.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from gmiseg_edge.calibration import quantize
from gmiseg_edge.calibration.dataset import SAMPLE_CALIBRATION_CASES, calibration_inputs, calibration_slices
from gmiseg_edge.core.manifest import Manifest
from gmiseg_edge.export.pipeline import validation_cases
from gmiseg_edge.export.validate import torch_references, validate_graphs
from gmiseg_edge.models.build import build_model
from gmiseg_edge.models.zoo import get_spec

VARIANTS = ("dyn_s8", "dyn_s8_rr", "dyn_u8", "static", "static_rr")


def cpu_flags() -> str:
    """The CPU's vector extensions that decide which int8 kernels ONNX Runtime runs (from /proc/cpuinfo)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return " ".join(f for f in wanted if f" {f}" in flags) or "none of " + ", ".join(wanted)


def write_variant(name: str, prepared: Path, target: Path, inputs: list[np.ndarray]) -> None:
    """Quantise ``prepared`` (after quant_pre_process) to ``target`` as variant ``name``."""
    reduce_range = name.endswith("_rr")
    activation_matmuls = quantize.activation_matmuls(prepared)
    if name.startswith("dyn"):
        weights = QuantType.QUInt8 if name == "dyn_u8" else QuantType.QInt8
        quantize_dynamic(str(prepared), str(target), op_types_to_quantize=list(quantize.QUANTIZED_OPS),
                         per_channel=True, reduce_range=reduce_range, weight_type=weights,
                         nodes_to_exclude=activation_matmuls, extra_options={"MatMulConstBOnly": True})
        return
    exclude = activation_matmuls + quantize._post_gelu_nodes(prepared)
    quantize_static(str(prepared), str(target), quantize._Reader(inputs), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(quantize.QUANTIZED_OPS), per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="an FP32 model folder (gmiseg-edge export)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    manifest = Manifest.load(args.model_dir)
    spec = get_spec(manifest.model_name)
    references = torch_references(build_model(spec.name), spec.preprocess, validation_cases(None))
    held_out = [r for r in references if r.name.split("/")[0] not in set(SAMPLE_CALIBRATION_CASES)]
    inputs = calibration_inputs(calibration_slices("samples", limit=16), spec.preprocess)
    print(f"{spec.name}, CPU flags: {cpu_flags()}; {len(held_out)} held-out cases "
          f"({', '.join(sorted({r.name.split('/')[0] for r in held_out}))})")
    print("| variant | min mask Dice | worst case | mean mask Dice |\n| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="gmiseg-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(args.model_dir / "encoder.onnx"), str(prepared), skip_symbolic_shape=True)
        for name in variants:
            target = Path(tmp) / f"{name}.onnx"
            write_variant(name, prepared, target, inputs)
            report = validate_graphs(held_out, spec.input_size, target, args.model_dir / "decoder.onnx", "int8")
            worst = min(report.cases, key=lambda c: c.mask_dice)
            mean = float(np.mean([c.mask_dice for c in report.cases]))
            print(f"| {name} | {worst.mask_dice:.4f} | {worst.case} | {mean:.4f} |", flush=True)


if __name__ == "__main__":
    main()
