"""A support set through whole volumes: four ways to turn per-slice answers into a 3D mask.

    .venv/bin/python benchmarks/support_volume.py --model-dir models/lite_medsam [--cache-dir runs/emb-cache]

For each structure the supports are ``--supports`` labelled slices spread over its extent, either of the same
scan (the clinician labels a few slices and wants the rest) or of the other patient of the same kind
(``cross``). Every slice of the query volume is segmented with the support set (``require_presence=True``, and
its searched answer from the same decoding), and:

- ``every slice``: every slice the support set marks present is kept;
- ``connected``: only the run of slices connected to the most confident one (:mod:`gmiseg_edge.runtime.
  support_volume`, steps 1-2; what ``segment --support`` did in session 6);
- ``connected, searched when empty``: the same, but on the searched answers when the first keep no slice
  (step 3; what ``segment --support`` does now);
- ``seed + propagate``: the most confident slice's mask (its largest component) seeds propagation
  (:func:`gmiseg_edge.runtime.propagate.propagate`) through the volume.

Dice is over the slices that are not supports (same-scan supports are slices of the query volume). ``extra``
counts slices with a mask where the structure is absent. A second table runs the same on volumes *without*
the structure (a slab of a scan beyond the structure's end, or a lung lesion's supports on the abdomen CT) and
counts the slices given a mask. The abdomen's liver, spleen and kidneys were looked at while choosing the
``connected`` rule; its other labels were looked at too (there is no unseen volume left): read the figures as
measured on the data the rule was chosen on. Prints markdown.
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
from gmiseg_edge.runtime.support_volume import choose_slices, connected_slices, slice_confidence

AXIS = 2
ABDOMEN = [("liver", 5), ("spleen", 1), ("kidney_right", 2), ("kidney_left", 3)] + [
    (f"label {v}", v) for v in (4, 6, 11, 14, 18, 20, 30, 31, 32, 86, 87)]
LESIONS = [("brain1", "brain1", "percentile"), ("lung2", "lung2", "lung"),
           ("brain1", "brain2", "percentile"), ("brain2", "brain1", "percentile"),
           ("lung2", "lung1", "lung"), ("lung1", "lung2", "lung")]  # (query, support scan, window)
# query volumes *without* the structure: (name, query scan, its slices, support scan, label, window)
ABSENT = [("lung lesion in the abdomen CT", "totalseg_abdomen", None, "lung2", 1, "lung"),
          ("breast1 lesion, slices 11-20", "breast1", (11, 21), "breast1", 1, "percentile"),
          ("kidney_right, slices 19-29", "totalseg_abdomen", (19, 30), "totalseg_abdomen", 2, "abdomen"),
          ("kidney_left, slices 23-29", "totalseg_abdomen", (23, 30), "totalseg_abdomen", 3, "abdomen")]
WAYS = ("every", "connected", "searched", "propagate")


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return mask if count <= 2 else labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _score(mask: np.ndarray, truth: np.ndarray, scored: np.ndarray) -> tuple[float, int]:
    present = truth.any(axis=(0, 1))
    extra = int((mask.any(axis=(0, 1)) & ~present & scored).sum())
    return dice(mask[:, :, scored], truth[:, :, scored]), extra


def run(predictor, name: str, query: str, support_scan: str, value: int, window: str, count: int,
        slices: tuple[int, int] | None = None, absent: bool = False) -> dict:
    """One query volume (its slices ``slices[0]..slices[1] - 1`` when given) segmented with ``count`` supports of
    label ``value`` from ``support_scan``; ``absent``: the query has no such structure (its truth is empty)."""
    image, labels = load_sample_pair(query)
    lo, hi = slices or (0, image.array.shape[AXIS])
    truth = np.zeros(image.array.shape, bool) if absent else labels.array == value
    truth = truth[:, :, lo:hi]
    if slices is not None and truth.any():
        raise ValueError(f"{name}: slices {lo}..{hi - 1} hold the structure")
    source = SliceSource(image.array, AXIS, window)  # the window of the whole scan, as a user would see it
    support_image, support_labels = load_sample_pair(support_scan)
    support_source, support_mask = SliceSource(support_image.array, AXIS, window), support_labels.array == value
    chosen = spread([int(k) for k in np.flatnonzero(support_mask.any(axis=(0, 1)))], count)
    segmenter = SupportSetSegmenter(predictor)
    for k in chosen:
        segmenter.add_support(support_source.pixels(k), slice_2d(support_mask, AXIS, k), name=f"{support_scan}@{k}")
    start = time.perf_counter()
    depth = hi - lo
    every, searched_every = np.zeros(truth.shape, bool), np.zeros(truth.shape, bool)
    confidence, searched_confidence = np.zeros(depth), np.zeros(depth)
    for i in range(depth):
        prediction, searched = segmenter.segment_with_search(source.pixels(lo + i))
        every[:, :, i], searched_every[:, :, i] = prediction.mask.T, searched.mask.T
        confidence[i], searched_confidence[i] = slice_confidence(prediction), slice_confidence(searched)
    seconds = time.perf_counter() - start
    planes = [every[:, :, i] for i in range(depth)]
    connected = every.copy()
    connected[:, :, ~connected_slices(planes, confidence)] = False
    choice = choose_slices(planes, confidence, [searched_every[:, :, i] for i in range(depth)], searched_confidence)
    searched_mask = (searched_every if choice.searched else every).copy()
    searched_mask[:, :, ~choice.keep] = False
    propagated = np.zeros(truth.shape, bool)
    if confidence.max() > 0:
        seed = int(np.argmax(confidence))
        seed_mask = _largest_component(slice_2d(every, AXIS, seed))
        propagated = predictor.propagate(image.array[:, :, lo:hi], seed, mask=seed_mask, axis=AXIS,
                                         window=window).mask
    scored = np.ones(depth, bool)
    if query == support_scan:
        scored[[k - lo for k in chosen if lo <= k < hi]] = False
    row = {"structure": name, "supports": "same scan" if query == support_scan else f"cross ({support_scan})",
           "seconds": seconds, "slices": depth, "search_used": choice.searched}
    for key, mask in zip(WAYS, (every, connected, searched_mask, propagated), strict=True):
        row[key], row[f"{key}_extra"] = _score(mask, truth, scored)
    return row


def _cells(row: dict) -> list[str]:
    """Dice (extra slices) per way; the searched column marked when the search was used."""
    cells = [f"{row[k]:.3f} ({row[f'{k}_extra']})" for k in WAYS]
    if row["search_used"]:
        cells[WAYS.index("searched")] += " searched"
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--supports", type=int, default=3)
    parser.add_argument("--only", choices=("all", "lesions"), default="all",
                        help="lesions: the lesion and absent-structure rows only (no abdomen organs)")
    args = parser.parse_args()
    predictor = load(args.model_dir, backend="ort", cache=args.cache_dir)
    organs = [] if args.only == "lesions" else [
        run(predictor, name, "totalseg_abdomen", "totalseg_abdomen", value, "abdomen", args.supports)
        for name, value in ABDOMEN]
    rows = organs + [run(predictor, f"{query} lesion", query, scan, 1, window, args.supports)
                     for query, scan, window in LESIONS]
    absent = [run(predictor, name, query, scan, value, window, args.supports, slices=slices, absent=slices is None)
              for name, query, slices, scan, value, window in ABSENT]
    print("| structure | supports | every slice: Dice (extra) | connected: Dice (extra) | connected, searched when "
          "empty: Dice (extra) | seed + propagate: Dice (extra) | s / slice |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['structure']} | {r['supports']} | " + " | ".join(_cells(r)) + f" | "
              f"{r['seconds'] / r['slices']:.2f} |")
    groups = [("abdomen, same scan", organs), ("lesions", rows[len(organs):]), ("all", rows)]
    for label, subset in groups:
        if not subset:
            continue
        means = [np.mean([r[k] for r in subset]) for k in WAYS]
        extras = [sum(r[f"{k}_extra"] for r in subset) for k in WAYS]
        print(f"| **mean, {label}** ({len(subset)}) | | " + " | ".join(
            f"**{m:.3f}** ({e})" for m, e in zip(means, extras, strict=True)) + " | |")
    print("\nvolumes without the structure: slices given a mask (of the slices)\n")
    print("| query | supports | every slice | connected | connected, searched when empty | seed + propagate |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in absent:
        cells = [f"{r[f'{k}_extra']}/{r['slices']}" for k in WAYS]
        if r["search_used"]:
            cells[WAYS.index("searched")] += " searched"
        print(f"| {r['structure']} | {r['supports']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
