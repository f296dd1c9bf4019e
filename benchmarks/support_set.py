"""Support-set segmentation (no re-training) against box prompts, per shipped sample case, in ONNX Runtime.

    .venv/bin/python benchmarks/support_set.py --model-dir models/lite_medsam [--cache-dir runs/emb-cache]

For every (case, label) of the shipped sample data the query is the slice with the largest label area
(``load_sample_cases()``); the query's own slice is never a support (leave-one-out). Dice of:

- ``box``: a box prompt from the query's own label extent (the interactive upper reference);
- support sets, each scored three ways from one run: ``prior`` (the fused anatomy + appearance prior alone,
  ``prior > 0.5``), ``SAM`` (the decoder prompted by the prior, alone) and ``final`` (SAM fused with the prior,
  what ``segment`` returns; "k appearance": k supports took their appearance candidate), for
  - ``same``: up to ``--supports`` other labelled slices of the same volume, spread evenly over the label's
    extent;
  - ``cross``: the labelled slices of the *other* patient of the same kind (brain1 <-> brain2, lung1 <-> lung2),
    up to ``--supports`` spread. The abdomen sample is one scan: its ``cross`` column uses slices of the same scan
    at least ``--far`` slices from the query (marked ``†``); breast1 has no other patient ("-").

Every support and query is given its pixel spacing (``spacing=``, from the file's header).
``require_presence=False`` here (the structure is on the query). The presence table then counts, with
``require_presence=True`` and the ``same`` supports, how many slices *without* the structure get a non-empty
mask (false positives) and how many labelled slices are kept (true positives), for the volumes that have
slices without it (breast1, right and left kidney). Nothing is trained or tuned on the queries; the supports are
chosen deterministically (no randomness). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.core.selection import spread
from gmiseg_edge.data import load_sample_cases
from gmiseg_edge.data.samples import load_sample_pair, load_sample_slice
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import SupportSetSegmenter, load
from gmiseg_edge.runtime.support.segmenter import STRATEGIES

PRESENCE_CASES = (("breast1", "lesion"), ("totalseg_abdomen", "kidney_right"), ("totalseg_abdomen", "kidney_left"))


def kind(case) -> str:
    """``brain1`` -> ``brain``: cases of one kind share modality, anatomy and label."""
    return case.case.rstrip("0123456789")


def segmenter_for(predictor, supports, **options) -> SupportSetSegmenter:
    segmenter = SupportSetSegmenter(predictor, **options)
    for support in supports:
        segmenter.add_support(support.image, support.mask, name=support.name, spacing=support.spacing)
    return segmenter


def three_ways(predictor, supports, query, **options) -> tuple[float, float, float, int]:
    """Dice of the prior alone, SAM alone and the final (fused) mask, from one ``segment`` call, and how many
    supports took their appearance candidate."""
    result = segmenter_for(predictor, supports, **options).segment(query.image, spacing=query.spacing)
    sam = np.tensordot(result.weights, np.stack([m.sam_probability for m in result.matches]), axes=1)
    switched = sum(m.chosen == "appearance" and m.anatomy is not None for m in result.matches)
    return dice(result.prior > 0.5, query.mask), dice(sam > 0.5, query.mask), dice(result.mask, query.mask), switched


def cross_supports(query, queries, slices, count: int, far: int) -> tuple[list, str]:
    """Other-patient supports, or for a single-scan sample same-scan slices at least ``far`` slices away."""
    others = [c for c in queries if c.case != query.case and kind(c) == kind(query) and c.label == query.label]
    if others:
        pool = [s for other in others for s in slices[other.name]]
        return spread(pool, count), ""
    if query.case == "totalseg_abdomen":
        pool = [c for c in slices[query.name] if abs(c.slice_index - query.slice_index) >= far]
        return spread(pool, count), "†"
    return [], ""


def presence_rows(predictor, count: int, **options):
    rows = []
    for name, label in PRESENCE_CASES:
        labelled = load_sample_cases([name], slices="all", labels=[label])
        supports = spread(labelled, count)
        segmenter = segmenter_for(predictor, supports, **options)
        image, _ = load_sample_pair(name)
        with_label = {c.slice_index for c in labelled}
        fp = absent = kept = tested = 0
        for index in range(image.array.shape[2]):
            if index in with_label:
                if index in {s.slice_index for s in supports}:
                    continue
                case = next(c for c in labelled if c.slice_index == index)
                tested += 1
                kept += bool(segmenter.segment(case.image, require_presence=True, spacing=case.spacing).mask.any())
            else:
                case = load_sample_slice(name, index, axis=2, label=label)
                absent += 1
                fp += bool(segmenter.segment(case.image, require_presence=True, spacing=case.spacing).mask.any())
        rows.append((f"{name}/{label}", f"{fp}/{absent}", f"{kept}/{tested}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="model folder from `gmiseg-edge export`")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--supports", type=int, default=3, help="supports per query")
    parser.add_argument("--far", type=int, default=5, help="single-scan 'cross' supports: slices at least this far")
    parser.add_argument("--no-mask-prompt", action="store_true", help="no prior as mask_input to the decoder")
    parser.add_argument("--rigid", action="store_true", help="no B-spline stage")
    parser.add_argument("--choice", default="auto", choices=list(STRATEGIES["choice"]),
                        help="candidate per support: chosen by evidence, or always the anatomy / appearance one")
    parser.add_argument("--appearance", default="auto", choices=list(STRATEGIES["appearance"]),
                        help="appearance direction: the linear probe from 2 supports on and prototypes for one (auto), "
                             "or always the probe, or always per-support prototypes")
    parser.add_argument("--no-presence", action="store_true", help="skip the presence table")
    parser.add_argument("--cache-dir", default=None, help="disk embedding cache (re-runs skip the encoder)")
    args = parser.parse_args()
    options = {"mask_prompt": not args.no_mask_prompt, "deformable": not args.rigid, "choice": args.choice,
               "appearance": args.appearance}

    predictor = load(args.model_dir, backend=args.backend, precision=args.precision, cache=args.cache_dir)
    queries = load_sample_cases()
    slices = defaultdict(list)
    for case in load_sample_cases(slices="all"):
        slices[case.name].append(case)
    start = time.perf_counter()
    rows, scores = [], defaultdict(list)
    for query in queries:
        box = dice(predictor.predict(query.image, box=box_from_mask(query.mask)).mask, query.mask)
        row = [query.name, query.modality, f"{box:.3f}"]
        same = spread([c for c in slices[query.name] if c.slice_index != query.slice_index], args.supports)
        cross, mark = cross_supports(query, queries, slices, args.supports, args.far)
        for column, supports, note in (("same", same, ""), ("cross", cross, mark)):
            if not supports:
                row += ["-"] * 3
                continue
            *values, switched = three_ways(predictor, supports, query, **options)
            took = f", {switched} appearance" if switched else ""
            row += [f"{v:.3f}" for v in values[:2]] + [f"**{values[2]:.3f}** ({len(supports)}{note}{took})"]
            scores[column].append((box, *values))
        rows.append(row)
    print(f"support sets vs box prompts, {predictor.model_name} {args.precision}, {predictor.backend.detail}; "
          f"options {options}; query = largest labelled slice; Dice (number of supports)\n")
    print("| case | modality | box prompt | same: prior | same: SAM | same: final | cross: prior | cross: SAM "
          "| cross: final |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n† single scan: same-scan slices at least", args.far, "slices from the query\n")
    print("| supports | cases | box mean | prior mean | SAM mean | final mean | final / box | final min |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for column, values in scores.items():
        table = np.asarray(values)
        mean = table.mean(axis=0)
        print(f"| {column} | {len(table)} | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} | {mean[3]:.3f} | "
              f"{mean[3] / mean[0]:.2f} | {table[:, 3].min():.3f} |")
    if not args.no_presence:
        print(f"\npresence (require_presence=True, {args.supports} same-scan supports)\n")
        print("| structure | false positives (slices without it) | kept (slices with it) |")
        print("| --- | --- | --- |")
        for row in presence_rows(predictor, args.supports, **options):
            print("| " + " | ".join(row) + " |")
    stats = predictor.stats
    print(f"\n{time.perf_counter() - start:.0f} s; encoder runs {stats.encoder_runs}, cache hits {stats.hits}")


if __name__ == "__main__":
    main()
