"""Label maps: which labels are present, one label as a binary mask, instances."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmiseg_edge.core.errors import DataError


def label_values(labels: np.ndarray) -> list[int]:
    """The sorted non-zero values of a label map."""
    values = np.unique(labels)
    return [int(v) for v in values if v != 0]


def select_label(
    labels: np.ndarray, value: int | None = None, *, path: str | Path | None = None
) -> np.ndarray:
    """Binary (bool) mask of label ``value``, or of every non-zero label when ``value`` is None.

    Raises DataError naming ``path`` when the label is absent (listing the labels present) or, for
    ``value=None``, when the map has no foreground at all.
    """
    if value is None:
        mask = labels != 0
        if not mask.any():
            raise DataError("mask is empty: it has no non-zero label", path)
        return mask
    if int(value) != value or value == 0:
        raise ValueError(f"label value must be a non-zero integer, got {value!r}")
    mask = labels == value
    if not mask.any():
        present = label_values(labels)
        raise DataError(
            f"label {int(value)} is not present; labels present: {present or 'none (empty mask)'}", path
        )
    return mask


def require_nonempty(mask: np.ndarray, path: str | Path | None = None, what: str = "mask") -> np.ndarray:
    """Return ``mask`` unchanged; raise DataError naming ``path`` if it has no foreground pixel."""
    if not np.any(mask):
        raise DataError(f"{what} is empty: it has no foreground pixel", path)
    return mask


def instance_masks(labels: np.ndarray, *, path: str | Path | None = None) -> dict[int, np.ndarray]:
    """One bool mask per instance id of an instance label map (0 is background), in id order."""
    ids = label_values(labels)
    if not ids:
        raise DataError("instance mask is empty: it has no instance", path)
    return {i: labels == i for i in ids}
