"""Overlap and surface-distance metrics for binary segmentation masks (2D or 3D, spacing-aware).

Pure numpy + scipy: importable and usable without torch.

Definitions
-----------
* ``dice = 2|P∩G| / (|P| + |G|)`` and ``jaccard = |P∩G| / |P∪G|`` (IoU).
* **Surface** of a mask: its foreground voxels that touch the background, i.e. the mask minus its
  binary erosion with the face-connected structuring element (4-connectivity in 2D, 6 in 3D).
  Everything outside the image counts as background, so foreground voxels on the image border are
  surface voxels.
* **Surface distances**: for each surface voxel of one mask, the exact Euclidean distance (in mm,
  between voxel centres, via ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``) to the
  nearest surface voxel of the other mask. This gives two directed sets, ``d(P→G)`` and ``d(G→P)``.
* **ASD** (average symmetric surface distance): the mean of both sets pooled,
  ``(Σ d(P→G) + Σ d(G→P)) / (|∂P| + |∂G|)``.
* **HD95**: the **maximum of the two directed 95th percentiles**,
  ``max(p95(d(P→G)), p95(d(G→P)))``, with ``numpy.percentile``'s default linear interpolation.
  (This is the convention of MONAI's ``compute_hausdorff_distance(percentile=95)``; it is not the
  95th percentile of the pooled distances, which can be smaller when one surface is much larger.)

``spacing`` is one positive, finite voxel size in mm per array axis (default 1.0 for every axis).
Masks may be bool, integer or float arrays; every non-zero voxel is foreground. NaN or ±inf
values, shape mismatches and masks that are not 2D or 3D raise ``ValueError``.

Empty masks
-----------
* **Both empty**: ``dice = jaccard = 1``, ``asd = hd95 = 0`` — perfect agreement that the structure
  is absent.
* **Exactly one empty**: ``dice = jaccard = 0``, ``asd = hd95 = inf``. The distance from a point to
  an empty set is +inf (infimum over nothing), and inf is deliberately preferred over NaN: NaN is
  dropped silently by ``numpy.nanmean`` and most "ignore missing" aggregations, which would make a
  model that misses (or hallucinates) whole structures look *better*; inf instead makes a plain
  mean visibly infinite. :func:`summarise` computes statistics over finite values only and reports
  how many cases were infinite and how many were NaN, so excluded cases are always counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import ndimage

__all__ = [
    "MetricSummary",
    "SegmentationScores",
    "average_symmetric_surface_distance",
    "dice",
    "hausdorff_distance_95",
    "jaccard",
    "normalized_surface_dice",
    "score",
    "summarise",
    "summarise_values",
]

Spacing = Sequence[float]


# --------------------------------------------------------------------------- input validation


def _as_mask(x: object, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a bool, integer or float array, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; a mask must be 0/1 (or bool)")
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2D or 3D mask, got shape {arr.shape}")
    return arr != 0


def _check_pair(pred: object, gt: object) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: pred has shape {p.shape}, gt has shape {g.shape}")
    return p, g


def _check_spacing(spacing: Spacing | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    try:
        values = tuple(float(s) for s in spacing)
    except TypeError:
        raise ValueError(f"spacing must be a sequence of {ndim} floats (mm per axis), got {spacing!r}") from None
    if len(values) != ndim:
        raise ValueError(f"spacing must have one value per axis ({ndim}), got {len(values)}: {values}")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing values must be positive and finite, got {values}")
    return values


# --------------------------------------------------------------------------- overlap metrics


def _overlap(p: np.ndarray, g: np.ndarray) -> tuple[int, int, int]:
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p)), int(np.count_nonzero(g))


def _dice(p: np.ndarray, g: np.ndarray) -> float:
    inter, n_p, n_g = _overlap(p, g)
    return 1.0 if n_p + n_g == 0 else 2.0 * inter / (n_p + n_g)


def _jaccard(p: np.ndarray, g: np.ndarray) -> float:
    inter, n_p, n_g = _overlap(p, g)
    union = n_p + n_g - inter
    return 1.0 if union == 0 else inter / union


def dice(pred: object, gt: object) -> float:
    """Dice coefficient ``2|P∩G| / (|P|+|G|)``; 1.0 when both masks are empty."""
    return _dice(*_check_pair(pred, gt))


def jaccard(pred: object, gt: object) -> float:
    """Jaccard index (IoU) ``|P∩G| / |P∪G|``; 1.0 when both masks are empty."""
    return _jaccard(*_check_pair(pred, gt))


# --------------------------------------------------------------------------- surface distances


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _surface_distances(
    p: np.ndarray, g: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Directed distances ``(d(P→G), d(G→P))`` in mm; None if either mask is empty."""
    if not p.any() or not g.any():
        return None
    # Crop to the bounding box of P∪G: everything outside is background in both masks, so the
    # erosion (border counts as background) and the exact EDT give the same values as uncropped.
    coords = np.nonzero(p | g)
    box = tuple(slice(int(c.min()), int(c.max()) + 1) for c in coords)
    p, g = p[box], g[box]
    surf_p, surf_g = _surface(p), _surface(g)
    dist_to_g = ndimage.distance_transform_edt(~surf_g, sampling=spacing)
    dist_to_p = ndimage.distance_transform_edt(~surf_p, sampling=spacing)
    return dist_to_g[surf_p], dist_to_p[surf_g]


