"""Propagation through volumes (DESIGN §10): accuracy against per-slice boxes, speed, and memory.

Accuracy: on the shipped TotalSegmentator CT (liver, spleen, kidneys; abdomen window) and the lesion volumes
(brain1, lung2), propagation from ONE box (the exact extent on the slice of largest area) against the per-slice
upper bound (every labelled slice given its own exact box): 3D Dice and NSD at 2 mm, where it stopped and why,
slices of the structure it never reached (early stop) and slices it kept beyond the structure (leak).

Speed: encoder time of one image (B=1) on this machine, then propagation through a 300-slice synthetic
volume (a tube of slowly varying radius through every slice) with a fresh cache: seconds per slice against
the encoder's, slices/s, and MedficientSAM's published 9 s per 3D case for scale. Memory: RSS sampled every 25
slices of that run (flat: the cache is bounded and only the slices encoded ahead are held).

    PYTHONPATH=. python benchmarks/propagation.py --model-dir runs/prop_lite_medsam [--slices 300] [--ablation]
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.data import load_sample_pair
from gmiseg_edge.data.slicing import largest_index, slice_2d
from gmiseg_edge.metrics import dice, normalized_surface_dice
from gmiseg_edge.runtime import EmbeddingCache, load
from gmiseg_edge.runtime.propagate import PropagationSettings, SliceSource

CASES = [  # (case, window, label name, value)
    ("totalseg_abdomen", "abdomen", "liver", 5),
    ("totalseg_abdomen", "abdomen", "spleen", 1),
    ("totalseg_abdomen", "abdomen", "kidney_right", 2),
    ("totalseg_abdomen", "abdomen", "kidney_left", 3),
    ("brain1", "percentile", "lesion", 1),
    ("lung2", "lung", "lesion", 1),
]
MEDFICIENTSAM_S_PER_CASE = 9.0  # MedficientSAM (CVPR 2024 MedSAM-on-laptop), published mean per 3D case
TOLERANCE_MM = 2.0


def nsd(pred: np.ndarray, truth: np.ndarray, spacing, tolerance: float = TOLERANCE_MM) -> float:
    """Normalised surface Dice at ``tolerance`` mm."""
    return normalized_surface_dice(pred, truth, spacing, tolerance)


def upper_bound(predictor, source: SliceSource, truth: np.ndarray) -> np.ndarray:
    """Every labelled slice along the last axis segmented with its own exact box."""
    out = np.zeros(truth.shape, bool)
    for k in np.flatnonzero(truth.any(axis=(0, 1))):
        mask = slice_2d(truth, 2, int(k))
        out[:, :, k] = predictor.predict(source.pixels(int(k)), box=box_from_mask(mask)).mask.T
    return out


def accuracy(predictor, settings: PropagationSettings) -> list[dict]:
    rows = []
    for case, window, name, value in CASES:
        image, labels = load_sample_pair(case)
        truth = labels.array == value
        source = SliceSource(image.array, 2, window)
        seed = largest_index(truth, 2)
        result = predictor.propagate(image.array, seed, box=box_from_mask(slice_2d(truth, 2, seed)),
                                     window=window, settings=settings)
        bound = upper_bound(predictor, source, truth)
        present = truth.any(axis=(0, 1))
        rows.append({
            "case": f"{case}/{name}", "seed": seed, "extent": (int(np.flatnonzero(present)[0]),
                                                               int(np.flatnonzero(present)[-1])),
            "dice": dice(result.mask, truth), "nsd": nsd(result.mask, truth, image.spacing),
            "ub_dice": dice(bound, truth), "ub_nsd": nsd(bound, truth, image.spacing),
            "kept": result.kept_range, "stops": result.stops,
            "missed": int(np.count_nonzero(present & ~result.kept)),
            "leaked": int(np.count_nonzero(~present & result.kept)),
        })
    return rows


def print_accuracy(rows: list[dict], title: str) -> None:
    print(f"\n### {title}\n")
    print("| structure | labelled slices | seed | Dice | NSD 2 mm | upper bound Dice | NSD | gap Dice | kept | "
          "stop down | stop up | missed / leaked slices |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        down, up = r["stops"]["down"], r["stops"]["up"]
        kept = "-" if r["kept"] is None else f"{r['kept'][0]}..{r['kept'][1]}"
        print(f"| {r['case']} | {r['extent'][0]}..{r['extent'][1]} | {r['seed']} | {r['dice']:.3f} | {r['nsd']:.3f} | "
              f"{r['ub_dice']:.3f} | {r['ub_nsd']:.3f} | {r['dice'] - r['ub_dice']:+.3f} | {kept} | "
              f"{down.reason} ({down.slice}) | {up.reason} ({up.slice}) | {r['missed']} / {r['leaked']} |")


def synthetic_volume(depth: int, size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (size, size, depth): a bright tube whose radius and centre drift slowly, on a textured background."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    volume = np.empty((size, size, depth), np.uint8)
    truth = np.zeros((size, size, depth), bool)
    for k in range(depth):
        radius = 22 + 8 * np.sin(k / 23.0)
        cx, cy = size / 2 + 15 * np.sin(k / 37.0), size / 2 + 10 * np.cos(k / 41.0)
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2
        plane = 60 + rng.normal(0, 8, (size, size))
        plane[inside] = 170 + rng.normal(0, 8, int(inside.sum()))
        volume[:, :, k] = np.clip(plane, 0, 255).astype(np.uint8).T
        truth[:, :, k] = inside.T
    return volume, truth


def rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def encoder_seconds(predictor, source: SliceSource, runs: int = 3) -> float:
    """Median seconds of one single-image encoder run (B=1) on slices of ``source``, after one warm-up."""
    from gmiseg_edge.core.transforms import preprocess

    tensors = [preprocess(source.pixels(k), predictor.preprocess_config).tensor for k in range(runs + 1)]
    predictor.backend.encode(tensors[0])
    times = []
    for tensor in tensors[1:]:
        start = time.perf_counter()
        predictor.backend.encode(tensor)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def speed_and_memory(model_dir: Path, depth: int, batches: list[int], threads: int) -> None:
    volume, truth = synthetic_volume(depth)
    source = SliceSource(volume, 2, None)
    print(f"\n### Speed and memory: {depth}-slice synthetic volume {volume.shape}, fresh 256 MiB cache per run\n")
    print("| batch | seconds | slices visited | encoded | s/slice | encoder B=1 s | ratio to B=1 encoder x visited "
          "| slices/s | RSS MiB at 25, 50, ... slices | peak RSS MiB | cache MiB | Dice |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for batch in batches:
        predictor = load(model_dir, backend="ort", threads=threads, cache=EmbeddingCache())
        single = encoder_seconds(predictor, source)
        seed = depth // 2
        samples: list[float] = []

        def sample(done: int, total: int, samples=samples) -> None:
            if done % 25 == 0:
                samples.append(rss_mib())

        settings = PropagationSettings(batch_size=batch)
        result = predictor.propagate(volume, seed, box=box_from_mask(slice_2d(truth, 2, seed)),
                                     settings=settings, progress=sample)
        visited = result.slices_visited
        ratio = result.seconds / (single * visited)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"| {batch} | {result.seconds:.1f} | {visited} | {result.encoded} | {result.seconds / visited:.3f} | "
              f"{single:.3f} | {ratio:.3f} | {visited / result.seconds:.2f} | "
              f"{', '.join(f'{v:.0f}' for v in samples)} | {peak:.0f} | {predictor.stats.bytes / 2**20:.0f} | "
              f"{dice(result.mask, truth):.3f} |")
        predictor.close()
    print(f"\nMedficientSAM publishes {MEDFICIENTSAM_S_PER_CASE:.0f} s per 3D case (its own CPU, its own cases); "
          "the per-organ seconds on the sample CT are in the table above.")


def organ_times(model_dir: Path, threads: int, batch: int) -> None:
    print(f"\n### Seconds per 3D case (sample CT, fresh cache, batch {batch}) vs MedficientSAM's "
          f"{MEDFICIENTSAM_S_PER_CASE:.0f} s\n")
    print("| structure | slices visited | encoded | seconds | slices/s |")
    print("| --- | --- | --- | --- | --- |")
    image, labels = load_sample_pair("totalseg_abdomen")
    for name, value in (("liver", 5), ("kidney_right", 2)):
        predictor = load(model_dir, backend="ort", threads=threads, cache=EmbeddingCache())
        truth = labels.array == value
        seed = largest_index(truth, 2)
        result = predictor.propagate(image.array, seed, box=box_from_mask(slice_2d(truth, 2, seed)),
                                     window="abdomen", settings=PropagationSettings(batch_size=batch))
        print(f"| {name} | {result.slices_visited} | {result.encoded} | {result.seconds:.1f} | "
              f"{result.slices_visited / result.seconds:.2f} |")
        predictor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("runs/prop_lite_medsam"))
    parser.add_argument("--slices", type=int, default=300, help="synthetic volume depth (0: skip speed/memory)")
    parser.add_argument("--batches", default="4", help="comma-separated encoder batch sizes for the speed run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=None, help="disk embedding cache for the accuracy part")
    parser.add_argument("--ablation", action="store_true", help="also: mask_input on, no inertia, no IoU drop rule")
    parser.add_argument("--no-accuracy", action="store_true")
    args = parser.parse_args()
    settings = PropagationSettings()
    print(f"settings: {settings.to_dict()}")
    if not args.no_accuracy:
        predictor = load(args.model_dir, backend="ort", threads=args.threads, cache=args.cache_dir)
        print_accuracy(accuracy(predictor, settings), "Propagation from one box vs per-slice exact boxes")
        if args.ablation:
            for label, changed in (("mask_input on", replace(settings, mask_input=True)),
                                   ("no inertia", replace(settings, inertia=0.0)),
                                   ("no IoU-drop rule", replace(settings, iou_drop=1.0))):
                print_accuracy(accuracy(predictor, changed), f"Ablation: {label}")
        predictor.close()
    if args.slices:
        batches = [int(b) for b in args.batches.split(",")]
        organ_times(args.model_dir, args.threads, batches[0])
        speed_and_memory(args.model_dir, args.slices, batches, args.threads)


if __name__ == "__main__":
    main()
