"""The prompt + mask decoder graph exported in segment-anything's form vs the regrouped form we ship.

    .venv/bin/python benchmarks/decoder_forms.py --model lite_medsam --runs 50

Both graphs are exported here from the same weights, checked against each other on a real embedding, and
timed interleaved in one process (2 threads; idle threads sleep in both sessions, so neither session's
spinning workers slow the other). Prompts: a box (7 tokens with SAM's 5 output tokens) and 10 points.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from gmiseg_edge.core.graph_io import DecoderInputs
from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.core.transforms import preprocess, scale_boxes
from gmiseg_edge.data.samples import load_sample_cases
from gmiseg_edge.export.onnx_export import export_decoder
from gmiseg_edge.models.build import build_model
from gmiseg_edge.models.zoo import get_spec
from gmiseg_edge.runtime.backends.onnxrt.session import cpu_session


def session(path: Path, threads: int) -> ort.InferenceSession:
    return cpu_session(path, threads, spin=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lite_medsam")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = build_model(args.model)
    spec = get_spec(args.model)
    case = load_sample_cases(["lung2"])[0]
    prepared = preprocess(case.image, spec.preprocess)
    with torch.inference_mode():
        embedding = model.image_encoder(torch.from_numpy(prepared.tensor)).numpy()
    box = scale_boxes(box_from_mask(case.mask), prepared.original_size, spec.input_size).reshape(1, 2, 2)
    rng = np.random.default_rng(0)
    prompts = {
        "box": (box.astype(np.float32), np.array([[2.0, 3.0]], np.float32)),
        "10 points": (rng.uniform(0, spec.input_size, (1, 10, 2)).astype(np.float32),
                      np.concatenate([np.ones((1, 9)), -np.ones((1, 1))], axis=1).astype(np.float32)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        original, regrouped = Path(tmp) / "original.onnx", Path(tmp) / "regrouped.onnx"
        export_decoder(model, original, regrouped=False)
        export_decoder(model, regrouped)
        sessions = {"segment-anything form": session(original, args.threads),
                    "regrouped (shipped)": session(regrouped, args.threads)}
        for label, (coords, labels) in prompts.items():
            feed = DecoderInputs.without_mask(embedding, coords, labels).feed()
            outs = [s.run(None, feed)[0] for s in sessions.values()]
            times: dict[str, list[float]] = {name: [] for name in sessions}
            for i in range(args.runs + 5):
                order = list(sessions.items()) if i % 2 else list(sessions.items())[::-1]
                for name, s in order:
                    start = time.perf_counter()
                    s.run(None, feed)
                    if i >= 5:
                        times[name].append(time.perf_counter() - start)
            medians = {name: float(np.median(t) * 1e3) for name, t in times.items()}
            first, second = medians.values()
            gap = np.abs(outs[0] - outs[1]).max()
            print(f"{args.model}, {label}: " + ", ".join(f"{n} {m:.1f} ms" for n, m in medians.items())
                  + f"; speed-up {first / second:.2f}x; logits max abs difference {gap:.1e}")


if __name__ == "__main__":
    main()
