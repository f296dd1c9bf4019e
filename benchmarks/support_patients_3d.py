"""Support volumes of other patients on a query volume (the 3D path), leave one patient out, against an exact box.

    .venv/bin/python benchmarks/support_patients_3d.py --model-dir models/lite_medsam --cache-dir runs/emb-cache \\
        [--only brats|ct|all] [--sizes 1 2 3 4] [--json out.json]

Data: ``../shared/data`` (see its README). BraTS 2018 case_0..4 (FLAIR, whole tumour ``GT_W``, window
``percentile``): each case is the query once, the other four patients' volumes its supports (``--sizes``: the
first N of them, in case order, for the support-size study). The two abdominal CT patients (``totalseg_ct_a_full``
as NIfTI, ``totalseg_ct_b`` as its JPEG 2000 DICOM series, window ``abdomen``): each is the query once with the
other as its lone support, for the labels both hold (spleen 1, liver 5, stomach 6, pancreas 7, aorta 52, IVC 63);
one registration per query serves every label.

Columns: ``box``: 3D Dice of SAM given the exact box of the truth on every slice holding the structure (the
reference); ``support``: 3D Dice of :func:`gmiseg_edge.runtime.support.segment3d.segment_volume_from_supports`;
``ratio``; ``located``: anatomy or appearance (the auto rule) with the appearance component's confidence;
``slices``: decoded vs holding the structure; times: registration (all supports), decoding, query slices encoded
(and propagated beyond a partial support's view) x the encoder's uncached time per slice (``t_enc``, measured on
three query slices outside the cache), the modelled total (register + decode + propagation + encode) and the
issue's budget ``2 x t_enc x true slices + register``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from gmiseg_edge.core.transforms import preprocess
from gmiseg_edge.data import read_volume
from gmiseg_edge.data.align import read_labels_on
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import load
from gmiseg_edge.runtime.support.geometry import canonical
from gmiseg_edge.runtime.support.segment3d import _uint8, segment_volume_from_supports

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CT_LABELS = {"spleen": 1, "liver": 5, "stomach": 6, "pancreas": 7, "aorta": 52, "IVC": 63}


def _brats(case: int):
    folder = DATA / "brats2018" / f"case_{case}"
    volume = read_volume(folder / "FLAIR.nii.gz")
    return volume, read_labels_on(volume, folder / "GT_W.nii.gz") != 0


def _ct(name: str):
    if name == "ct_a":
        volume = read_volume(DATA / "totalseg_ct_a_full" / "ct.nii.gz")
        return volume, read_labels_on(volume, DATA / "totalseg_ct_a_full" / "seg.nii.gz")
    volume = read_volume(DATA / "totalseg_ct_b" / "ct_dicom")
    return volume, read_labels_on(volume, DATA / "totalseg_ct_b" / "seg.nii.gz")


def encoder_seconds(predictor, pixels, slices: list[int]) -> float:
    """The encoder's uncached time per slice: preprocessing and one backend run, median over ``slices``."""
    times = []
    for k in slices:
        start = time.perf_counter()
        predictor.backend.encode(preprocess(pixels(k), predictor.preprocess_config).tensor)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def box_reference(predictor, volume, truth: np.ndarray, window) -> tuple[float, int]:
    """3D Dice of an exact box on every slice holding the structure (canonical slices), and that slice count."""
    query = canonical(volume, "query")
    truth_c = canonical(SimpleNamespace(array=truth, affine=volume.affine, format=volume.format,
                                        space=volume.space), "truth").array
    _, pixels = _uint8(query, window)
    mask = np.zeros(truth_c.shape, bool)
    held = [int(k) for k in np.flatnonzero(truth_c.any(axis=(0, 1)))]
    for k in held:
        rows, cols = np.nonzero(truth_c[:, :, k].T)
        box = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        mask[:, :, k] = predictor.predict(pixels(k), box=box).mask.T
    return dice(mask, truth_c), len(held)


def run_case(predictor, name: str, structure: str, volume, truth, supports, window, registrations, t_enc,
             compare: bool) -> dict:
    box, true_slices = box_reference(predictor, volume, truth, window)
    result = segment_volume_from_supports(predictor, volume, supports, window, registrations=registrations)
    support_dice = dice(result.mask, truth)
    other = float("nan")
    if compare:  # the way the auto rule did not take, for measuring the rule
        forced = "appearance" if result.located == "anatomy" else "anatomy"
        other = dice(segment_volume_from_supports(predictor, volume, supports, window, locate=forced,
                                                  registrations=registrations).mask, truth)
    register = sum(r.seconds for r in result.registrations)
    encoded = result.timings["encoded_slices"] + result.timings["propagated_slices"]
    modelled = register + result.timings["decode"] + result.timings["propagate"] + encoded * t_enc
    return {"query": name, "structure": structure, "supports": len(supports), "box": box, "support": support_dice,
            "ratio": support_dice / box if box > 0 else float("nan"), "located": result.located, "other_way": other,
            "confidence": result.confidence, "agreement": result.agreement, "decoded_slices": len(result.slices),
            "true_slices": true_slices, "kept_true": int(np.isin(result.slices, _true_canonical(volume, truth)).sum()),
            "register_s": register, "decode_s": result.timings["decode"], "encoded_slices": int(encoded),
            "t_enc": t_enc, "encode_s": encoded * t_enc, "modelled_s": modelled,
            "budget_s": 2 * t_enc * true_slices + register, "messages": list(result.messages)}


