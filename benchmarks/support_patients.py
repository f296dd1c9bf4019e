"""Support sets across patients, leave one patient out, against an exact box, in 2D (one query slice).

    .venv/bin/python benchmarks/support_patients.py --model-dir models/lite_medsam [models/mobile_sam]
        [--cache-dir runs/emb-cache] [--json out.json]

Patients (``../shared/data``, see its README; skipped with a message when absent) and the shipped samples:

- ``brats``: BraTS 2018 ``case_0..4``, FLAIR (percentile 0.5-99.5 over the volume), whole tumour (``GT_W``);
- ``ct``: the two abdominal CT patients, ``totalseg_ct_a_full`` (NIfTI, 3 mm in-plane) and ``totalseg_ct_b``
  (a JPEG 2000 lossless DICOM series, 0.98 mm in-plane; read by the toolkit's DICOM reader, or by SimpleITK's
  GDCM when no pydicom decoder is installed), abdomen window, the TotalSegmentator labels both hold;
- ``lesion``: the shipped samples with two patients of one kind (brain1/brain2, lung1/lung2).

For every structure and query patient: the query is the axial slice of the structure's largest area (and, with
``--extra-slices K``, K more spread over its extent); the supports are ``--supports`` slices spread over the
structure's extent in ONE other patient (the next one holding it, in the listed order): column ``one``; for
kinds with more than two patients the same from EVERY other patient: column ``all``; and with ``--sizes 1,2,3,4``
the support-size study: column ``n<N>`` takes the next N patients after the query (BraTS: up to 4). Dice against the
label, next to a box prompt from the label's extent on the same slice. Each support and query carries its
pixel spacing from the file's header (``spacing=``), and every scan is oriented the same way (axes along the
patient's Left, Posterior, Superior, :func:`gmiseg_edge.data.orient.to_lps`; ``--no-orient``: as stored; the
two CT scans are stored turned 180 degrees against each other); ``--no-spacing`` leaves the spacing out (every
image then counts as 1 mm per pixel: the pixel-only behaviour). ``--support-mm A --query-mm B`` resample every
support slice to A mm and every query slice (image and label) to B mm square pixels (a 3 mm support on a 0.8 mm
query). Nothing is tuned on these cases.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.core.selection import spread
from gmiseg_edge.data import Volume, apply_window, read_pair, slice_2d, slice_spacing
from gmiseg_edge.data.orient import to_lps
from gmiseg_edge.data.samples import _entry, _entry_window, load_sample_pair
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import SupportSetSegmenter, load

AXIS = 2  # axial for every scan here
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CT_LABELS = {"spleen": 1, "liver": 5, "stomach": 6, "pancreas": 7, "vertebra_T12": 32, "vertebra_T11": 33,
             "aorta": 52, "IVC": 63}
ORIENT = True  # every scan put with its axes along L, P, S (data.orient.to_lps); --no-orient: as stored
MIN_QUERY_PIXELS = 20  # a structure must cover this many pixels on its largest slice to be a query


@dataclass(frozen=True)
class Scan:
    """One patient's volume, as uint8 after its normalisation, with its label volume and voxel spacing."""

    name: str
    kind: str
    pixels: np.ndarray  # uint8 (i, j, k)
    labels: np.ndarray  # int (i, j, k)
    spacing: tuple[float, float, float]
    structures: dict[str, int]
    reader: str = ""

    def mask(self, structure: str) -> np.ndarray:
        return self.labels == self.structures[structure]

    def slice(self, structure: str, k: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        return (slice_2d(self.pixels, AXIS, k), slice_2d(self.mask(structure), AXIS, k),
                slice_spacing(self.spacing, AXIS))


def _sitk_dicom(folder: Path) -> Volume:
    """A DICOM series through SimpleITK's GDCM (it decodes JPEG 2000 without a pydicom plugin), as a Volume in
    (i, j, k) order with its LPS affine."""
    import SimpleITK as sitk  # noqa: N813

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return Volume(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)).astype(np.float32),
                  tuple(float(s) for s in image.GetSpacing()), affine, folder, "dicom", "LPS", None)


