"""3D to 2D: slices that hold a label, the largest one, the middle of the label's extent.

A volume is indexed (i, j, k) in the file's order. Removing ``axis`` leaves two axes (a, b), a < b; a
slice is returned as rows x columns = (b, a), i.e. transposed: for NIfTI and NRRD the in-plane array is
(x, y) and an image is (y, x). Its spacing is (row mm, col mm) = (spacing[b], spacing[a]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.data.images import Volume
from gmiseg_edge.data.labels import require_nonempty, select_label

SliceMode = Literal["labelled", "largest", "middle"]


@dataclass(frozen=True, eq=False)
class Slice2D:
    """One slice: ``image`` (original intensities) and bool ``mask``, rows x cols, spacing (row, col) mm."""

    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float]
    axis: int
    index: int


def _other_axes(axis: int) -> tuple[int, int]:
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    a, b = (ax for ax in (0, 1, 2) if ax != axis)
    return a, b


def slice_2d(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Slice ``index`` along ``axis`` of a 3D array, as rows x columns (the remaining axes transposed)."""
    _other_axes(axis)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {array.shape}")
    if not 0 <= index < array.shape[axis]:
        raise IndexError(f"slice {index} is outside 0..{array.shape[axis] - 1} along axis {axis}")
    return np.ascontiguousarray(np.take(array, index, axis=axis).T)


def slice_spacing(spacing: tuple[float, float, float], axis: int) -> tuple[float, float]:
    """In-plane (row mm, col mm) of a slice along ``axis`` of a volume with voxel ``spacing``."""
    a, b = _other_axes(axis)
    return (float(spacing[b]), float(spacing[a]))


def slice_areas(mask: np.ndarray, axis: int) -> np.ndarray:
    """Number of mask pixels in each slice along ``axis``."""
    return np.count_nonzero(mask, axis=_other_axes(axis))


def labelled_indices(mask: np.ndarray, axis: int) -> list[int]:
    """Indices of the slices along ``axis`` that hold at least one mask voxel."""
    return [int(i) for i in np.flatnonzero(slice_areas(mask, axis))]


def largest_index(mask: np.ndarray, axis: int) -> int:
    """Index of the slice along ``axis`` with the largest mask area (the first one on ties)."""
    areas = slice_areas(mask, axis)
    if areas.max(initial=0) == 0:
        raise ValueError("mask is empty")
    return int(np.argmax(areas))


def middle_indices(mask: np.ndarray) -> tuple[int, int, int]:
    """The paper's protocol: per axis, the middle slice of the mask's extent, ``(first + last) // 2``.

    If that slice holds no mask voxel (a label in separate pieces), the nearest labelled slice is taken
    (the lower one on ties).
    """
    middles = []
    for axis in (0, 1, 2):
        indices = np.asarray(labelled_indices(mask, axis))
        if indices.size == 0:
            raise ValueError("mask is empty")
        middle = (int(indices[0]) + int(indices[-1])) // 2
        middles.append(int(indices[np.argmin(np.abs(indices - middle))]))
    return (middles[0], middles[1], middles[2])


def extract_slices(
    image: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    mode: SliceMode = "labelled",
    axis: int = 2,
) -> list[Slice2D]:
    """2D slices of a 3D ``image`` and bool ``mask`` of the same shape.

    ``mode``: ``"labelled"`` every slice along ``axis`` holding the mask; ``"largest"`` the one with the
    largest mask area along ``axis``; ``"middle"`` one per axis 0, 1, 2 at the middle of the mask's extent.
    """
    if image.shape != mask.shape:
        raise ValueError(f"image shape {image.shape} and mask shape {mask.shape} differ")
    if not mask.any():
        raise ValueError("mask is empty")
    if mode == "labelled":
        picks = [(axis, i) for i in labelled_indices(mask, axis)]
    elif mode == "largest":
        picks = [(axis, largest_index(mask, axis))]
    elif mode == "middle":
        picks = list(enumerate(middle_indices(mask)))
    else:
        raise ValueError(f"mode must be 'labelled', 'largest' or 'middle', got {mode!r}")
    return [
        Slice2D(
            image=slice_2d(image, ax, i),
            mask=slice_2d(mask, ax, i).astype(bool),
            spacing=slice_spacing(spacing, ax),
            axis=ax,
            index=i,
        )
        for ax, i in picks
    ]


def volume_slices(
    image: Volume,
    labels: Volume,
    label: int | None = None,
    *,
    mode: SliceMode = "labelled",
    axis: int = 2,
) -> list[Slice2D]:
    """2D slices of a volume for one ``label`` of its label map (None: every non-zero label).

    Raises DataError naming the file when the shapes differ, the label is absent or the mask is empty.
    """
    if image.array.shape != labels.array.shape:
        raise DataError(
            f"label map shape {labels.array.shape} does not match image {image.path} "
            f"shape {image.array.shape}",
            labels.path,
        )
    mask = require_nonempty(select_label(labels.array, label, path=labels.path), labels.path)
    return extract_slices(image.array, mask, image.spacing, mode=mode, axis=axis)
