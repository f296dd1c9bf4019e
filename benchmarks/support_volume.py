"""A support set through whole volumes: three ways to turn per-slice answers into a 3D mask.

    .venv/bin/python benchmarks/support_volume.py --model-dir models/lite_medsam [--cache-dir runs/emb-cache]

For each structure the supports are ``--supports`` labelled slices spread over its extent, either of the same
scan (the clinician labels a few slices and wants the rest) or of the other patient of the same kind
(``cross``). Every slice of the query volume is segmented with the support set (``require_presence=True``), and:

- ``every slice``: every slice the support set marks present is kept (``segment --support`` before this
  benchmark);
- ``connected``: only the run of slices connected to the most confident one (:mod:`gmiseg_edge.runtime.
  support_volume`, what ``segment --support`` does now);
- ``seed + propagate``: the most confident slice's mask (its largest component) seeds propagation
  (:func:`gmiseg_edge.runtime.propagate.propagate`) through the volume.

Dice is over the slices that are not supports (same-scan supports are slices of the query volume). ``extra``
counts slices with a mask where the structure is absent. The abdomen's liver, spleen and kidneys were looked at
while choosing the ``connected`` rule; its other labels were looked at too (there is no unseen volume left):
read the figures as measured on the data the rule was chosen on. Prints markdown.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from gmiseg_edge.core.selection import spread
from gmiseg_edge.data import load_sample_pair
from gmiseg_edge.data.slicing import slice_2d
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import SupportSetSegmenter, load
from gmiseg_edge.runtime.propagate import SliceSource
from gmiseg_edge.runtime.support_volume import connected_slices, slice_confidence

AXIS = 2
ABDOMEN = [("liver", 5), ("spleen", 1), ("kidney_right", 2), ("kidney_left", 3)] + [
    (f"label {v}", v) for v in (4, 6, 11, 14, 18, 20, 30, 31, 32, 86, 87)]
LESIONS = [("brain1", "brain1", "percentile"), ("lung2", "lung2", "lung"),
           ("brain1", "brain2", "percentile"), ("lung2", "lung1", "lung")]  # (query, support scan, window)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return mask if count <= 2 else labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _score(mask: np.ndarray, truth: np.ndarray, scored: np.ndarray) -> tuple[float, int]:
    present = truth.any(axis=(0, 1))
    extra = int((mask.any(axis=(0, 1)) & ~present & scored).sum())
    return dice(mask[:, :, scored], truth[:, :, scored]), extra


def run(predictor, name: str, query: str, support_scan: str, value: int, window: str, count: int) -> dict:
    image, labels = load_sample_pair(query)
    truth = labels.array == value
    source = SliceSource(image.array, AXIS, window)
    support_image, support_labels = load_sample_pair(support_scan)
    support_source, support_mask = SliceSource(support_image.array, AXIS, window), support_labels.array == value
    chosen = spread([int(k) for k in np.flatnonzero(support_mask.any(axis=(0, 1)))], count)
    segmenter = SupportSetSegmenter(predictor)
    for k in chosen:
        segmenter.add_support(support_source.pixels(k), slice_2d(support_mask, AXIS, k), name=f"{support_scan}@{k}")
    start = time.perf_counter()
    depth = truth.shape[AXIS]
    every = np.zeros(truth.shape, bool)
    confidence = np.zeros(depth)
    for k in range(depth):
        prediction = segmenter.segment(source.pixels(k), require_presence=True)
        every[:, :, k] = prediction.mask.T
        confidence[k] = slice_confidence(prediction)
    seconds = time.perf_counter() - start
    connected = every.copy()
    connected[:, :, ~connected_slices([every[:, :, k] for k in range(depth)], confidence)] = False
    propagated = np.zeros(truth.shape, bool)
    if confidence.max() > 0:
        seed = int(np.argmax(confidence))
        seed_mask = _largest_component(slice_2d(every, AXIS, seed))
        propagated = predictor.propagate(image.array, seed, mask=seed_mask, axis=AXIS, normalise=window).mask
    scored = np.ones(depth, bool)
    if query == support_scan:
        scored[chosen] = False
    row = {"structure": name, "supports": "same scan" if query == support_scan else f"cross ({support_scan})",
           "seconds": seconds, "slices": depth}
    for key, mask in (("every", every), ("connected", connected), ("propagate", propagated)):
        row[key], row[f"{key}_extra"] = _score(mask, truth, scored)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--supports", type=int, default=3)
    args = parser.parse_args()
    predictor = load(args.model_dir, backend="ort", cache=args.cache_dir)
    rows = [run(predictor, name, "totalseg_abdomen", "totalseg_abdomen", value, "abdomen", args.supports)
            for name, value in ABDOMEN]
    rows += [run(predictor, f"{query} lesion", query, scan, 1, window, args.supports)
             for query, scan, window in LESIONS]
    print("| structure | supports | every slice: Dice (extra) | connected: Dice (extra) | seed + propagate: Dice "
          "(extra) | s / slice |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [f"{r[k]:.3f} ({r[f'{k}_extra']})" for k in ("every", "connected", "propagate")]
        print(f"| {r['structure']} | {r['supports']} | " + " | ".join(cells) + f" | {r['seconds'] / r['slices']:.2f} |")
    for label, subset in (("abdomen, same scan", rows[:len(ABDOMEN)]), ("all", rows)):
        means = [np.mean([r[k] for r in subset]) for k in ("every", "connected", "propagate")]
        extras = [sum(r[f"{k}_extra"] for r in subset) for k in ("every", "connected", "propagate")]
        print(f"| **mean, {label}** ({len(subset)}) | | " + " | ".join(
            f"**{m:.3f}** ({e})" for m, e in zip(means, extras, strict=True)) + " | |")


if __name__ == "__main__":
    main()