def _ct_b(folder: Path) -> tuple[Volume, np.ndarray, str]:
    try:
        image, labels = read_pair(folder / "ct_dicom", folder / "seg.nii.gz")
        return image, labels.array, "gmiseg_edge.data (pydicom)"
    except DataError as exc:
        from gmiseg_edge.data.align import read_labels_on

        image = _sitk_dicom(folder / "ct_dicom")
        return image, read_labels_on(image, folder / "seg.nii.gz"), f"SimpleITK GDCM (toolkit: {exc})"


def oriented(image: Volume, labels) -> tuple[Volume, np.ndarray]:
    """``image`` and its labels (a Volume or an array on its grid) with axes along L, P, S (``--no-orient``: as
    stored)."""
    array = labels.array if isinstance(labels, Volume) else labels
    if not ORIENT:
        return image, array
    return to_lps(image, array)


def load_scans(shared: Path, kinds: set[str]) -> list[Scan]:
    scans = []
    if shared.is_dir():
        if "brats" in kinds:
            for case in sorted((shared / "brats2018").glob("case_*")):
                image, labels = oriented(*read_pair(case / "FLAIR.nii.gz", case / "GT_W.nii.gz"))
                scans.append(Scan(f"brats/{case.name}", "brats", apply_window(image.array, "percentile"),
                                  labels, image.spacing, {"whole_tumour": 1}))
        if "ct" in kinds:
            image, labels = oriented(*read_pair(shared / "totalseg_ct_a_full" / "ct.nii.gz",
                                                shared / "totalseg_ct_a_full" / "seg.nii.gz"))
            scans.append(Scan("ct_a_full", "ct", apply_window(image.array, "abdomen"), labels, image.spacing,
                              CT_LABELS, "nibabel"))
            image, labels, reader = _ct_b(shared / "totalseg_ct_b")
            image, labels = oriented(image, labels)
            scans.append(Scan("ct_b", "ct", apply_window(image.array, "abdomen"), labels, image.spacing, CT_LABELS,
                              reader))
    else:
        print(f"{shared} is absent: the BraTS and CT patients are skipped (only the shipped samples run)\n")
    if "lesion" in kinds:
        for name in ("brain1", "brain2", "lung1", "lung2"):
            image, labels = oriented(*load_sample_pair(name))
            entry = _entry(name)
            scans.append(Scan(name, name.rstrip("12"), apply_window(image.array, _entry_window(entry)),
                              labels, image.spacing, {"lesion": int(entry["labels"]["lesion"])}))
    return scans


def holders(scans: list[Scan], kind: str, structure: str) -> list[Scan]:
    return [s for s in scans if s.kind == kind and structure in s.structures and s.mask(structure).any()]


def query_slices(scan: Scan, structure: str, extra: int) -> list[int]:
    areas = np.count_nonzero(scan.mask(structure), axis=(0, 1))
    largest = int(np.argmax(areas))
    if areas[largest] < MIN_QUERY_PIXELS:
        return []
    others = [int(k) for k in np.flatnonzero(areas >= MIN_QUERY_PIXELS) if k != largest]
    return [largest] + (spread(others, extra) if extra else [])


def support_slices(scan: Scan, structure: str, count: int) -> list[int]:
    return spread([int(k) for k in np.flatnonzero(np.count_nonzero(scan.mask(structure), axis=(0, 1)))], count)


def resample(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float], target: float | None,
             ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """A slice and its mask resampled to ``target`` mm square pixels (area when coarsening, linear when refining;
    the mask linear then > 0.5); unchanged when ``target`` is None."""
    if target is None:
        return image, mask, spacing
    size = (max(8, round(image.shape[1] * spacing[1] / target)), max(8, round(image.shape[0] * spacing[0] / target)))
    coarser = target > min(spacing)
    method = cv2.INTER_AREA if coarser else cv2.INTER_LINEAR
    return (cv2.resize(image, size, interpolation=method),
            cv2.resize(mask.astype(np.float32), size, interpolation=method) > 0.5, (target, target))


def run_support(predictor, supports: list[Scan], structure: str, count: int, image, mask, spacing,
                use_spacing: bool, options: dict, args_support_mm: float | None = None) -> tuple[float, int, float]:
    """Dice of the support set's mask, how many supports took their appearance candidate, seconds."""
    start = time.perf_counter()
    segmenter = SupportSetSegmenter(predictor, **options)
    for scan in supports:
        for k in support_slices(scan, structure, count):
            pixels, label, step = resample(*scan.slice(structure, k), args_support_mm)
            extra = {"spacing": step} if use_spacing else {}
            segmenter.add_support(pixels, label, name=f"{scan.name}@{k}", **extra)
    result = segmenter.segment(image, **({"spacing": spacing} if use_spacing else {}))
    switched = sum(m.chosen == "appearance" and m.anatomy is not None for m in result.matches)
    return dice(result.mask, mask), switched, time.perf_counter() - start


