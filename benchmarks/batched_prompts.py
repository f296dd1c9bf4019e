"""Many objects per decoder call: K boxes in one decoder run vs K single runs, on an exported model folder.

    .venv/bin/python benchmarks/batched_prompts.py --model-dir models/lite_medsam --objects 16 --rounds 5
    .venv/bin/python benchmarks/batched_prompts.py --model-dir models/lite_medsam --single-prompt-decoder OLD.onnx

The image is the shipped nuclei case (dsb_nuclei, 125 instances); the first K instances (spread over the ids)
each get a box from their extent. Both ways run through the ONNX Runtime predictor on a cached embedding, so
only the decoder and the post-processing are timed, interleaved round by round (median of the rounds):

- ``single``: K calls of ``predict(image, box=...)`` (one K = 1 decoder run each);
- ``batched``: one ``predict(image, boxes=...)`` (K objects per decoder run, at most the backend's
  ``max_objects``; ``--max-objects`` overrides it).

It also checks that both give the same masks (min Dice over the objects) and reports the decoder runs alone
(``backend.decode``) beside the end-to-end figures. ``--single-prompt-decoder`` times a decoder graph exported
before the prompt dimension existed (fixed K = 1) against the K-dimension graph at K = 1, on the same inputs:
the single-object latency the change must not worsen.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from gmiseg_edge.core.graph_io import DECODER_OUTPUTS
from gmiseg_edge.core.prompts import boxes_from_labels, make_prompt
from gmiseg_edge.data import load_sample_cases, load_sample_pair
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import load
from gmiseg_edge.runtime.backends.onnxrt.session import cpu_session


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--objects", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-objects", type=int, default=None, help="objects per decoder run (default: backend's)")
    parser.add_argument("--single-prompt-decoder", type=Path, default=None)
    args = parser.parse_args()

    predictor = load(args.model_dir, backend="ort", precision="fp32", threads=args.threads)
    if args.max_objects is not None:
        predictor.backend.max_objects = args.max_objects
    image = load_sample_cases(["dsb_nuclei"])[0].image
    _, all_boxes = boxes_from_labels(load_sample_pair("dsb_nuclei")[1].array)
    step = max(1, len(all_boxes) // args.objects)
    boxes = all_boxes[::step][: args.objects]
    encoded = predictor.encode(image)
    prompts = [make_prompt(box=b, image_size=encoded.size) for b in boxes]

    def single():
        return [predictor.predict(encoded, box=b) for b in boxes]

    def batched():
        return predictor.predict(encoded, boxes=boxes)

    def decode_single():
        for p in prompts:
            predictor.decode(encoded, p)

    def decode_batched():
        predictor.decode_objects(encoded, prompts)

    agreement = min(dice(a.mask, b.mask) for a, b in zip(single(), batched(), strict=True))
    runs = {name: [] for name in ("single", "batched", "decode single", "decode batched")}
    for _ in range(args.rounds):  # interleaved: the machine's load hits every variant alike
        runs["single"].append(_timed(single))
        runs["batched"].append(_timed(batched))
        runs["decode single"].append(_timed(decode_single))
        runs["decode batched"].append(_timed(decode_batched))
    med = {name: statistics.median(values) * 1000 for name, values in runs.items()}
    per_run = predictor.backend.max_objects or len(boxes)
    print(f"{predictor.model_name} fp32, {predictor.backend.detail}, {args.threads} threads; {len(boxes)} boxes on "
          f"dsb_nuclei {image.shape[1]}x{image.shape[0]}, up to {per_run} objects per decoder run; "
          f"median of {args.rounds} interleaved rounds")
    print(f"min Dice batched vs single over the {len(boxes)} objects: {agreement:.5f}")
    for kind in ("", "decode "):
        one, many = med[f"{kind}single"], med[f"{kind}batched"]
        label = "decoder runs only" if kind else "predict (decoder + post-processing)"
        print(f"{label:38s}: {len(boxes)} single {one:8.1f} ms ({one / len(boxes):6.1f} ms/object) | batched "
              f"{many:8.1f} ms ({many / len(boxes):6.1f} ms/object) | single/batched {one / many:5.2f}x")

    if args.single_prompt_decoder is not None:
        old = cpu_session(args.single_prompt_decoder, args.threads)
        new = cpu_session(args.model_dir / "decoder.onnx", args.threads)  # the folder's fp32 decoder
        feed = prompts[0].decoder_inputs(encoded.embedding, encoded.size, predictor.input_size).feed()
        outputs = {name: session.run(list(DECODER_OUTPUTS), feed)[0] for name, session in (("old", old), ("new", new))}
        times = {"old": [], "new": []}
        for _ in range(args.rounds * 10):
            for name, session in (("old", old), ("new", new)):
                times[name].append(_timed(lambda s=session: s.run(list(DECODER_OUTPUTS), feed)))
        old_ms, new_ms = (statistics.median(times[n]) * 1000 for n in ("old", "new"))
        print(f"K = 1 decoder run: single-prompt graph {old_ms:.2f} ms, K-dimension graph {new_ms:.2f} ms "
              f"(new/old {new_ms / old_ms:.3f}); logits max abs difference "
              f"{float(np.abs(outputs['old'] - outputs['new']).max()):.2e}")


if __name__ == "__main__":
    main()
