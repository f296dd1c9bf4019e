"""Propagation through volumes (DESIGN §10): accuracy against per-slice boxes, speed, and memory.

Accuracy: every labelled structure of the shipped volumes (the TotalSegmentator CT's four organs; the lesions of
brain1, brain2, breast1, lung1, lung2) and, when ``../shared/data`` is there, of the development scans (the five
BraTS 2018 whole tumours on FLAIR; the abdominal organs of both TotalSegmentator patients: the full scan of the
sample and a 20-slice JPEG 2000 DICOM series). Each structure is propagated from ONE box (the exact extent on the
slice of largest area) and, with ``--seeds ends``, from that box plus the exact boxes of a slice near each end of
the structure; against the per-slice upper bound (every labelled slice given its own exact box): 3D Dice and NSD
at 2 mm, slices kept vs labelled, where each direction stopped and why, seconds per slice visited.

Speed: encoder time of one image (B=1) on this machine, then propagation through a synthetic volume (a tube of
slowly varying radius through every slice) with a fresh cache: seconds per slice against the encoder's.
Memory: RSS sampled every 25 slices of that run (flat: the cache is bounded and only the slices encoded ahead are
held).

    PYTHONPATH=. python benchmarks/propagation.py --model-dir models/lite_medsam --cache-dir runs/embcache \
        [--groups sample,brats,ct_a,ct_b,aniso] [--seeds one,ends] [--json out.json] [--slices 0]
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.data import load_sample_pair, read_volume
from gmiseg_edge.data.align import align_labels
from gmiseg_edge.data.slicing import largest_index, slice_2d
from gmiseg_edge.metrics import dice, normalized_surface_dice
from gmiseg_edge.runtime import EmbeddingCache, load
from gmiseg_edge.runtime.propagate import PropagationSettings, SliceSource, propagate

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AXIS = 2
MEDFICIENTSAM_S_PER_CASE = 9.0  # MedficientSAM (CVPR 2024 MedSAM-on-laptop), published mean per 3D case
TOLERANCE_MM = 2.0
MIN_SLICES = 3  # a structure on fewer labelled slices has nothing to propagate through
# TotalSegmentator v2 "total" labels of abdominal organs (both CT patients), benchmarked where present
CT_ORGANS = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver", 6: "stomach",
             7: "pancreas", 52: "aorta", 63: "inferior_vena_cava"}
SAMPLE_STRUCTURES = [("totalseg_abdomen", "abdomen", "liver", 5), ("totalseg_abdomen", "abdomen", "spleen", 1),
                     ("totalseg_abdomen", "abdomen", "kidney_right", 2),
                     ("totalseg_abdomen", "abdomen", "kidney_left", 3)] + [
    (case, "lung" if case.startswith("lung") else "percentile", "lesion", 1)
    for case in ("brain1", "brain2", "breast1", "lung1", "lung2")]


@dataclass(frozen=True)
class Scan:
    """A volume with its labels on its grid, as the benchmark uses it."""

    name: str
    group: str
    array: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    window: str | tuple[float, float]


@dataclass(frozen=True)
class Structure:
    """One labelled structure of a scan: ``truth = labels == value`` (``> 0.5`` for float 0/1 labels)."""

    group: str
    scan: str
    name: str
    value: int
    load: Callable[[], Scan]

    @property
    def title(self) -> str:
        return f"{self.scan}/{self.name}"


@lru_cache(maxsize=2)
def _sample(case: str, window: str) -> Scan:
    image, labels = load_sample_pair(case)
    return Scan(case, "sample", image.array, labels.array, tuple(image.spacing), window)


@lru_cache(maxsize=2)
def _brats(case: str) -> Scan:
    folder = SHARED_DATA / "brats2018" / case
    image, labels = read_volume(folder / "FLAIR.nii.gz"), read_volume(folder / "GT_W.nii.gz")
    return Scan(f"brats_{case}", "brats", image.array, (labels.array > 0.5).astype(np.uint8), tuple(image.spacing),
                "percentile")


@lru_cache(maxsize=1)
def _brats_thick(case: str, every: int) -> Scan:
    """Every ``every``-th slice of a BraTS case (1 mm -> ``every`` mm slices: anisotropic ``every``:1), with the
    full volume's intensity window (so the slices' pixels, and their cached embeddings, are the full case's)."""
    full = _brats(case)
    window = SliceSource(full.array, AXIS, "percentile").range
    assert window is not None
    spacing = (full.spacing[0], full.spacing[1], full.spacing[2] * every)
    return Scan(f"brats_{case}_every{every}", "aniso", np.ascontiguousarray(full.array[:, :, ::every]),
                np.ascontiguousarray(full.labels[:, :, ::every]), spacing, window)


