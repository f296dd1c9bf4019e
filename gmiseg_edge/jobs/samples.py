"""``gmiseg-edge samples``: the shipped sample data, listed and copied out so the README's commands run as written.

A copy (:func:`copy_samples`) holds the shipped scans and label maps at their paths under ``sample_data/``
(``pyradiomics/``, ``totalsegmentator/``, ``stardist/``), a DICOM CT series written from the shipped CT with its
geometry and its label map beside it (``dicom/ct_series/`` + ``dicom/ct_series_labels.nii.gz``,
:mod:`gmiseg_edge.data.sample_dicom`), and a support set in the dataset folder layout (``support/lung_lesion/``:
``images/<stem>.<ext>`` paired with ``masks/<stem>.<ext>``).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.data.sample_dicom import write_sample_series
from gmiseg_edge.data.samples import sample_data_dir, sample_index

DICOM_SERIES = Path("dicom") / "ct_series"
#: the support set of a copy: lung2's lesion (lung1 is then a held-out patient)
SUPPORT_SET = Path("support") / "lung_lesion"


@dataclass(frozen=True)
class SampleFile:
    """One file (or folder) of a copy: its path relative to the copy, and what it is."""

    path: Path
    what: str


def sample_files() -> list[SampleFile]:
    """Everything :func:`copy_samples` writes, in order: the shipped scans and labels, the DICOM series, the
    support set."""
    files = []
    for entry in sample_index():
        labels = ", ".join(f"{name} {value}" if value is not None else name for name, value in entry["labels"].items())
        files.append(SampleFile(Path(entry["image"]), f"{entry['name']}: {entry['description']}"))
        files.append(SampleFile(Path(entry["mask"]), f"{entry['name']}: label map ({labels})"))
    files.append(SampleFile(DICOM_SERIES, "a DICOM CT series (6 slices) written from totalseg_abdomen's CT, with "
                                          "its geometry"))
    files.append(SampleFile(DICOM_SERIES.parent / f"{DICOM_SERIES.name}_labels.nii.gz",
                            "the DICOM series' label map on its grid (liver 5, spleen 1, kidneys 2 and 3)"))
    files.append(SampleFile(SUPPORT_SET, "a support set (dataset folder: images/lung2.nrrd + masks/lung2.nrrd), "
                                         "lung2's lesion"))
    return files


def copy_samples(dest: str | Path) -> list[Path]:
    """Copy the sample data into ``dest`` (new, or an empty folder): the paths of :func:`sample_files`. Written in
    a hidden folder beside it, then moved into place: nothing half-written on failure."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"{dest}: already exists and is not an empty folder; choose a new folder for the samples")
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = sample_data_dir()
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}-", dir=dest.parent) as staging:
        root = Path(staging) / "samples"
        for entry in sample_index():
            for key in ("image", "mask"):
                target = root / entry[key]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / entry[key], target)
        write_sample_series(root / DICOM_SERIES)
        for sub, name in (("images", "lung2_image.nrrd"), ("masks", "lung2_label.nrrd")):
            (root / SUPPORT_SET / sub).mkdir(parents=True)
            shutil.copyfile(source / "pyradiomics" / name, root / SUPPORT_SET / sub / "lung2.nrrd")
        if dest.exists():
            dest.rmdir()
        root.rename(dest)
    return [dest / f.path for f in sample_files()]
