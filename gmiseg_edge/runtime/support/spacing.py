"""Pixel spacing of support and query images: every size the support set uses is stated in millimetres and
turned into pixels of the image it applies to.

An image given as an array carries no pixel size. ``spacing=`` states it as (row mm, col mm), one number for
square pixels, or, for a volume given as an array, one number per array axis. When it is not given the image
counts as :data:`DEFAULT_SPACING` (1 mm per pixel side): images of one scan (or scans of equal pixel size)
then behave exactly as before spacing was known, but a support and a query of different pixel sizes are only
handled right when both state theirs (the file readers in :mod:`gmiseg_edge.data` give it from the headers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gmiseg_edge.core.errors import InputError

DEFAULT_SPACING = (1.0, 1.0)  # mm per pixel (row, col) when an image's spacing is not given

Spacing = float | Sequence[float] | None


def pixel_spacing(spacing: Spacing, name: str = "image") -> tuple[float, float]:
    """(row mm, col mm) of a 2D image: ``spacing`` as one number (square pixels) or two, or
    :data:`DEFAULT_SPACING` when None. A value that is not positive and finite is an :class:`InputError`."""
    if spacing is None:
        return DEFAULT_SPACING
    values = [float(v) for v in np.ravel(np.asarray(spacing, dtype=np.float64))]
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not all(np.isfinite(v) and v > 0 for v in values):
        raise InputError(f"{name}: spacing must be one or two positive numbers (row mm, col mm), got {spacing!r}")
    return values[0], values[1]


def slice_spacing(spacing: Spacing, axis: int, name: str = "volume") -> tuple[float, float]:
    """(row mm, col mm) of ``np.take(volume, k, axis)`` for a volume array of voxel ``spacing`` (one number, or
    one per array axis; :data:`DEFAULT_SPACING` in-plane when None)."""
    if spacing is None:
        return DEFAULT_SPACING
    values = [float(v) for v in np.ravel(np.asarray(spacing, dtype=np.float64))]
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise InputError(f"{name}: spacing of a volume must be one or three positive numbers (mm per array axis), "
                         f"got {spacing!r}")
    rows, cols = (values[a] for a in range(3) if a != axis)
    return rows, cols


def mm_to_pixels(mm: float, spacing: tuple[float, float]) -> float:
    """A length in mm as pixels of an image of ``spacing`` (the mean of its two sides for non-square pixels)."""
    return float(mm) / (0.5 * (spacing[0] + spacing[1]))


def pixel_area(spacing: tuple[float, float]) -> float:
    """mm^2 of one pixel."""
    return float(spacing[0] * spacing[1])
