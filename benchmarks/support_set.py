"""Support-set segmentation (no re-training) against box prompts, per shipped sample case, in ONNX Runtime.

    .venv/bin/python benchmarks/support_set.py --model-dir models/lite_medsam [--cache-dir runs/emb-cache]

For every (case, label) of the shipped sample data, the query is the slice with the largest label area
(``load_sample_cases()``) and is scored (Dice) with:

- ``box``: a box prompt from the query's own label extent (the interactive upper reference);
- ``same case``: a support set of up to ``--supports`` other labelled slices of the same volume
  (``load_sample_cases(slices="all")``), spread evenly over the label's extent, the query slice excluded;
- ``other cases``: the largest labelled slice of every *other* case of the same kind and label (brain1 <->
  brain2 MR lesions, lung1 <-> lung2 CT lesions); "-" where there is none;

both with ``require_presence=False`` (the structure is known to be on the query). Nothing is trained or
tuned on the queries. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.data import load_sample_cases
from gmiseg_edge.jobs.segment_files import spread
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import SupportSetSegmenter, load


def kind(case) -> str:
    """``brain1`` -> ``brain``: cases of one kind share modality, anatomy and label."""
    return case.case.rstrip("0123456789")


def support_dice(predictor, supports, query) -> float:
    segmenter = SupportSetSegmenter(predictor)
    for support in supports:
        segmenter.add_support(support.image, support.mask, name=support.name)
    return dice(segmenter.segment(query.image).mask, query.mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="model folder from `gmiseg-edge export`")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--supports", type=int, default=3, help="same-case supports per query")
    parser.add_argument("--cache-dir", default=None, help="disk embedding cache (re-runs skip the encoder)")
    args = parser.parse_args()

    predictor = load(args.model_dir, backend=args.backend, precision=args.precision, cache=args.cache_dir)
    queries = load_sample_cases()
    slices = defaultdict(list)
    for case in load_sample_cases(slices="all"):
        slices[case.name].append(case)
    start = time.perf_counter()
    rows = []
    for query in queries:
        box = dice(predictor.predict(query.image, box=box_from_mask(query.mask)).mask, query.mask)
        same = spread([c for c in slices[query.name] if c.slice_index != query.slice_index], args.supports)
        others = [c for c in queries if c.case != query.case and kind(c) == kind(query) and c.label == query.label]
        rows.append((
            query.name, query.modality, f"{box:.3f}",
            f"{support_dice(predictor, same, query):.3f} ({len(same)})" if same else "-",
            f"{support_dice(predictor, others, query):.3f} ({len(others)})" if others else "-",
        ))
    print(f"support-set vs box prompts, {predictor.model_name} {args.precision}, {predictor.backend.detail}; "
          f"query = largest labelled slice; Dice (number of supports)\n")
    print("| case | modality | box prompt | supports: same case | supports: other cases |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    stats = predictor.stats
    print(f"\n{time.perf_counter() - start:.0f} s; encoder runs {stats.encoder_runs}, cache hits {stats.hits}")


if __name__ == "__main__":
    main()
