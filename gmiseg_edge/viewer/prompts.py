"""Prompts of one slice from the widget's Shapes (boxes) and Points (clicks) layers, in the image's pixels.

Coordinates come in the image layer's data space (napari order: (k, row, col) for a volume, (row, col) for a
2D image); the runtime takes (x, y) = (col, row). A prompt outside the image is refused with a message naming
it, never clipped silently. Qt-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gmiseg_edge.core.errors import InputError


@dataclass(frozen=True)
class SlicePrompt:
    """A box [x0, y0, x1, y1] and/or points (N, 2) (x, y) with labels (N,) 1/0, on one slice."""

    box: np.ndarray | None
    points: np.ndarray | None
    labels: np.ndarray | None

    @property
    def empty(self) -> bool:
        return self.box is None and self.points is None

    def key(self) -> tuple:
        """What the prompt is, for telling a changed prompt from the one already decoded."""
        return (None if self.box is None else self.box.round(3).tobytes(),
                None if self.points is None else self.points.round(3).tobytes(),
                None if self.labels is None else self.labels.tobytes())


def _on_slice(coords: np.ndarray, k: int | None) -> np.ndarray:
    """The rows of (N, ndim) ``coords`` on slice ``k`` (all for a 2D image, ``k`` None), as (row, col)."""
    if k is None:
        return coords[:, -2:]
    return coords[np.round(coords[:, 0]) == k][:, -2:]


def _check_inside(rows_cols: np.ndarray, shape: tuple[int, int], what: str) -> None:
    height, width = shape
    for row, col in rows_cols:
        if not (-0.5 <= row <= height - 0.5 and -0.5 <= col <= width - 0.5):
            raise InputError(f"{what} at (x={col:.1f}, y={row:.1f}) is outside the image ({width} x {height} pixels); "
                             "it was not used")


def slice_prompt(boxes: Sequence[np.ndarray], points: np.ndarray, positive: np.ndarray, k: int | None,
                 shape: tuple[int, int]) -> SlicePrompt:
    """The prompt on slice ``k`` (None: a 2D image) of an image of ``shape`` (H, W).

    ``boxes``: the rectangles' vertices (4, ndim) each, the last one on the slice is used (clipped to the image; one
    that misses the image is refused); ``points`` (N, ndim) with ``positive`` (N,) bool, rounded to the pixel they
    fall in (one outside the image is refused).
    """
    box = None
    on_slice = []
    for vertices in boxes:
        vertices = np.asarray(vertices, dtype=np.float64)
        rows_cols = _on_slice(vertices, k)
        if len(rows_cols) == len(vertices):
            on_slice.append(rows_cols)
    if on_slice:
        (r0, c0), (r1, c1) = on_slice[-1].min(axis=0), on_slice[-1].max(axis=0)
        height, width = shape
        if r1 < -0.5 or c1 < -0.5 or r0 > height - 0.5 or c0 > width - 0.5:
            raise InputError(f"the box (x {c0:.1f}..{c1:.1f}, y {r0:.1f}..{r1:.1f}) is outside the image "
                             f"({width} x {height} pixels); it was not used")
        box = np.array([max(c0, 0.0), max(r0, 0.0), min(c1, width - 1.0), min(r1, height - 1.0)], np.float32)
    coords = np.asarray(points, dtype=np.float64)
    picked, signs = np.zeros((0, 2)), np.zeros(0, bool)
    if coords.size:
        mask = np.ones(len(coords), bool) if k is None else np.round(coords[:, 0]) == k
        picked, signs = coords[mask][:, -2:], np.asarray(positive, bool)[mask]
        _check_inside(picked, shape, "the click")
    if not len(picked):
        return SlicePrompt(box, None, None)
    xy = np.round(picked[:, ::-1]).astype(np.float32)
    return SlicePrompt(box, xy, signs.astype(np.int64))
