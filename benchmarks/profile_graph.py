"""Where an exported graph spends its time in ONNX Runtime: per op type and the slowest nodes.

    .venv/bin/python benchmarks/profile_graph.py runs/demo/lite_medsam/encoder.onnx --runs 10
    .venv/bin/python benchmarks/profile_graph.py runs/demo/lite_medsam/decoder.onnx --runs 30

Inputs are real: a sample CT slice, preprocessed, for the encoder; its embedding and a box prompt for the
decoder. Times are ONNX Runtime's own per-node profile (kernel time, summed over the measured runs, warm-up
excluded), with the graph optimised as the runtime optimises it (ORT_ENABLE_ALL).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gmiseg_edge.core.graph_io import ENCODER_INPUT
from gmiseg_edge.core.manifest import Manifest
from gmiseg_edge.core.prompts import box_from_mask, make_prompt
from gmiseg_edge.core.transforms import preprocess
from gmiseg_edge.data.samples import load_sample_cases
from gmiseg_edge.runtime.backends.onnxrt.session import cpu_session


def _session(path: Path, threads: int, profile: bool, prefix: str = "") -> ort.InferenceSession:
    return cpu_session(path, threads, profile_prefix=prefix if profile else None)


def real_inputs(graph: Path, threads: int) -> dict[str, np.ndarray]:
    """Feeds for ``graph`` (an encoder or decoder of an exported folder) from the first sample case."""
    config = Manifest.load(graph.parent).preprocess
    case = load_sample_cases()[0]
    prepared = preprocess(case.image, config)
    image = prepared.tensor
    if "decoder" not in graph.name:
        return {ENCODER_INPUT: image}
    encoder = _session(graph.parent / "encoder.onnx", threads, profile=False)
    embedding = encoder.run(None, {ENCODER_INPUT: image})[0]
    prompt = make_prompt(box=box_from_mask(case.mask), image_size=prepared.original_size)
    return prompt.decoder_inputs(embedding, prepared.original_size, config.input_size).feed()


def profile(graph: Path, runs: int, warmup: int, threads: int, top: int) -> None:
    feeds = real_inputs(graph, threads)
    with tempfile.TemporaryDirectory() as tmp:
        session = _session(graph, threads, profile=True, prefix=str(Path(tmp) / "p"))
        for _ in range(warmup + runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs_seen = [e for e in events if e.get("name") == "model_run"]
    measured = runs_seen[warmup:]
    start = measured[0]["ts"]
    by_type: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < start:
            continue
        op = event["args"].get("op_name", "?")
        by_type[op] += event["dur"]
        by_node[f"{event['name'][:-12]} ({op})"] += event["dur"]
    total = sum(by_type.values())
    wall = sum(e["dur"] for e in measured) / len(measured) / 1000
    print(f"{graph}: {wall:.1f} ms per run (mean of {len(measured)}), kernels {total / len(measured) / 1000:.1f} ms")
    print(f"{'op type':<32}{'ms/run':>10}{'share':>8}")
    for op, dur in sorted(by_type.items(), key=lambda kv: -kv[1]):
        print(f"{op:<32}{dur / len(measured) / 1000:>10.2f}{dur / total:>8.1%}")
    print(f"\nslowest {top} nodes")
    for name, dur in sorted(by_node.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{name[:90]:<92}{dur / len(measured) / 1000:>8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graph", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    profile(args.graph, args.runs, args.warmup, args.threads, args.top)


if __name__ == "__main__":
    main()
