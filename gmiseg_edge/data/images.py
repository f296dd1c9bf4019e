"""The two things every reader returns: a 2D :class:`Image2D` and a 3D :class:`Volume`, and the checks on them
that every format shares. This module imports nothing else of the data package, so the readers, writers, DICOM
and alignment modules all build on it without importing each other in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gmiseg_edge.core.errors import DataError

_FLIP_XY = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS
_RAS_NAMES = ("ras", "right-anterior-superior", "scanner-xyz")


@dataclass(frozen=True, eq=False)
class Image2D:
    """A 2D image or mask: ``array`` HxW or HxWx3 (RGB); ``spacing`` (row, col) in mm, 1.0 if unknown."""

    array: np.ndarray
    path: Path
    spacing: tuple[float, float] = (1.0, 1.0)


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D volume or label map in the file's voxel order (i, j, k).

    ``spacing`` is the voxel size in mm along i, j, k; ``affine`` maps (i, j, k, 1) to world coordinates
    in ``space`` (RAS for NIfTI, the header's space for NRRD, LPS for DICOM and MetaImage); ``format`` is the
    name of its row in :data:`gmiseg_edge.data.formats.FORMATS`, or ``"dicom"``; ``header`` is the file's own
    header (DICOM: a :class:`~gmiseg_edge.data.dicom.DicomSeries`, the series' instances in slice order).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    path: Path
    format: str
    space: str
    header: Any = field(repr=False)


def lps_affine(volume: Volume) -> np.ndarray:
    """The volume's affine in LPS patient coordinates (NIfTI is RAS; NRRD says its space; DICOM is LPS)."""
    if volume.format == "nifti" or volume.space.lower() in _RAS_NAMES:
        return _FLIP_XY @ volume.affine
    return volume.affine


def ras_affine(volume: Volume) -> np.ndarray:
    """The volume's affine in RAS coordinates (NIfTI's convention)."""
    return _FLIP_XY @ lps_affine(volume)


def check_spacing(spacing: tuple[float, ...], path: Path) -> tuple[float, float, float]:
    """Three positive finite voxel sizes in mm, or a DataError naming ``path``."""
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise DataError(f"voxel spacing {spacing} in the header is not three positive numbers", path)
    return (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def to_3d(array: np.ndarray, path: Path) -> np.ndarray:
    """``array`` as 3D: trailing singleton axes dropped, a 2D array given a depth of 1; else a DataError."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3:
        raise DataError(f"has shape {array.shape}; expected a 3D volume", path)
    return array


MAX_VOXELS = 1 << 29  # 536,870,912 voxels (e.g. 512 x 512 x 2048): larger volumes are refused from their header


def check_voxels(shape: tuple[int, ...], path: Path) -> None:
    """Refuse a volume of more than :data:`MAX_VOXELS` voxels from the shape its header states, before its data is
    read or decompressed (a 4 MB ``.nii.gz`` may state 1024^3 voxels: 3.6 GB once read)."""
    voxels = 1
    for size in shape:
        voxels *= max(int(size), 1)
    if voxels > MAX_VOXELS:
        stated = " x ".join(str(int(size)) for size in shape)
        raise DataError(f"{stated} voxels ({voxels / 1e6:.0f} M) is above the limit of {MAX_VOXELS} voxels "
                        f"({MAX_VOXELS / 1e6:.0f} M); crop or downsample it first", path)


def corrupt(path: Path, kind: str, exc: BaseException) -> DataError:
    """The error for a file of format ``kind`` that its library could not read."""
    detail = f"{type(exc).__name__}: {exc}".strip()
    return DataError(f"cannot read {kind} file, it may be truncated or corrupt ({detail})", path)
