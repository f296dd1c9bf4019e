"""Support-set size study: Dice against the number of supports N = 1, 2, 4, 8, 16, in ONNX Runtime.

    .venv/bin/python benchmarks/support_size.py --model-dir models/lite_medsam [--cache-dir runs/emb-cache]
        [--repeats 3] [--seed 0] [--plot runs/support_size.png]

For every (case, label) of the shipped volumes with at least two labelled slices, the query is the slice with the
largest label area; for each N up to the number of *other* labelled slices of the same volume, ``--repeats``
random N-subsets of those slices (seeded, ``numpy.random.default_rng(seed)``; all of them once when there are fewer
distinct subsets) are the support set. Prints a markdown table of the mean Dice (final mask, and the prior alone in
brackets) per structure and N, and the mean over the structures that reach that N; with ``--plot`` (and matplotlib)
writes the curves as a PNG.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict

import numpy as np

from gmiseg_edge.data import load_sample_cases
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import SupportSetSegmenter, load

SIZES = (1, 2, 4, 8, 16)


def subsets(count: int, size: int, repeats: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """``repeats`` distinct random ``size``-subsets of ``range(count)`` (all of them if there are fewer)."""
    if math.comb(count, size) <= repeats:
        from itertools import combinations

        return list(combinations(range(count), size))
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < repeats:
        chosen.add(tuple(sorted(rng.choice(count, size, replace=False).tolist())))
    return sorted(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="model folder from `gmiseg-edge export`")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="random subsets per N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="disk embedding cache (re-runs skip the encoder)")
    parser.add_argument("--plot", default=None, help="write the curves to this PNG (needs matplotlib)")
    args = parser.parse_args()

    predictor = load(args.model_dir, backend=args.backend, cache=args.cache_dir)
    rng = np.random.default_rng(args.seed)
    slices = defaultdict(list)
    for case in load_sample_cases(slices="all"):
        slices[case.name].append(case)
    start = time.perf_counter()
    results: dict[str, dict[int, tuple[float, float, int]]] = {}
    for name, cases in slices.items():
        if len(cases) < 2:
            continue
        query = max(cases, key=lambda c: int(c.mask.sum()))
        pool = [c for c in cases if c.slice_index != query.slice_index]
        results[name] = {}
        for size in (n for n in SIZES if n <= len(pool)):
            finals, priors = [], []
            for subset in subsets(len(pool), size, args.repeats, rng):
                segmenter = SupportSetSegmenter(predictor)
                for i in subset:
                    segmenter.add_support(pool[i].image, pool[i].mask, name=pool[i].name)
                result = segmenter.segment(query.image)
                finals.append(dice(result.mask, query.mask))
                priors.append(dice(result.prior > 0.5, query.mask))
            results[name][size] = (float(np.mean(finals)), float(np.mean(priors)), len(finals))
    print(f"support-set size, {predictor.model_name}, {predictor.backend.detail}; query = largest labelled slice, "
          f"supports = random other labelled slices of the same volume (seed {args.seed}, up to {args.repeats} "
          f"subsets per N); mean Dice final (prior alone)\n")
    print("| structure | other slices | " + " | ".join(f"N={n}" for n in SIZES) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in SIZES) + " |")
    for name, row in results.items():
        cells = [f"{row[n][0]:.3f} ({row[n][1]:.3f})" if n in row else "-" for n in SIZES]
        print(f"| {name} | {len(slices[name]) - 1} | " + " | ".join(cells) + " |")
    means = []
    for n in SIZES:
        values = [row[n] for row in results.values() if n in row]
        means.append(f"{np.mean([v[0] for v in values]):.3f} ({np.mean([v[1] for v in values]):.3f}) "
                     f"[{len(values)}]" if values else "-")
    print("| mean [structures] | | " + " | ".join(means) + " |")
    print(f"\n{time.perf_counter() - start:.0f} s")
    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plot")
            return
        figure, axes = plt.subplots(figsize=(6, 4))
        for name, row in results.items():
            sizes = sorted(row)
            axes.plot(sizes, [row[n][0] for n in sizes], marker="o", label=name)
        axes.set_xscale("log", base=2)
        axes.set_xlabel("supports N")
        axes.set_ylabel("Dice (final)")
        axes.set_ylim(0, 1)
        axes.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
