"""What a structure looks like at its seed, and how far it can move to the next slice (issue 28).

Two kinds of evidence check each propagated slice against its seed:

- **Appearance** (:class:`Appearance`): at the seed slice, the mean image-embedding vector of the cells inside
  the seed mask (a prototype of the structure) and of a ring of cells around it (its surroundings), and the
  grey-level histograms of the same two regions. A later slice's mask is scored by the share of it that looks
  more like the inside than like the surroundings: each embedding cell by which prototype it is nearer (cosine),
  each pixel by which histogram gives its grey level the higher likelihood. The rule compares with the seed's own
  score (a structure whose seed is not cleanly separable from its surroundings is not held to more).
- **Geometry** (:class:`Geometry`): from the voxel spacing. Between two slices ``dz`` mm apart, the boundary of a
  structure whose surface meets the slice plane at 45 degrees or more moves at most ``dz`` mm in-plane, so the
  box of the next slice is the previous mask's extent grown by ``dz`` mm (at least ``min_margin`` pixels) and the
  mask's equivalent radius ``sqrt(area / pi)`` may grow by at most ``dz`` mm plus one pixel.

Everything here is numpy/OpenCV on arrays the runtime already holds (the slice's uint8 pixels, its embedding,
its mask): no extra model run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from gmiseg_edge.core.errors import InputError

GREY_BINS = 32  # grey-level histogram bins over 0..255
_EPS = 1e-6


@dataclass(frozen=True)
class Geometry:
    """Voxel size of a slice (``row_mm``, ``col_mm``) and the distance between slices (``slice_mm``)."""

    row_mm: float
    col_mm: float
    slice_mm: float

    @classmethod
    def of(cls, spacing, axis: int) -> Geometry:
        """From a volume's spacing (mm along its three axes; None: 1 mm everywhere) and the slicing ``axis``.
        Rows of a slice run along the higher remaining axis, columns along the lower one (``slice_2d``)."""
        if spacing is None:
            return cls(1.0, 1.0, 1.0)
        try:
            values = [float(v) for v in spacing]
        except (TypeError, ValueError):
            raise InputError(f"spacing must be three numbers (mm along the volume's axes), got {spacing!r}") from None
        if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
            raise InputError(f"spacing must be three positive numbers (mm along the volume's axes), got {spacing!r}")
        a, b = (ax for ax in (0, 1, 2) if ax != axis)
        return cls(row_mm=values[b], col_mm=values[a], slice_mm=values[axis])

    @property
    def pixel_mm(self) -> float:
        return math.sqrt(self.row_mm * self.col_mm)

    def margin_px(self, min_margin: float) -> tuple[float, float]:
        """(columns, rows) in pixels that the boundary may move from one slice to the next (``slice_mm``)."""
        return max(min_margin, self.slice_mm / self.col_mm), max(min_margin, self.slice_mm / self.row_mm)

    def radius_mm(self, area_px: int) -> float:
        return math.sqrt(area_px * self.row_mm * self.col_mm / math.pi)

    def max_area(self, area_px: int, steps: int = 1) -> float:
        """The largest area (pixels) a structure of ``area_px`` can reach ``steps`` slices on (see the module
        docstring): its equivalent radius grown by ``steps * slice_mm`` mm plus one pixel."""
        radius = self.radius_mm(area_px) + steps * self.slice_mm + self.pixel_mm
        return math.pi * radius * radius / (self.row_mm * self.col_mm)

    def centroid_mm(self, mask: np.ndarray) -> np.ndarray:
        """The centroid (x, y) of a non-empty (H, W) mask in mm of the slice."""
        rows, cols = np.nonzero(mask)
        return np.array([cols.mean() * self.col_mm, rows.mean() * self.row_mm])

    def continuous(self, before: np.ndarray, after: np.ndarray) -> bool:
        """Whether ``after`` (the next slice's mask) is where and as large as ``before`` can be one slice on: its
        equivalent radius and its centroid within one slice thickness plus a pixel of ``before``'s (a surface meeting
        the slice plane at 45 degrees or more; the bound of :meth:`max_area`, both ways)."""
        a, b = int(np.count_nonzero(before)), int(np.count_nonzero(after))
        if not a or not b:
            return False
        step = self.slice_mm + self.pixel_mm
        moved = float(np.hypot(*(self.centroid_mm(after) - self.centroid_mm(before))))
        return abs(self.radius_mm(b) - self.radius_mm(a)) <= step and moved <= step


def grown_extent(mask: np.ndarray, margin: tuple[float, float]) -> np.ndarray:
    """The extent [x0, y0, x1, y1] of a non-empty (H, W) mask grown by ``margin`` (columns, rows) pixels,
    clipped to the slice."""
    height, width = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    mx, my = margin
    return np.array([max(cols[0] - mx, 0.0), max(rows[0] - my, 0.0), min(cols[-1] + mx, width - 1.0),
                     min(rows[-1] + my, height - 1.0)], dtype=np.float32)


def cell_weights(mask: np.ndarray, resized_size: tuple[int, int], input_size: int, cells: int) -> np.ndarray:
    """The share of each embedding cell (``cells`` x ``cells`` over the model's padded S x S input) covered by
    the (H, W) mask, float32 in [0, 1]."""
    height, width = resized_size
    frame = np.zeros((input_size, input_size), np.float32)
    frame[:height, :width] = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return cv2.resize(frame, (cells, cells), interpolation=cv2.INTER_AREA)


def ring(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` pixels of the mask, outside it."""
    size = 2 * max(1, int(width)) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask


def _unit_cells(embedding: np.ndarray) -> np.ndarray:
    """(cells*cells, C) unit vectors of an embedding (1, C, cells, cells)."""
    flat = embedding[0].reshape(embedding.shape[1], -1).T
    return flat / (np.linalg.norm(flat, axis=1, keepdims=True) + _EPS)


@dataclass(frozen=True)
class Score:
    """How much of a mask looks like the seed's structure: ``embedding`` and ``grey`` are the mask's shares
    (weighted by cell coverage, or by pixel) nearer the inside than the surroundings."""

    embedding: float
    grey: float

    @property
    def both(self) -> float:
        return 0.5 * (self.embedding + self.grey)


@dataclass(frozen=True)
class Appearance:
    """The seed's evidence (module docstring): embedding prototypes and grey-level log-likelihood ratios."""

    inside: np.ndarray  # (C,) unit vector
    outside: np.ndarray  # (C,) unit vector
    grey_llr: np.ndarray  # (GREY_BINS,) log p(grey | inside) - log p(grey | surroundings)
    seed: Score  # the seed mask's own score

    @classmethod
    def from_seed(cls, pixels: np.ndarray, embedding: np.ndarray, resized_size: tuple[int, int],
                  input_size: int, mask: np.ndarray) -> Appearance:
        """The evidence of a non-empty seed ``mask`` on its slice: ``pixels`` uint8 (H, W) (or (H, W, 3)),
        ``embedding`` (1, C, n, n) of the same slice. The ring is as wide as the mask's equivalent radius (at
        least two embedding cells), so it holds the structure's neighbours, not just its edge."""
        grey = pixels if pixels.ndim == 2 else pixels.mean(axis=2)
        cells = embedding.shape[-1]
        cell_px = max(mask.shape) / cells  # pixels of the slice per embedding cell (the long side fills the input)
        width = max(2 * cell_px, math.sqrt(np.count_nonzero(mask) / math.pi))
        around = ring(mask, round(width))
        if not around.any():  # the mask covers the slice
            around = ~mask
        vectors = _unit_cells(embedding)
        w_in = cell_weights(mask, resized_size, input_size, cells).ravel()
        w_out = cell_weights(around, resized_size, input_size, cells).ravel()
        inside = (w_in[:, None] * vectors).sum(axis=0)
        outside = (w_out[:, None] * vectors).sum(axis=0)
        inside /= np.linalg.norm(inside) + _EPS
        outside /= np.linalg.norm(outside) + _EPS
        bins = (grey.astype(np.int32) * GREY_BINS) // 256
        hist_in = np.bincount(bins[mask].ravel(), minlength=GREY_BINS).astype(np.float64) + 1.0
        hist_out = np.bincount(bins[around].ravel(), minlength=GREY_BINS).astype(np.float64) + 1.0
        llr = np.log(hist_in / hist_in.sum()) - np.log(hist_out / hist_out.sum())
        partial = cls(inside.astype(np.float32), outside.astype(np.float32), llr.astype(np.float32),
                      Score(1.0, 1.0))
        return cls(partial.inside, partial.outside, partial.grey_llr,
                   partial.score(pixels, embedding, resized_size, input_size, mask))

    def inside_cells(self, embedding: np.ndarray) -> np.ndarray:
        """(n, n) bool: the embedding cells nearer the inside prototype than the surroundings'."""
        vectors = _unit_cells(embedding)
        cells = embedding.shape[-1]
        return (vectors @ self.inside > vectors @ self.outside).reshape(cells, cells)

    def inside_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W) bool: the pixels whose grey level is likelier inside than in the surroundings."""
        grey = pixels if pixels.ndim == 2 else pixels.mean(axis=2)
        return self.grey_llr[(grey.astype(np.int32) * GREY_BINS) // 256] > 0

    def score(self, pixels: np.ndarray, embedding: np.ndarray, resized_size: tuple[int, int], input_size: int,
              mask: np.ndarray) -> Score:
        """The share of a non-empty ``mask`` on a slice that looks like the seed's inside (:class:`Score`)."""
        weights = cell_weights(mask, resized_size, input_size, embedding.shape[-1]).ravel()
        near = self.inside_cells(embedding).ravel()
        total = float(weights.sum())
        embed = float(weights[near].sum() / total) if total > 0 else 0.0
        grey = float(np.count_nonzero(self.inside_pixels(pixels) & mask) / max(1, np.count_nonzero(mask)))
        return Score(embed, grey)

    def inside_map(self, embedding: np.ndarray, resized_size: tuple[int, int], input_size: int,
                   shape: tuple[int, int]) -> np.ndarray:
        """:meth:`inside_cells` as an (H, W) bool map of the slice."""
        cells = self.inside_cells(embedding).astype(np.uint8)
        frame = cv2.resize(cells, (input_size, input_size), interpolation=cv2.INTER_NEAREST)
        height, width = resized_size
        return cv2.resize(frame[:height, :width], (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0

    def typical(self, score: Score) -> bool:
        """The mask separates from the surroundings at least half as clearly as the seed mask does: in the
        embedding and in grey levels alike, its inside-like share is at least the midpoint between chance (a half)
        and the seed's own share. A mask that is not typical is re-prompted from a tighter prior, and the tighter
        answer is kept when what it leaves out looks like the surroundings (:meth:`agrees` fails on it)."""
        return all(value >= 0.5 * (0.5 + seed) for value, seed in ((score.embedding, self.seed.embedding),
                                                                   (score.grey, self.seed.grey)))

    def partly_typical(self, score: Score) -> bool:
        """One of the two shares (embedding or grey levels) reaches :meth:`typical`'s bar: that kind of evidence
        alone still sees the seed's structure as clearly as a typical slice does."""
        return any(value >= 0.5 * (0.5 + seed) for value, seed in ((score.embedding, self.seed.embedding),
                                                                   (score.grey, self.seed.grey)))

    def matches(self, other: Appearance) -> bool:
        """Another seed's structure is this one's when its inside prototype is nearer this inside prototype than
        these surroundings', both ways round."""
        return bool(other.inside @ self.inside > other.inside @ self.outside
                    and self.inside @ other.inside > self.inside @ other.outside)

    def agrees(self, score: Score) -> bool:
        """A slice's mask is still the seed's structure unless most of it looks like the seed's surroundings rather
        than its inside, in the embedding or in grey levels (a share under a half: the majority is the only
        threshold, nothing tuned)."""
        return score.embedding >= 0.5 and score.grey >= 0.5