@lru_cache(maxsize=2)
def _ct(name: str) -> Scan:
    folder = SHARED_DATA / name
    image = read_volume(folder / "ct_dicom") if (folder / "ct_dicom").is_dir() else read_volume(folder / "ct.nii.gz")
    labels = align_labels(image, read_volume(folder / "seg.nii.gz"))
    group = "ct_b" if name == "totalseg_ct_b" else "ct_a"
    return Scan(name, group, image.array, np.asarray(labels), tuple(image.spacing), "abdomen")


def _ct_labels(name: str) -> list[int]:
    labels = _ct(name).labels
    return [value for value in CT_ORGANS
            if np.count_nonzero((labels == value).any(axis=(0, 1))) >= MIN_SLICES]


def structures(groups: set[str]) -> list[Structure]:
    """The benchmark's structures of ``groups`` (sample, brats, ct_a, ct_b); shared ones only where the data is."""
    out = []
    if "sample" in groups:
        out += [Structure("sample", case, name, value, lambda c=case, w=window: _sample(c, w))
                for case, window, name, value in SAMPLE_STRUCTURES]
    if not SHARED_DATA.is_dir():
        print(f"(no {SHARED_DATA}: the BraTS and second-CT structures are skipped)")
        return out
    if "brats" in groups:
        out += [Structure("brats", f"brats_case_{i}", "whole_tumour", 1, lambda c=f"case_{i}": _brats(c))
                for i in range(5)]
    if "aniso" in groups:
        out += [Structure("aniso", "brats_case_0_every10", "whole_tumour", 1, lambda: _brats_thick("case_0", 10))]
    for group, name in (("ct_a", "totalseg_ct_a_full"), ("ct_b", "totalseg_ct_b")):
        if group in groups:
            out += [Structure(group, name, CT_ORGANS[value], value, lambda n=name: _ct(n))
                    for value in _ct_labels(name)]
    return out


def nsd(pred: np.ndarray, truth: np.ndarray, spacing, tolerance: float = TOLERANCE_MM) -> float:
    """Normalised surface Dice at ``tolerance`` mm."""
    return normalized_surface_dice(pred, truth, spacing, tolerance)


def upper_bound(predictor, source: SliceSource, truth: np.ndarray) -> np.ndarray:
    """Every labelled slice along the last axis segmented with its own exact box."""
    out = np.zeros(truth.shape, bool)
    for k in np.flatnonzero(truth.any(axis=(0, 1))):
        mask = slice_2d(truth, AXIS, int(k))
        out[:, :, k] = predictor.predict(source.pixels(int(k)), box=box_from_mask(mask)).mask.T
    return out


