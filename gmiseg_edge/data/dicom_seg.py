"""DICOM-SEG out (and back in) with highdicom: a label map on a DICOM series as a Segmentation object.

The SEG references the source series (its study, frame of reference and each source slice's SOP instance),
holds one segment per structure (label value n is segment n) with its label, the algorithm's name and version
and its type (SEMIAUTOMATIC for prompted masks, AUTOMATIC for support-set masks), and only the frames where a
segment is present. It is written atomically. :func:`read_dicom_seg` reads one back onto a series' voxel grid,
each frame on the slice it references, or, where its frames do not say they keep the source's spatial locations
(as dcmqi / 3D Slicer write them), on the slice its plane position matches (:mod:`~gmiseg_edge.data.seg_placement`).
Source slices whose SOP class or instance UID is blank are referenced by their file meta's
(:mod:`~gmiseg_edge.data.seg_sources`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.core.files import atomic_path
from gmiseg_edge.data.dicom import SEG_SOP_CLASS, DicomSeries
from gmiseg_edge.data.images import Volume
from gmiseg_edge.data.seg_placement import place_frames_by_position
from gmiseg_edge.data.seg_sources import seg_source_datasets, source_instance_uids

AlgorithmType = Literal["SEMIAUTOMATIC", "AUTOMATIC", "MANUAL"]
SEG_SERIES_NUMBER_OFFSET = 1000  # the SEG's series number: the source's + this (a convention, not a rule)


@dataclass(frozen=True)
class SegAlgorithm:
    """Who made the segmentation: ``name`` (e.g. ``gmiseg-edge lite_medsam``), ``version``, ``kind``."""

    name: str
    version: str
    kind: AlgorithmType = "SEMIAUTOMATIC"


def _source(reference: Volume, path: Path) -> DicomSeries:
    if reference.format != "dicom" or not isinstance(reference.header, DicomSeries):
        raise DataError(f"a DICOM-SEG needs a DICOM source series; {reference.path} is {reference.format.upper()} "
                        "(write .nii.gz or .nrrd instead)", path)
    return reference.header


def write_dicom_seg(reference: Volume, labels: np.ndarray, path: str | Path, segments: Mapping[int, str],
                    algorithm: SegAlgorithm) -> Path:
    """Write label map ``labels`` (the reference's shape (i, j, k); value n is segment ``segments[n]``, 0 is
    background) as a DICOM-SEG referencing the reference's series, atomically. Returns the path."""
    path = Path(path)
    series = _source(reference, path)
    labels = np.asarray(labels)
    if labels.shape != reference.array.shape:
        raise DataError(f"label map shape {labels.shape} does not match the series {reference.path} "
                        f"shape {reference.array.shape}", path)
    if labels.dtype.kind not in "biu":
        raise DataError(f"cannot write a {labels.dtype} array as a segmentation; give bool or integer labels", path)
    labels = labels.astype(np.uint16)
    present = sorted(int(v) for v in np.unique(labels) if v)
    unnamed = [v for v in present if v not in segments]
    if unnamed:
        raise DataError(f"label value(s) {unnamed} have no segment name (named: {sorted(segments)})", path)
    numbers = sorted(segments)
    if not numbers or numbers != list(range(1, len(numbers) + 1)):
        raise DataError(f"segments must be numbered 1..n without gaps, got {numbers}", path)
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name, version=algorithm.version, family=codes.cid7162.ArtificialIntelligence)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=segments[n][:64],
        segmented_property_category=codes.SCT.AnatomicalStructure, segmented_property_type=codes.SCT.Organ,
        algorithm_type=algorithm.kind, algorithm_identification=identification) for n in numbers]
    frames = np.ascontiguousarray(np.transpose(labels, (2, 1, 0)))  # (k, rows, columns), one per source slice
    sources = seg_source_datasets(series)  # blank UIDs from the file meta (copies), else a DataError
    source = sources[0]
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
            series_instance_uid=hd.UID(), series_number=int(source.get("SeriesNumber") or 0) + SEG_SERIES_NUMBER_OFFSET,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="gmiseg-edge",
            manufacturer_model_name=algorithm.name[:64], software_versions=algorithm.version,
            device_serial_number="none", series_description=f"SEG {algorithm.name}"[:64],
            content_label="GMISEG", content_description=f"{algorithm.kind.lower()} segmentation"[:64],
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"highdicom refused the segmentation of {reference.path}: {exc}", path) from exc
    with atomic_path(path, suffix=".dcm") as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return path


def read_dicom_seg(path: str | Path, reference: Volume) -> np.ndarray:
    """A DICOM-SEG's label map on the voxel grid (i, j, k) of ``reference``, the series it references: each
    frame placed on the slice whose SOP instance it names, or, where highdicom refuses that (the frames do not
    state that spatial locations are preserved, or name no source frame), on the slice its plane position
    matches; overlapping segments keep the highest number."""
    path = Path(path)
    series = _source(reference, path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:
        raise DataError(f"cannot read as a DICOM-SEG ({type(exc).__name__}: {exc})", path) from exc
    referenced = {str(uid) for _, _, uid in seg.get_source_image_uids()}
    uids = source_instance_uids(series)
    ours = set(uids)
    if not referenced & ours:
        raise DataError(f"references none of the {len(ours)} slices of {reference.path} "
                        f"(series {series.uid})", path)
    try:
        frames = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, combine_segments=True,
            skip_overlap_checks=True, assert_missing_frames_are_empty=True)
    except RuntimeError:  # highdicom refuses source-frame indexing: place the frames by their plane positions
        return place_frames_by_position(seg, reference, path)
    except Exception as exc:
        raise DataError(f"cannot place its frames on {reference.path} ({type(exc).__name__}: {exc})", path) from exc
    return np.transpose(np.asarray(frames), (2, 1, 0))


def is_dicom_seg(path: str | Path) -> bool:
    """True if ``path`` is a DICOM file of the Segmentation Storage class."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:
        return False
    return str(header.get("SOPClassUID", "")) == SEG_SOP_CLASS
