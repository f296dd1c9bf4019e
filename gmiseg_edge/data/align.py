"""Put a label map on an image's voxel grid when the two come from different formats (a DICOM series and a
NIfTI/NRRD label map, or a DICOM-SEG): axes permuted and flipped from the affines, never resampled.

A NIfTI written by a converter from a DICOM series usually holds the same voxels in another axis order or
direction; the affines say which. Anything that is not a permutation/flip of the same grid is refused with
a DataError naming the label file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nibabel import orientations

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.data.images import Volume, lps_affine
from gmiseg_edge.data.readers import read_mask

__all__ = ["align_labels", "lps_affine", "read_labels_on"]  # lps_affine lives in gmiseg_edge.data.images


def align_labels(reference: Volume, labels: Volume) -> np.ndarray:
    """``labels.array`` on ``reference``'s voxel grid (module docstring)."""
    target, source = lps_affine(reference), lps_affine(labels)
    tolerance = 1e-2 * min(reference.spacing) + 1e-3
    if labels.array.shape == reference.array.shape and np.allclose(source, target, atol=tolerance):
        return labels.array
    transform = orientations.ornt_transform(orientations.io_orientation(source), orientations.io_orientation(target))
    array = orientations.apply_orientation(labels.array, transform)
    moved = source @ orientations.inv_ornt_aff(transform, labels.array.shape)
    if array.shape != reference.array.shape or not np.allclose(moved, target, atol=tolerance):
        raise DataError(f"label map grid (shape {labels.array.shape}, origin {source[:3, 3].round(2).tolist()} mm LPS) "
                        f"is not the voxel grid of {reference.path} (shape {reference.array.shape}, origin "
                        f"{target[:3, 3].round(2).tolist()} mm) in any axis order; resample it first", labels.path)
    return np.ascontiguousarray(array)


def read_labels_on(reference: Volume, path: str | Path) -> np.ndarray:
    """The label map at ``path`` (NIfTI, NRRD, or a DICOM-SEG of ``reference``'s series) on ``reference``'s grid."""
    path = Path(path)
    if reference.format == "dicom" and path.is_file():
        from gmiseg_edge.data import dicom_seg  # highdicom: only for DICOM-SEG label maps

        if dicom_seg.is_dicom_seg(path):
            return dicom_seg.read_dicom_seg(path, reference)
    labels = read_mask(path)
    if not isinstance(labels, Volume):
        raise DataError(f"is a 2D label map; {reference.path} is a volume", path)
    return align_labels(reference, labels)
