"""Held-out check of the support-set method: the abdomen CT's *other* labels, never looked at while its
settings were chosen (those were chosen on liver, spleen, both kidneys and the four lesions).

    .venv/bin/python benchmarks/support_other_labels.py --model-dir models/lite_medsam [--cache-dir runs/emb-cache]

For each label value of ``totalsegmentator/example_seg.nii.gz`` other than 1, 2, 3 and 5 with at least
``--min-slices`` labelled slices along the last axis: the query is the slice of largest area, the supports
``--supports`` other labelled slices spread over the label's extent (same scan). Dice of a box from the query's
own extent, of the support set (``choice="auto"``) and of the anatomy candidate alone (``choice="anatomy"``).
Labels are given by value (the TotalSegmentator class map is not shipped with the sample). Prints markdown.
"""

from __future__ import annotations

import argparse

import numpy as np

from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.core.selection import spread
from gmiseg_edge.data import apply_window, load_sample_pair
from gmiseg_edge.data.slicing import slice_2d
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import SupportSetSegmenter, load

SEEN = (1, 2, 3, 5)  # liver, spleen, kidneys: looked at while the settings were chosen
AXIS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--supports", type=int, default=3)
    parser.add_argument("--min-slices", type=int, default=5)
    parser.add_argument("--min-area", type=int, default=150, help="pixels of the query slice's label")
    parser.add_argument("--appearance", default="auto", choices=("auto", "probe", "prototype"),
                        help="appearance direction: the linear probe from 2 supports on and prototypes for one (auto), "
                             "or always the probe, or always per-support prototypes")
    args = parser.parse_args()
    predictor = load(args.model_dir, backend="ort", cache=args.cache_dir)
    image, labels = load_sample_pair("totalseg_abdomen")
    volume, label_map = image.array, labels.array
    print("| label | slices | query area px | box | support set (auto) | anatomy only | switched |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for value in sorted(int(v) for v in np.unique(label_map) if v and int(v) not in SEEN):
        mask = label_map == value
        areas = mask.sum(axis=(0, 1))
        labelled = [int(k) for k in np.flatnonzero(areas)]
        query_k = int(np.argmax(areas))
        if len(labelled) < args.min_slices or areas[query_k] < args.min_area:
            continue
        pixels = {k: apply_window(slice_2d(volume, AXIS, k), "abdomen") for k in labelled}
        masks = {k: slice_2d(mask, AXIS, k) for k in labelled}
        support_ks = spread([k for k in labelled if k != query_k], args.supports)
        box = dice(predictor.predict(pixels[query_k], box=box_from_mask(masks[query_k])).mask, masks[query_k])
        scores, switched = {}, 0
        for choice in ("auto", "anatomy"):
            segmenter = SupportSetSegmenter(predictor, choice=choice, appearance=args.appearance)
            for k in support_ks:
                segmenter.add_support(pixels[k], masks[k], name=f"label {value} slice {k}")
            result = segmenter.segment(pixels[query_k])
            scores[choice] = dice(result.mask, masks[query_k])
            if choice == "auto":
                switched = sum(m.chosen == "appearance" and m.anatomy is not None for m in result.matches)
        rows.append((box, scores["auto"], scores["anatomy"]))
        print(f"| {value} | {len(labelled)} | {int(areas[query_k])} | {box:.3f} | {scores['auto']:.3f} | "
              f"{scores['anatomy']:.3f} | {switched}/{len(support_ks)} |", flush=True)
    if rows:
        box, auto, anatomy = (np.asarray(c) for c in zip(*rows, strict=True))
        print(f"| mean of {len(rows)} | | | {box.mean():.3f} | {auto.mean():.3f} | {anatomy.mean():.3f} | |")
        print(f"\nsupport set / box: {auto.mean() / box.mean():.2f}; labels below 0.5 with the support set: "
              f"{int((auto < 0.5).sum())} of {len(rows)}")


if __name__ == "__main__":
    main()