def columns(patients: list[Scan], index: int, args) -> list[tuple[str, list[Scan]]]:
    """The support patients of each column for the query ``patients[index]``: ``one`` the next patient in the
    list, ``all`` every other (when there are at least two), and ``n<N>`` for each ``--sizes`` N the next N
    patients after the query (when that many others hold the structure): the support-size study."""
    others = [patients[(index + step) % len(patients)] for step in range(1, len(patients))]
    chosen = []
    if "one" in args.columns:
        chosen.append(("one", others[:1]))
    if "all" in args.columns and len(others) >= 2:
        chosen.append(("all", others))
    chosen += [(f"n{size}", others[:size]) for size in args.sizes if size <= len(others)]
    return chosen


def evaluate(predictor, scans: list[Scan], args, options: dict) -> list[dict]:
    records = []
    kinds = sorted({s.kind for s in scans})
    for kind in kinds:
        structures = sorted({name for s in scans if s.kind == kind for name in s.structures})
        for structure in structures:
            patients = holders(scans, kind, structure)
            if len(patients) < 2:
                print(f"{kind}/{structure}: held by {len(patients)} patient(s): skipped")
                continue
            for index, query in enumerate(patients):
                one = [patients[(index + 1) % len(patients)]]
                for k in query_slices(query, structure, args.extra_slices):
                    image, mask, spacing = resample(*query.slice(structure, k), args.query_mm)
                    if not mask.any():
                        continue
                    box = dice(predictor.predict(image, box=box_from_mask(mask)).mask, mask)
                    record = {"model": predictor.model_name, "kind": kind, "structure": structure,
                              "query": f"{query.name}@{k}", "spacing": list(spacing), "box": box,
                              "area": int(mask.sum())}
                    for column, supports in columns(patients, index, args):
                        value, switched, seconds = run_support(predictor, supports, structure, args.supports,
                                                               image, mask, spacing, not args.no_spacing, options,
                                                               args.support_mm)
                        record[column] = value
                        record[f"{column}_supports"] = [s.name for s in supports]
                        record[f"{column}_switched"] = switched
                        record[f"{column}_seconds"] = seconds
                    records.append(record)
                    print(f"  {record['model']} {kind}/{structure} {record['query']} <- {one[0].name}: box {box:.3f}"
                          + "".join(f" {c} {record[c]:.3f}" for c in column_names(args) if c in record),
                          flush=True)
    return records


def summarise(records: list[dict], column: str) -> list[dict]:
    """Per (model, kind, structure) and per (model, group): mean box, mean support, ratio, count below 0.5."""
    groups = defaultdict(list)
    for r in records:
        if column not in r:
            continue
        groups[(r["model"], f"{r['kind']}/{r['structure']}")].append(r)
        groups[(r["model"], f"all {r['kind']}")].append(r)
        groups[(r["model"], "all")].append(r)
    rows = []
    for (model, name), items in groups.items():
        box = float(np.mean([r["box"] for r in items]))
        support = float(np.mean([r[column] for r in items]))
        rows.append({"model": model, "group": name, "column": column, "cases": len(items), "box": box,
                     "support": support, "ratio": support / box if box else float("nan"),
                     "below_0.5": sum(r[column] < 0.5 for r in items)})
    order = {"all": 2}
    return sorted(rows, key=lambda r: (r["model"], order.get(r["group"], 1 if r["group"].startswith("all ") else 0),
                                       r["group"]))


def column_names(args) -> list[str]:
    """The support columns asked for, in table order."""
    return [c for c in ("one", "all") if c in args.columns] + [f"n{size}" for size in args.sizes]