def _true_canonical(volume, truth) -> np.ndarray:
    truth_c = canonical(SimpleNamespace(array=truth, affine=volume.affine, format=volume.format,
                                        space=volume.space), "truth").array
    return np.flatnonzero(truth_c.any(axis=(0, 1)))


def _t_enc(predictor, volume, window) -> float:
    _, pixels = _uint8(canonical(volume, "query"), window)
    depth = canonical(volume, "query").array.shape[2]
    return encoder_seconds(predictor, pixels, [depth // 3, depth // 2, 2 * depth // 3])


def brats_rows(predictor, sizes: list[int], queries: list[int], compare: bool) -> list[dict]:
    cases = {c: _brats(c) for c in range(5)}
    rows = []
    for q in queries:
        volume, truth = cases[q]
        others = [c for c in range(5) if c != q]
        registrations: dict = {}
        t_enc = _t_enc(predictor, volume, "percentile")
        for n in sizes:
            supports = [cases[c] for c in others[:n]]
            row = run_case(predictor, f"brats case_{q}", "whole tumour", volume, truth, supports, "percentile",
                           registrations, t_enc, compare)
            print(_line(row), flush=True)
            rows.append(row)
    return rows


def ct_rows(predictor, compare: bool, queries: list[str]) -> list[dict]:
    scans = {"ct_a": _ct("ct_a"), "ct_b": _ct("ct_b")}
    rows = []
    for query in queries:
        support = "ct_a" if query == "ct_b" else "ct_b"
        volume, labels = scans[query]
        support_volume, support_labels = scans[support]
        registrations: dict = {}
        t_enc = _t_enc(predictor, volume, "abdomen")
        for structure, value in CT_LABELS.items():
            if not (labels == value).any() or not (support_labels == value).any():
                continue
            row = run_case(predictor, query, structure, volume, labels == value,
                           [(support_volume, support_labels == value)], "abdomen", registrations, t_enc, compare)
            print(_line(row), flush=True)
            rows.append(row)
    return rows


def _line(r: dict) -> str:
    located = r["located"] + (f" ({r['confidence']:.2f})" if r["confidence"] is not None else "")
    if np.isfinite(r.get("other_way", float("nan"))):
        located += f"; other way {r['other_way']:.3f}"
    return (f"| {r['structure']} | {r['query']} | {r['supports']} | {r['box']:.3f} | {r['support']:.3f} | "
            f"{r['ratio']:.2f} | {located} | {r['decoded_slices']} ({r['kept_true']}) / {r['true_slices']} | "
            f"{r['register_s']:.1f} | {r['decode_s']:.1f} | {r['encoded_slices']} x {r['t_enc']:.2f} | "
            f"{r['modelled_s']:.1f} | {r['budget_s']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--only", choices=("all", "brats", "ct"), default="all")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4], help="support patients per BraTS query")
    parser.add_argument("--cases", type=int, nargs="+", default=list(range(5)), help="BraTS query cases")
    parser.add_argument("--ct-queries", nargs="+", choices=("ct_b", "ct_a"), default=["ct_b", "ct_a"])
    parser.add_argument("--compare", action="store_true", help="also the Dice of the way the auto rule did not take")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: this benchmark needs ../shared/data (see its README)")
    predictor = load(args.model_dir, backend="ort", cache=args.cache_dir)
    print("| structure | query | supports | box | support | ratio | located | slices decoded (of them true) / "
          "true | register s | decode s | encoded x t_enc s | modelled s | budget s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    if args.only in ("all", "brats"):
        rows += brats_rows(predictor, args.sizes, args.cases, args.compare)
    if args.only in ("all", "ct"):
        rows += ct_rows(predictor, args.compare, args.ct_queries)
    for label, subset in (("BraTS", [r for r in rows if r["query"].startswith("brats")]),
                          ("CT", [r for r in rows if r["query"].startswith("ct")]), ("all", rows)):
        for n in sorted({r["supports"] for r in subset}):
            part = [r for r in subset if r["supports"] == n]
            if part:
                box, sup = np.mean([r["box"] for r in part]), np.mean([r["support"] for r in part])
                below = sum(r["support"] < 0.5 for r in part)
                print(f"| **mean, {label}, {n} support(s)** ({len(part)}) | | | **{box:.3f}** | **{sup:.3f}** | "
                      f"**{sup / box:.2f}** | below 0.5: {below} | | | | | | |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": Path(args.model_dir).name, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