def seed_slices(truth: np.ndarray, mode: str) -> list[int]:
    """``one``: the slice of largest area; ``ends``: that one and a slice near each end of the structure (a tenth
    of its extent in from the end, at least one slice, moved inwards until its extent is 2 pixels or more both
    ways: a box of zero area is refused; none where it would be the seed or its neighbour)."""
    largest = largest_index(truth, AXIS)
    if mode == "one":
        return [largest]
    present = np.flatnonzero(truth.any(axis=(0, 1)))
    first, last = int(present[0]), int(present[-1])
    inset = max(1, (last - first + 1) // 10)
    picks = {largest}
    for k, step in ((first + inset, 1), (last - inset, -1)):
        while (k - largest) * step < 0 and not _box_has_area(truth, k):
            k += step
        if abs(k - largest) > 1 and (k - largest) * step < 0:
            picks.add(k)
    return sorted(picks)


def _box_has_area(truth: np.ndarray, k: int) -> bool:
    if not truth[:, :, k].any():
        return False
    x0, y0, x1, y1 = box_from_mask(slice_2d(truth, AXIS, k))
    return bool(x1 > x0 and y1 > y0)


def _run(predictor, scan: Scan, truth: np.ndarray, seeds: list[int], settings: PropagationSettings | None):
    """One propagation through the public API (one seed: the original signature; several: ``seeds=``)."""
    params = inspect.signature(propagate).parameters
    window_key = "window" if "window" in params else "normalise"
    extra = {window_key: scan.window}
    if "spacing" in params:
        extra["spacing"] = scan.spacing
    if settings is not None:
        extra["settings"] = settings
    boxes = [(k, box_from_mask(slice_2d(truth, AXIS, k))) for k in seeds]
    if len(boxes) == 1 and "seeds" not in params:
        return propagate(predictor, scan.array, boxes[0][0], box=boxes[0][1], axis=AXIS, **extra)
    if "seeds" not in params:
        raise SystemExit("--seeds ends needs the multi-seed API (propagate(..., seeds=[(k, box), ...]))")
    return propagate(predictor, scan.array, seeds=boxes, axis=AXIS, **extra)


def accuracy(predictor, items: list[Structure], modes: list[str], settings: PropagationSettings | None,
             log: Callable[[str], None] = print) -> list[dict]:
    rows = []
    for item in items:
        scan = item.load()
        truth = scan.labels == item.value
        present = truth.any(axis=(0, 1))
        extent = (int(np.flatnonzero(present)[0]), int(np.flatnonzero(present)[-1]))
        source = SliceSource(scan.array, AXIS, scan.window)
        start = time.perf_counter()
        bound = upper_bound(predictor, source, truth)
        bound_seconds = time.perf_counter() - start
        ub = dice(bound, truth)
        ub_nsd = nsd(bound, truth, scan.spacing)
        for mode in modes:
            seeds = seed_slices(truth, mode)
            result = _run(predictor, scan, truth, seeds, settings)
            row = {
                "group": item.group, "structure": item.title, "mode": mode, "seeds": seeds, "extent": extent,
                "labelled_slices": int(present.sum()), "spacing": [round(float(s), 3) for s in scan.spacing],
                "dice": dice(result.mask, truth), "nsd": nsd(result.mask, truth, scan.spacing),
                "ub_dice": ub, "ub_nsd": ub_nsd,
                "kept": [int(k) for k in result.kept_range] if result.kept_range else None,
                "kept_slices": int(result.kept.sum()),
                "kept_true": int(np.count_nonzero(present & result.kept)),
                "missed": int(np.count_nonzero(present & ~result.kept)),
                "leaked": int(np.count_nonzero(~present & result.kept)),
                "stops": {d: {"reason": s.reason, "slice": int(s.slice), "detail": s.detail}
                          for d, s in _stops(result).items()},
                "visited": result.slices_visited, "encoded": result.encoded, "seconds": result.seconds,
                "s_per_slice": result.seconds / max(1, result.slices_visited),
                "ub_s_per_slice": bound_seconds / max(1, int(present.sum())),
                "events": _events(result), "timings": dict(result.timings),
            }
            rows.append(row)
            log(_line(row))
    return rows


def _stops(result) -> dict:
    return dict(result.stops)


def _events(result) -> dict:
    """Counts of the per-slice checks' outcomes, where the result records them."""
    actions = getattr(result, "actions", None)
    if actions is None:
        return {}
    values, counts = np.unique(np.asarray([a for a in actions if a]), return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts, strict=True)}


def _line(r: dict) -> str:
    stops = ", ".join(f"{d} {s['reason']} ({s['slice']})" for d, s in r["stops"].items())
    kept = "-" if r["kept"] is None else f"{r['kept'][0]}..{r['kept'][1]}"
    return (f"| {r['group']} | {r['structure']} | {r['mode']} {r['seeds']} | {r['extent'][0]}..{r['extent'][1]} | "
            f"{r['dice']:.3f} | {r['ub_dice']:.3f} | {r['dice'] - r['ub_dice']:+.3f} | {r['nsd']:.3f} / "
            f"{r['ub_nsd']:.3f} | {kept} | {r['kept_true']}/{r['labelled_slices']} | {r['missed']} / {r['leaked']} | "
            f"{stops} | {r['s_per_slice']:.3f} |")


HEADER = ("| group | structure | seeds | labelled | Dice | upper bound | gap | NSD / UB | kept | kept true / "
          "labelled | missed / leaked | stops | s / slice |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | "
          "--- | --- | --- | --- |")


def summarise(rows: list[dict], held_out: set[str]) -> None:
    """Per mode: structures within 0.05 (one seed) / 0.03 (ends) of the upper bound, split chosen-on/held-out."""
    for mode, goal in (("one", 0.05), ("ends", 0.03)):
        for part, keep in (("chosen on", lambda r: r["structure"] not in held_out),
                           ("held out", lambda r: r["structure"] in held_out)):
            sel = [r for r in rows if r["mode"] == mode and keep(r)]
            if not sel:
                continue
            gaps = np.array([r["dice"] - r["ub_dice"] for r in sel])
            worst = min(sel, key=lambda r: r["dice"] - r["ub_dice"])
            print(f"{mode} seed(s), {part}: {int(np.sum(gaps >= -goal))}/{len(sel)} within {goal} of the upper bound; "
                  f"mean gap {gaps.mean():+.3f}; worst {worst['structure']} {worst['dice'] - worst['ub_dice']:+.3f}")


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