def _asd(d: tuple[np.ndarray, np.ndarray] | None, p: np.ndarray, g: np.ndarray) -> float:
    if d is None:
        return 0.0 if not p.any() and not g.any() else math.inf
    return float((d[0].sum() + d[1].sum()) / (d[0].size + d[1].size))


def _hd95(d: tuple[np.ndarray, np.ndarray] | None, p: np.ndarray, g: np.ndarray) -> float:
    if d is None:
        return 0.0 if not p.any() and not g.any() else math.inf
    return float(max(np.percentile(d[0], 95), np.percentile(d[1], 95)))


def average_symmetric_surface_distance(pred: object, gt: object, spacing: Spacing | None = None) -> float:
    """ASD in mm: mean distance over both surfaces' voxels to the other surface (see module doc).

    0.0 if both masks are empty, ``inf`` if exactly one is.
    """
    p, g = _check_pair(pred, gt)
    return _asd(_surface_distances(p, g, _check_spacing(spacing, p.ndim)), p, g)


def hausdorff_distance_95(pred: object, gt: object, spacing: Spacing | None = None) -> float:
    """HD95 in mm: ``max`` of the two directed 95th-percentile surface distances (see module doc).

    0.0 if both masks are empty, ``inf`` if exactly one is.
    """
    p, g = _check_pair(pred, gt)
    return _hd95(_surface_distances(p, g, _check_spacing(spacing, p.ndim)), p, g)


def normalized_surface_dice(pred: object, gt: object, spacing: Spacing | None = None,
                            tolerance_mm: float = 2.0) -> float:
    """NSD: the fraction of both surfaces' voxels within ``tolerance_mm`` of the other surface.

    1.0 if both masks are empty, 0.0 if exactly one is.
    """
    if not tolerance_mm >= 0:
        raise ValueError(f"tolerance must be >= 0 mm, got {tolerance_mm}")
    p, g = _check_pair(pred, gt)
    d = _surface_distances(p, g, _check_spacing(spacing, p.ndim))
    if d is None:
        return float(p.any() == g.any())
    return float(((d[0] <= tolerance_mm).sum() + (d[1] <= tolerance_mm).sum()) / (d[0].size + d[1].size))


# --------------------------------------------------------------------------- scores and summaries


@dataclass(frozen=True)
class SegmentationScores:
    """All four metrics for one case. ``asd`` and ``hd95`` are in mm (``inf`` if one mask is empty)."""

    dice: float
    jaccard: float
    asd: float
    hd95: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def score(pred: object, gt: object, spacing: Spacing | None = None) -> SegmentationScores:
    """Compute Dice, Jaccard, ASD and HD95 together (surfaces and distance maps computed once)."""
    p, g = _check_pair(pred, gt)
    d = _surface_distances(p, g, _check_spacing(spacing, p.ndim))
    return SegmentationScores(dice=_dice(p, g), jaccard=_jaccard(p, g), asd=_asd(d, p, g), hd95=_hd95(d, p, g))


@dataclass(frozen=True)
class MetricSummary:
    """Statistics of one metric over a dataset, computed on the finite values only.

    ``n_used`` cases contributed; ``n_inf`` (one mask empty) and ``n_nan`` cases were excluded.
    ``mean``/``std``/``median`` are NaN when ``n_used == 0``. ``std`` uses ``ddof`` from
    :func:`summarise` (default 0, the population standard deviation).
    """

    mean: float
    std: float
    median: float
    n_used: int
    n_inf: int
    n_nan: int

    @property
    def n_total(self) -> int:
        return self.n_used + self.n_inf + self.n_nan

    @property
    def n_excluded(self) -> int:
        return self.n_inf + self.n_nan

    def __str__(self) -> str:
        text = f"{self.mean:.4g} ± {self.std:.4g} (median {self.median:.4g}, n={self.n_used}"
        if self.n_inf:
            text += f"; {self.n_inf} infinite excluded"
        if self.n_nan:
            text += f"; {self.n_nan} NaN excluded"
        return text + ")"


def _summary(values: np.ndarray, ddof: int) -> MetricSummary:
    finite = values[np.isfinite(values)]
    n_nan = int(np.count_nonzero(np.isnan(values)))
    n_inf = int(np.count_nonzero(np.isinf(values)))
    n = finite.size
    if n == 0:
        mean = std = median = math.nan
    else:
        mean, median = float(finite.mean()), float(np.median(finite))
        std = float(finite.std(ddof=ddof)) if n > ddof else math.nan
    return MetricSummary(mean=mean, std=std, median=median, n_used=n, n_inf=n_inf, n_nan=n_nan)


def summarise(scores: Iterable[SegmentationScores], ddof: int = 0) -> dict[str, MetricSummary]:
    """Mean/std/median per metric over finite values, keyed ``dice``, ``jaccard``, ``asd``, ``hd95``.

    NaN and infinite entries are left out of the statistics and counted in ``n_nan`` / ``n_inf``.
    """
    rows = list(scores)
    out = {}
    for f in fields(SegmentationScores):
        values = np.array([getattr(s, f.name) for s in rows], dtype=float)
        out[f.name] = _summary(values, ddof)
    return out


def summarise_values(values: Iterable[float], ddof: int = 0) -> MetricSummary:
    """:class:`MetricSummary` of one metric's values (e.g. NSD beside :func:`summarise`'s four)."""
    return _summary(np.array(list(values), dtype=float), ddof)
