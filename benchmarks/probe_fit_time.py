"""Time to fit a support set's appearance models (the linear probe, ``runtime/embedding_probe.py``, and each
support's calibration under it) against the number of supports, on real supports, in ONNX Runtime.

    .venv/bin/python benchmarks/probe_fit_time.py --model-dir models/lite_medsam [--cache-dir runs/emb-cache]

Supports: N labelled liver slices of the abdomen CT sample, spread over its extent. The supports are encoded
(through the cache) before the clock starts; the time is that of ``SupportSetSegmenter.appearance_models()``,
which runs once per support set, not per query. Median of ``--repeats`` fits. Prints markdown.
"""

from __future__ import annotations

import argparse
import statistics
import time

from gmiseg_edge.core.selection import spread
from gmiseg_edge.data import load_sample_cases
from gmiseg_edge.runtime import SupportSetSegmenter, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--sizes", default="1,3,8,16")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    predictor = load(args.model_dir, backend="ort", cache=args.cache_dir)
    slices = load_sample_cases(["totalseg_abdomen"], slices="all", labels=["liver"])
    print("| supports | probe | prototypes |")
    print("| --- | --- | --- |")
    for size in (int(n) for n in args.sizes.split(",")):
        cells = []
        for method in ("probe", "prototype"):
            seconds = []
            for _ in range(args.repeats):
                segmenter = SupportSetSegmenter(predictor, appearance=method)
                for case in spread(slices, size):
                    segmenter.add_support(case.image, case.mask, name=f"liver slice {case.slice_index}")
                start = time.perf_counter()
                segmenter.appearance_models()
                seconds.append(time.perf_counter() - start)
            cells.append(f"{statistics.median(seconds):.2f} s")
        print(f"| {size} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
