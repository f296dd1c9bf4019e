"""The source slices a DICOM-SEG references, made whole where an archive left identifying attributes empty.

Half-anonymised archives blank attributes in the dataset while the file meta keeps them (an empty SOPClassUID or
SOPInstanceUID beside a Media Storage SOP Class / Instance UID). A SEG must name each source slice's class and
instance, its study, series and frame of reference: an empty one is taken from the file meta where the file meta
holds it, on a copy of the header (the user's files and the volume's headers are never changed), with one warning
per attribute naming the series; an attribute nothing can fill is a :class:`DataError` naming it and the file.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from pydicom.dataset import Dataset

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.data.dicom import DicomSeries

log = logging.getLogger(__name__)

#: what a DICOM-SEG takes from each source slice, and the file meta attribute that can stand in for it
SEG_SOURCE_ATTRIBUTES: dict[str, str | None] = {
    "SOPClassUID": "MediaStorageSOPClassUID",
    "SOPInstanceUID": "MediaStorageSOPInstanceUID",
    "StudyInstanceUID": None,
    "SeriesInstanceUID": None,
    "FrameOfReferenceUID": None,
}


def _value(ds: Dataset, key: str) -> str:
    return str(ds.get(key, "") or "").strip()


def _file_meta_value(ds: Dataset, key: str | None) -> str:
    meta = getattr(ds, "file_meta", None)
    return _value(meta, key) if key and meta is not None else ""


def describe_series(series: DicomSeries) -> str:
    """The series in words for a message: number, description and folder."""
    folder = series.files[0].parent if series.files else Path("?")
    number = "-" if series.number is None else str(series.number)
    return f"series #{number} {series.description or '(no description)'!r} in {folder}"


def _fill(series: DicomSeries, attributes: dict[str, str | None], warn: bool = True) -> list[Dataset]:
    filled: dict[str, int] = {}
    out = []
    for ds, file in zip(series.datasets, series.files, strict=True):
        fixed = None
        for key, meta_key in attributes.items():
            if _value(ds, key):
                continue
            value = _file_meta_value(ds, meta_key)
            if not value:
                fallback = f" and its file meta has no {meta_key}" if meta_key else " (the file meta has no stand-in)"
                raise DataError(f"{key} is empty{fallback}: a DICOM-SEG must name each source slice's {key} "
                                f"({describe_series(series)}); write the mask as NIfTI or NRRD instead "
                                "(segment --format nifti), or restore the attribute", file)
            fixed = fixed if fixed is not None else copy.deepcopy(ds)
            setattr(fixed, key, value)
            filled[key] = filled.get(key, 0) + 1
        out.append(ds if fixed is None else fixed)
    for key, count in filled.items() if warn else ():
        log.warning("%s is empty in %d of %d slice(s) of %s; took the file meta's %s (the files are unchanged)",
                    key, count, len(series.datasets), describe_series(series), attributes[key])
    return out


def seg_source_datasets(series: DicomSeries) -> list[Dataset]:
    """The series' slice headers in k order, each with every attribute a DICOM-SEG takes from it
    (:data:`SEG_SOURCE_ATTRIBUTES`) filled: a blank one from the file meta (a copy, with a warning), else a
    :class:`DataError` naming the attribute and the file."""
    return _fill(series, SEG_SOURCE_ATTRIBUTES)


def check_seg_sources(series: DicomSeries) -> None:
    """Raise the :class:`DataError` :func:`seg_source_datasets` would raise, before any work is done (its warnings
    come when the SEG is written)."""
    _fill(series, SEG_SOURCE_ATTRIBUTES, warn=False)


def source_instance_uids(series: DicomSeries) -> list[str]:
    """Each slice's SOPInstanceUID in k order, a blank one taken from the file meta (with a warning); a
    :class:`DataError` naming the file when neither holds one."""
    return [str(ds.SOPInstanceUID) for ds in _fill(series, {"SOPInstanceUID": "MediaStorageSOPInstanceUID"})]
