"""The 3D prior: each registered support's label warped onto the query, fused across supports by locally weighted
voting (DESIGN §7, anatomy). Numpy and OpenCV; the warping itself is :meth:`.register3d.Registration3D.warp`.

For support s, on the query's canonical grid: ``A_s`` its warped label (linear interpolation: a probability),
``F_s`` its field of view (the warped all-ones map >= 0.5: where the support has voxels at all), ``I_s`` its
warped image. Its *global weight* ``w_s`` is the normalised mutual information of the query and ``I_s`` around
the warped structure (``A_s >= 0.5`` dilated by ``REACH_MM``; :func:`gmiseg_edge.runtime.registration.
match_quality`). Its *local agreement* ``L_s`` is the 2D path's (:func:`gmiseg_edge.runtime.support.locate.
local_agreement`: a robust Gaussian of the grey-level difference between query and ``I_s``, smoothed over one
embedding cell), computed axial slice by axial slice: the slice is what SAM sees, and the robust spread of the
difference then follows the slice's content. A support's vote at a voxel is ``v_s = w_s L_s F_s`` (0 outside its
field of view: a partial scan says nothing about the slices it does not hold). Then

- ``prior = sum(v_s A_s) / sum(v_s)`` (0 where no support votes), smoothed by a Gaussian of ``SOFT_MM`` in plane
  (the registration's typical error: the warped edge is soft, so SAM decides the boundary within it);
- ``uncertainty = sqrt(sum(v_s (A_s - prior)^2) / sum(v_s))``: the supports' disagreement (0..0.5);
- ``covered``: the query slices inside at least one support's field of view;
- ``agreement``: the mean pairwise Dice of the supports' warped labels (``A_s >= 0.5``) where both see the query:
  high for an organ (every patient has it in the same place), low for a lesion (1.0 for a lone support).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from gmiseg_edge.runtime.registration import match_quality
from gmiseg_edge.runtime.support.locate import local_agreement

SOFT_MM = 2.0  # in-plane Gaussian on the fused prior
REACH_MM = 15.0  # the region around the warped structure where a support's match is measured


@dataclass(frozen=True)
class WarpedSupport:
    """One registered support on the query's canonical grid (module docstring's ``A_s``, ``F_s``, ``I_s``)."""

    name: str
    label: np.ndarray  # float32 (I, J, K) in [0, 1]
    view: np.ndarray  # bool (I, J, K): inside the support's field of view
    image: np.ndarray  # float32 (I, J, K): the support's uint8 image warped


@dataclass(frozen=True)
class VolumePrior:
    """The fused prior on the query's canonical grid (module docstring)."""

    prior: np.ndarray  # float32 (I, J, K)
    uncertainty: np.ndarray  # float32 (I, J, K), 0..0.5
    covered: np.ndarray  # bool (K,)
    weights: np.ndarray  # (n,) global weights, normalised
    agreement: float
    names: tuple[str, ...]

    @property
    def slices(self) -> np.ndarray:
        """Indices k of the query slices where the prior holds the structure (``max >= 0.5``)."""
        return np.flatnonzero(self.prior.max(axis=(0, 1)) >= 0.5)


def _dilate(mask: np.ndarray, spacing: tuple[float, float, float], reach_mm: float) -> np.ndarray:
    """``mask`` grown by about ``reach_mm`` in plane, slice by slice (a square of that half-width)."""
    half = [max(1, round(reach_mm / s)) for s in spacing[:2]]
    kernel = np.ones((2 * half[1] + 1, 2 * half[0] + 1), np.uint8)
    grown = np.empty_like(mask)
    for k in range(mask.shape[2]):
        grown[:, :, k] = cv2.dilate(np.ascontiguousarray(mask[:, :, k].T).astype(np.uint8), kernel).T > 0
    return grown


def _pairwise_dice(supports: Sequence[WarpedSupport]) -> float:
    if len(supports) < 2:
        return 1.0
    scores = []
    for a in range(len(supports)):
        for b in range(a + 1, len(supports)):
            both = supports[a].view & supports[b].view
            x, y = (supports[a].label >= 0.5) & both, (supports[b].label >= 0.5) & both
            total = int(x.sum()) + int(y.sum())
            if total:
                scores.append(2 * int((x & y).sum()) / total)
    return float(np.mean(scores)) if scores else 0.0


def fuse(query: np.ndarray, spacing: tuple[float, float, float], supports: Sequence[WarpedSupport]) -> VolumePrior:
    """The module's fused prior on a query (canonical uint8 (I, J, K), voxel ``spacing`` mm) from its supports."""
    if not supports:
        raise ValueError("fuse: no registered supports")
    weights = []
    for support in supports:
        around = _dilate(support.label >= 0.5, spacing, REACH_MM) & support.view
        if not around.any():
            weights.append(1e-6)
            continue
        weights.append(max(1e-6, match_quality(query[around][None, :], support.image[around][None, :])))
    w = np.asarray(weights) / np.sum(weights)
    votes = np.zeros((len(supports), *query.shape), np.float32)
    for s, support in enumerate(supports):
        for k in range(query.shape[2]):
            if support.view[:, :, k].any():
                votes[s, :, :, k] = w[s] * local_agreement(query[:, :, k].T, support.image[:, :, k].T).T
        votes[s] *= support.view
    total = votes.sum(axis=0)
    voted = total > 0
    labels = np.stack([s.label for s in supports])
    prior = np.where(voted, (votes * labels).sum(axis=0) / np.maximum(total, 1e-12), 0.0).astype(np.float32)
    spread = np.sqrt(np.where(voted, (votes * (labels - prior) ** 2).sum(axis=0) / np.maximum(total, 1e-12), 0.0))
    for k in range(prior.shape[2]):
        sigma = (SOFT_MM / spacing[0], SOFT_MM / spacing[1])
        prior[:, :, k] = cv2.GaussianBlur(np.ascontiguousarray(prior[:, :, k]), (0, 0), sigmaX=sigma[1],
                                          sigmaY=sigma[0])
    return VolumePrior(prior, spread.astype(np.float32), voted.any(axis=(0, 1)), w.astype(np.float32),
                       _pairwise_dice(supports), tuple(s.name for s in supports))
