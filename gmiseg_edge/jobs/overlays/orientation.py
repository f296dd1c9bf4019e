"""How a slice is shown: the radiological view of a volume's slice, decided from its affine.

A slice of a volume comes as :func:`gmiseg_edge.data.slice_2d` returns it (rows = the higher remaining voxel axis,
columns = the lower), in raw voxel order. :func:`radiological_view` turns it, by a transpose and flips only (no
resampling), so that it reads as a radiologist reads it, whatever the file's voxel order (RAS, LPS, ...):

- axial (the slice's normal mostly along superior-inferior): patient's right on the image's LEFT, anterior up
  (the patient seen from the feet);
- coronal (normal mostly anterior-posterior): patient's right on the image's left, superior up (seen from the
  front);
- sagittal (normal mostly left-right): anterior on the image's left, superior up (seen from the patient's left).

An oblique slice takes the plane its normal is closest to; each picture axis takes the voxel axis closest to it.
The view also gives the picture's pixel size (row mm, column mm), so a picture can be resampled to square mm, and
the letters of the patient directions at its four edges. A 2D image (a photo, microscopy) keeps its orientation
(:func:`image_view`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gmiseg_edge.data.images import Volume, lps_affine

# plane -> (towards the picture's increasing column, towards its increasing row), as LPS unit vectors, and the
# letters at the (top, bottom, left, right) edges
_PLANES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], tuple[str, str, str, str]]] = {
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0), ("S", "I", "A", "P")),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), ("S", "I", "R", "L")),
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), ("A", "P", "R", "L")),
}
_PLANE_OF_NORMAL = ("sagittal", "coronal", "axial")  # the LPS axis the slice's normal is closest to


@dataclass(frozen=True)
class View:
    """A transpose then flips turning a slice (as ``slice_2d`` gives it) into the picture; ``spacing`` is the
    picture's (row mm, column mm); ``edges`` the patient directions at its (top, bottom, left, right), None for a
    2D image; ``plane`` ``"axial"``, ``"coronal"``, ``"sagittal"`` or ``"image"``."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    spacing: tuple[float, float] = (1.0, 1.0)
    edges: tuple[str, str, str, str] | None = None
    plane: str = "image"

    def orient(self, array: np.ndarray) -> np.ndarray:
        """``array`` (H, W) or (H, W, C) turned into the picture's orientation."""
        out = np.swapaxes(array, 0, 1) if self.transpose else array
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)


def image_view(spacing: tuple[float, float] = (1.0, 1.0)) -> View:
    """A 2D image as it is (rows down, columns right), pixel size ``spacing`` (row mm, column mm)."""
    return View(spacing=(float(spacing[0]), float(spacing[1])))


def radiological_view(affine_lps: np.ndarray, axis: int) -> View:
    """The view of a slice along voxel ``axis`` (0, 1, 2) of a volume whose voxel-to-LPS affine is ``affine_lps``
    (4x4): the radiological convention of the module's docstring, pixel sizes from the affine's columns."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    affine_lps = np.asarray(affine_lps, dtype=float)
    if affine_lps.shape != (4, 4) or not np.all(np.isfinite(affine_lps)):
        raise ValueError(f"expected a finite 4x4 affine, got shape {affine_lps.shape}")
    columns = affine_lps[:3, :3]
    sizes = np.linalg.norm(columns, axis=0)
    if np.any(sizes <= 0):
        raise ValueError(f"the affine has a zero voxel axis: {affine_lps.tolist()}")
    directions = columns / sizes
    a, b = (n for n in (0, 1, 2) if n != axis)  # slice_2d: rows = b, columns = a
    normal = np.cross(directions[:, a], directions[:, b])
    plane = _PLANE_OF_NORMAL[int(np.argmax(np.abs(normal)))]
    col_towards, row_towards, edges = _PLANES[plane]
    col_target, row_target = np.asarray(col_towards), np.asarray(row_towards)
    as_is = abs(directions[:, b] @ row_target) + abs(directions[:, a] @ col_target)
    swapped = abs(directions[:, a] @ row_target) + abs(directions[:, b] @ col_target)
    transpose = swapped > as_is
    row_axis, col_axis = (a, b) if transpose else (b, a)
    return View(
        transpose=bool(transpose),
        flip_rows=bool(directions[:, row_axis] @ row_target < 0),
        flip_cols=bool(directions[:, col_axis] @ col_target < 0),
        spacing=(float(sizes[row_axis]), float(sizes[col_axis])),
        edges=edges,
        plane=plane,
    )


def volume_view(volume: Volume, axis: int) -> View:
    """:func:`radiological_view` of ``volume``'s slices along ``axis`` (its affine read in LPS, whatever its file's
    space: :func:`gmiseg_edge.data.images.lps_affine`)."""
    return radiological_view(lps_affine(volume), axis)
