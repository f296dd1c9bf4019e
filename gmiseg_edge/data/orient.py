"""Put volumes in one orientation so that slices of different scans show the body the same way round.

Two scans of one body part can store it in opposite axis directions (a NIfTI written in RAS order next to a DICOM
series in LPS order: their axial slices are turned 180 degrees against each other). A support set registers
slices of one scan onto slices of another and compares their embeddings, so it needs both the same way round.
:func:`to_lps` permutes and flips a volume's voxel axes (never resamples) so that i runs towards the patient's
Left, j towards Posterior and k towards Superior, as closely as its affine allows; the affine follows, so the
volume stays the same object in space. An axial slice ``slice_2d(array, 2, k)`` then shows the patient's right on
the image's left and the front at the top, as a DICOM viewer does.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from nibabel import orientations

from gmiseg_edge.data.align import lps_affine
from gmiseg_edge.data.readers import Volume

_FLIP_XY = np.diag([-1.0, -1.0, 1.0, 1.0])
_LPS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)  # nibabel orientation: axis k runs along +world k


def lps_transform(volume: Volume) -> np.ndarray:
    """The nibabel orientation transform that takes ``volume``'s voxel axes to L, P, S."""
    return orientations.ornt_transform(orientations.io_orientation(lps_affine(volume)), _LPS)


def to_lps(volume: Volume, labels: np.ndarray | None = None) -> tuple[Volume, np.ndarray | None]:
    """``volume`` with voxel axes along L, P, S (module docstring), and ``labels`` (an array on its voxel grid)
    moved the same way. The affine stays in the volume's own space (RAS for NIfTI)."""
    transform = lps_transform(volume)
    if np.array_equal(transform, _LPS):
        return volume, labels
    shape = volume.array.shape
    array = np.ascontiguousarray(orientations.apply_orientation(volume.array, transform))
    lps = lps_affine(volume) @ orientations.inv_ornt_aff(transform, shape)
    own = lps if lps_affine(volume) is volume.affine else _FLIP_XY @ lps  # back to the volume's own space
    spacing = tuple(float(s) for s in np.linalg.norm(own[:3, :3], axis=0))
    moved = None if labels is None else np.ascontiguousarray(orientations.apply_orientation(labels, transform))
    return replace(volume, array=array, affine=own, spacing=spacing), moved