def speed_and_memory(model_dir: Path, depth: int, batches: list[int], threads: int) -> list[dict]:
    volume, truth = synthetic_volume(depth)
    source = SliceSource(volume, AXIS, None)
    rows = []
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

        params = inspect.signature(propagate).parameters
        extra = {"spacing": (1.0, 1.0, 1.0)} if "spacing" in params else {}
        result = propagate(predictor, volume, seed, box=box_from_mask(slice_2d(truth, AXIS, seed)),
                           settings=PropagationSettings(batch_size=batch), progress=sample, **extra)
        visited = result.slices_visited
        ratio = result.seconds / (single * visited)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"| {batch} | {result.seconds:.1f} | {visited} | {result.encoded} | {result.seconds / visited:.3f} | "
              f"{single:.3f} | {ratio:.3f} | {visited / result.seconds:.2f} | "
              f"{', '.join(f'{v:.0f}' for v in samples)} | {peak:.0f} | {predictor.stats.bytes / 2**20:.0f} | "
              f"{dice(result.mask, truth):.3f} |")
        rows.append({"batch": batch, "seconds": result.seconds, "visited": visited, "encoder_s": single,
                     "ratio": ratio, "rss_mib": samples, "peak_rss_mib": peak, "dice": dice(result.mask, truth)})
        predictor.close()
    return rows


def _overrides(text: str) -> dict:
    """``key=value,...`` as PropagationSettings keywords, each value cast to the default's type."""
    defaults = PropagationSettings().to_dict()
    out: dict = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in defaults:
            raise SystemExit(f"--set: {key!r} is not a PropagationSettings field ({', '.join(defaults)})")
        kind = type(defaults[key])
        out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/lite_medsam"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="disk embedding cache for the accuracy part")
    parser.add_argument("--cache-max-gb", type=float, default=12.0, help="bound of the disk cache")
    parser.add_argument("--groups", default="sample,brats,ct_a,ct_b,aniso",
                        help="comma-separated: sample, brats, ct_a, ct_b, aniso (BraTS case_0, every 10th slice: 10:1)")
    parser.add_argument("--only", default="",
                        help="comma-separated structure titles (scan/name) or their beginnings, to run alone")
    parser.add_argument("--seeds", default="one", help="comma-separated seed modes: one, ends")
    parser.add_argument("--held-out", default="", help="comma-separated structure titles not looked at while "
                        "choosing settings (reported apart); default: BraTS 1-4, the CT b organs and the sample "
                        "lesions")
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    parser.add_argument("--slices", type=int, default=0, help="synthetic volume depth for speed/memory (0: skip)")
    parser.add_argument("--batches", default="2", help="comma-separated encoder batch sizes for the speed run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", default="", help="comma-separated PropagationSettings overrides for the accuracy "
                        "part, e.g. margin=0 (default: the library's defaults)")
    args = parser.parse_args()
    overrides = _overrides(args.set)
    settings = PropagationSettings(**overrides)
    print(f"settings: {settings.to_dict()}")
    out: dict = {"model_dir": str(args.model_dir), "settings": settings.to_dict(), "rows": [], "speed": []}
    order = args.groups.split(",")
    items = sorted(structures(set(order)), key=lambda s: order.index(s.group))  # stable: the groups' order
    if args.only:
        wanted = tuple(args.only.split(","))
        items = [s for s in items if s.title.startswith(wanted)]
    held_out = set(filter(None, args.held_out.split(","))) or {
        s.title for s in items if s.scan in {f"brats_case_{i}" for i in range(1, 5)} | {"totalseg_ct_b"}
        or s.name == "lesion"}
    if items:
        predictor = load(args.model_dir, backend="ort", threads=args.threads, cache=args.cache_dir,
                         cache_max_gb=args.cache_max_gb if args.cache_dir else None)
        print(f"\n### {args.model_dir.name}: propagation vs per-slice exact boxes (upper bound)\n\n{HEADER}")
        out["rows"] = accuracy(predictor, items, args.seeds.split(","), settings if overrides else None)
        predictor.close()
        print()
        summarise(out["rows"], held_out)
        out["held_out"] = sorted(held_out)
    if args.slices:
        out["speed"] = speed_and_memory(args.model_dir, args.slices, [int(b) for b in args.batches.split(",")],
                                        args.threads)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
