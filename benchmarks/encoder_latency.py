"""Image-encoder latency side by side in one run: PyTorch eager vs ONNX Runtime FP32 / FP16 / INT8.

Usage (after `gmiseg-edge export --fp16 --int8 --calib samples --out models/lite_medsam`):

    .venv/bin/python benchmarks/encoder_latency.py --model-dir models/lite_medsam --runs 20

Variants run interleaved (one call of each per round, the order rotated every round) on a real sample slice,
so machine noise hits them alike; medians and ratios are printed. Ratios, not absolute times, are the result.
ONNX Runtime's idle threads sleep (as in the runtime's encoder session), so no session's spinning workers slow
the next variant.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gmiseg_edge.core.graph_io import ENCODER_INPUT
from gmiseg_edge.core.manifest import Manifest
from gmiseg_edge.core.transforms import preprocess
from gmiseg_edge.data.samples import load_sample_cases
from gmiseg_edge.runtime.backends.onnxrt.session import cpu_session


def ort_runner(path: Path, threads: int, level: ort.GraphOptimizationLevel) -> Callable[[np.ndarray], object]:
    session = cpu_session(path, threads, spin=False, level=level)  # as the runtime's encoder
    return lambda x: session.run(None, {ENCODER_INPUT: x})


def torch_runner(model_name: str, threads: int) -> Callable[[np.ndarray], object]:
    import torch

    from gmiseg_edge.models.build import build_model

    torch.set_num_threads(threads)
    model = build_model(model_name)

    def run(x: np.ndarray) -> object:
        with torch.inference_mode():
            return model.image_encoder(torch.from_numpy(x))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch eager column")
    args = parser.parse_args()

    manifest = Manifest.load(args.model_dir)
    image = load_sample_cases(["lung2"])[0].image
    x = preprocess(image, manifest.preprocess).tensor
    all_opt = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    variants: dict[str, Callable[[np.ndarray], object]] = {}
    if not args.no_torch:
        variants["torch eager fp32"] = torch_runner(manifest.model_name, args.threads)
    for precision in manifest.precisions():
        path = manifest.graph_path("encoder", precision)
        variants[f"ort {precision}"] = ort_runner(path, args.threads, all_opt)
    fp32 = manifest.graph_path("encoder", "fp32")
    variants["ort fp32, basic graph opt"] = ort_runner(fp32, args.threads, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    variants["ort fp32, 1 thread"] = ort_runner(fp32, 1, all_opt)

    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_index in range(args.warmup + args.runs):
        order = names[round_index % len(names):] + names[: round_index % len(names)]
        for name in order:
            start = time.perf_counter()
            variants[name](x)
            if round_index >= args.warmup:
                times[name].append(time.perf_counter() - start)

    base = statistics.median(times["ort fp32"])
    eager = statistics.median(times["torch eager fp32"]) if "torch eager fp32" in times else None
    print(f"{manifest.model_name} encoder, input {x.shape[2]}x{x.shape[3]}, {args.threads} threads, "
          f"{args.runs} interleaved runs after {args.warmup} warm-up rounds")
    print("| variant | median ms | p90 ms | vs ort fp32 | speed-up over torch eager |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        p90 = float(np.percentile(values, 90))
        over_eager = f"{eager / median:.2f}x" if eager else "-"
        print(f"| {name} | {median * 1e3:.1f} | {p90 * 1e3:.1f} | {base / median:.2f}x | {over_eager} |")


if __name__ == "__main__":
    main()