def print_tables(records: list[dict], header: str, names: list[str]) -> None:
    print(f"\n{header}\n")
    print("| model | supports | structure / group | cases | box Dice | support Dice | ratio | below 0.5 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for column in names:
        for row in summarise(records, column):
            bold = "**" if row["group"].startswith("all") else ""
            print(f"| {row['model']} | {column} | {bold}{row['group']}{bold} | {row['cases']} | {row['box']:.3f} | "
                  f"{row['support']:.3f} | {row['ratio']:.2f}x | {row['below_0.5']} |")


def _value(text: str):
    """A command-line option value as bool, int, float or str."""
    lowered = text.lower()
    if lowered in ("true", "false", "none"):
        return {"true": True, "false": False, "none": None}[lowered]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", nargs="+", required=True, help="model folder(s) from `gmiseg-edge export`")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--cache-dir", default=None, help="disk embedding cache (re-runs skip the encoder)")
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder (default ../shared/data)")
    parser.add_argument("--kinds", default="brats,ct,lesion", help="comma-separated: brats, ct, lesion")
    parser.add_argument("--supports", type=int, default=3, help="support slices per support patient")
    parser.add_argument("--extra-slices", type=int, default=0, help="query slices beyond the largest, per patient")
    parser.add_argument("--columns", default="one,all", help="comma-separated: one (one other patient), all")
    parser.add_argument("--sizes", default="", help="support-size study: comma-separated N (e.g. 1,2,3,4), a column "
                        "n<N> with the next N other patients as supports, where that many hold the structure")
    parser.add_argument("--support-mm", type=float, default=None, help="resample support slices to this pixel size")
    parser.add_argument("--query-mm", type=float, default=None, help="resample query slices to this pixel size")
    parser.add_argument("--no-orient", action="store_true", help="slice every scan as stored (no LPS reorientation)")
    parser.add_argument("--no-spacing", action="store_true", help="give no pixel spacing (1 mm per pixel)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a SupportSetSegmenter keyword (e.g. choice=anatomy); repeatable")
    parser.add_argument("--registration-init", default=None, choices=("geometry", "body"),
                        help="how registration's similarity stage starts (runtime.registration.INITIAL)")
    parser.add_argument("--json", type=Path, default=None, help="write every case and the summaries here")
    args = parser.parse_args()
    args.columns = set(filter(None, args.columns.split(",")))
    try:
        args.sizes = sorted({int(size) for size in args.sizes.split(",") if size.strip()})
    except ValueError:
        parser.error(f"--sizes takes comma-separated whole numbers, got {args.sizes!r}")
    if any(size < 1 for size in args.sizes):
        parser.error(f"--sizes must be at least 1, got {args.sizes}")
    options = {}
    for item in args.option:
        name, _, value = item.partition("=")
        options[name] = _value(value)
    if not args.no_spacing and "spacing" not in inspect.signature(SupportSetSegmenter.segment).parameters:
        parser.error("this version of the runtime takes no spacing=: pass --no-spacing")
    global ORIENT
    ORIENT = not args.no_orient
    if args.registration_init:
        from gmiseg_edge.runtime import registration

        registration.INITIAL = args.registration_init
        options_note = f", registration start {args.registration_init}"
    else:
        options_note = ""
    scans = load_scans(args.shared, set(args.kinds.split(",")))
    for scan in scans:
        print(f"{scan.name}: {scan.pixels.shape} at {tuple(round(s, 3) for s in scan.spacing)} mm {scan.reader}")
    records = []
    start = time.perf_counter()
    for model_dir in args.model_dir:
        predictor = load(model_dir, backend=args.backend, cache=args.cache_dir)
        records += evaluate(predictor, scans, args, options)
    spacing = "without spacing (1 mm per pixel)" if args.no_spacing else "with each image's spacing"
    spacing += "; scans as stored" if args.no_orient else "; every scan oriented L, P, S"
    if args.support_mm or args.query_mm:
        spacing += f"; supports resampled to {args.support_mm} mm, queries to {args.query_mm} mm"
    print_tables(records, f"support sets from other patients vs an exact box, leave one patient out, "
                          f"{args.supports} support slices per support patient, {spacing}, options {options}"
                          f"{options_note}; "
                          f"'one': one other patient, 'all': every other patient, 'n<N>': the next N patients",
                 column_names(args))
    print(f"\n{time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"records": records, "summary": [row for name in column_names(args)
                                                                         for row in summarise(records, name)]},
                                        indent=1))


if __name__ == "__main__":
    main()
