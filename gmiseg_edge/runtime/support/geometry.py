"""Voxel grids for the 3D support path: every volume put in one voxel order, LPS, slices along the third axis.

A :class:`~gmiseg_edge.data.readers.Volume` keeps the file's voxel order and an affine in the file's space
(RAS for NIfTI, LPS for DICOM, the header's for NRRD). :func:`canonical` permutes and flips its axes (never
resamples) so that i runs to the patient's left, j to posterior and k to superior, with the matching affine
in LPS (:func:`gmiseg_edge.data.images.lps_affine`): then slice k, shown as :func:`~gmiseg_edge.data.slice_2d`
shows it (rows j, columns i), is an axial slice in the radiological display, whatever order the file had, and
two files holding the same voxels in another order (RAS vs LPS) give the same arrays. :meth:`Canonical.restore`
maps an answer back to the file's order. :func:`sitk_image` gives the SimpleITK image of a canonical array
(SimpleITK works in LPS physical space, as DICOM does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from nibabel import orientations

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.data.images import Volume, lps_affine

LPS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)  # nibabel orientation: i -> +x (L), j -> +y (P), k -> +z (S)


@dataclass(frozen=True)
class Canonical:
    """A volume's voxels in LPS order (module docstring) and how to put an answer back in the file's order."""

    array: np.ndarray  # (I, J, K) with i -> L, j -> P, k -> S (nearest axes)
    affine: np.ndarray  # 4 x 4, canonical voxel (i, j, k, 1) -> LPS mm
    name: str
    _to_file: np.ndarray  # nibabel orientation transform from canonical to the file's voxel order

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def restore(self, array: np.ndarray) -> np.ndarray:
        """``array`` (canonical order, this volume's shape) in the file's voxel order."""
        if array.shape != self.array.shape:
            raise ValueError(f"{self.name}: map of shape {array.shape} is not on the canonical grid {self.array.shape}")
        return np.ascontiguousarray(orientations.apply_orientation(array, self._to_file))


def canonical(volume: Volume | Any, name: str = "volume") -> Canonical:
    """``volume`` (a :class:`Volume`: array, affine, format, space) in LPS voxel order (module docstring)."""
    array = np.asarray(volume.array)
    if array.ndim != 3:
        raise InputError(f"{name}: expected a 3D volume, got shape {array.shape}")
    if min(array.shape) < 1:
        raise InputError(f"{name}: empty volume of shape {array.shape}")
    affine = lps_affine(volume)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(f"{name}: its affine {np.round(affine, 3).tolist()} is not an invertible mapping to mm")
    source = orientations.io_orientation(affine)
    to_lps = orientations.ornt_transform(source, LPS)
    moved = orientations.apply_orientation(array, to_lps)
    moved_affine = affine @ orientations.inv_ornt_aff(to_lps, array.shape)
    return Canonical(np.ascontiguousarray(moved), moved_affine, name, orientations.ornt_transform(LPS, source))


def sitk_image(array: np.ndarray, affine: np.ndarray):
    """A SimpleITK image of a canonical (I, J, K) array with the given LPS affine (float32 pixels)."""
    import SimpleITK as sitk  # noqa: N813  (lazy: only the 3D support path needs SimpleITK)

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0)), dtype=np.float32))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in affine[:3, 3]])
    image.SetDirection([float(v) for v in (affine[:3, :3] / spacing).ravel()])
    return image


def from_sitk(image) -> np.ndarray:
    """The (I, J, K) array of a SimpleITK image (the inverse of :func:`sitk_image`'s layout)."""
    import SimpleITK as sitk  # noqa: N813  (lazy: see sitk_image)

    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))
