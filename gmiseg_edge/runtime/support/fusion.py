"""Fusion and voting (steps 6 and 8 of :mod:`.segmenter`): SAM's answer with a candidate's prior, then the
supports' answers combined pixel by pixel (locally weighted voting) into one :class:`SupportPrediction`.

The fusion strategies by name (:data:`FUSIONS`): ``"fused"`` ``p = (sigmoid(SAM logits) + P) / 2`` (a pixel the
prior is sure of keeps the prior's answer, SAM decides where the prior is unsure), ``"sam"`` SAM's probabilities
alone, ``"prior"`` the prior alone (no decoder run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from gmiseg_edge.runtime.support.locate import MIN_PRESENCE_WEIGHT, SupportMatch


@dataclass(frozen=True)
class Fusion:
    """How a decoded candidate's probability is made: ``fuse(sam, prior)``; ``decodes`` False: no decoder run
    (``fuse`` is then given ``sam=None``)."""

    name: str
    decodes: bool
    fuse: Callable[[np.ndarray | None, np.ndarray], np.ndarray]


#: the fusion strategies by name
FUSIONS: dict[str, Fusion] = {
    "fused": Fusion("fused", True, lambda sam, prior: (sam + prior) / 2),
    "prior": Fusion("prior", False, lambda sam, prior: prior),
    "sam": Fusion("sam", True, lambda sam, prior: sam),
}


@dataclass(frozen=True)
class SupportPrediction:
    """The support set's answer on one query."""

    mask: np.ndarray  # bool (H, W)
    probability: np.ndarray  # float32 (H, W), fused over supports
    prior: np.ndarray  # float32 (H, W), the fused prior (before SAM)
    uncertainty: np.ndarray  # float32 (H, W), weighted std of the supports' probabilities
    weights: np.ndarray  # float32 (n_supports,), normalised
    presence: float
    present: bool
    score: float  # weighted predicted IoU (0 when not present)
    matches: tuple[SupportMatch, ...] = field(default=(), repr=False)

    @property
    def logits(self) -> np.ndarray:
        p = np.clip(self.probability, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p)).astype(np.float32)


def weigh_unregistered(matches: list[SupportMatch]) -> list[SupportMatch]:
    """Each support left without a registration gets half the smallest registered support's match (1 when none
    registered) as its match, and its weight from it (step 5)."""
    registered = [m.match for m in matches if m.anatomy is not None]
    fallback = 0.5 * min(registered) if registered else 1.0
    return [m if m.anatomy is not None else
            replace(m, match=fallback, weight=fallback * max(m.presence, MIN_PRESENCE_WEIGHT))
            for m in matches]


def votes(weights: np.ndarray, matches: list[SupportMatch], size: tuple[int, int]) -> np.ndarray:
    """Each support's per-pixel vote ``w L`` (step 8), normalised over the supports at every pixel."""
    stacked = np.stack([w * (m.agreement if m.chosen == "anatomy" and m.agreement is not None
                             else np.ones(size, np.float32)) for w, m in zip(weights, matches, strict=True)])
    return (stacked / stacked.sum(axis=0)).astype(np.float32)


def combine(size: tuple[int, int], matches: list[SupportMatch], require_presence: bool) -> SupportPrediction:
    """Step 8: the supports' answers on a query of ``size`` (H, W) combined by weight and local agreement."""
    weights = np.asarray([max(m.weight, 1e-6) for m in matches], np.float64)
    weights /= weights.sum()
    vote = votes(weights, matches, size)
    prior = (vote * np.stack([m.prior for m in matches])).sum(axis=0).astype(np.float32)
    presence = float(np.dot(weights, [m.presence for m in matches]))
    present = presence >= 0.5
    stack = np.stack([m.probability for m in matches])
    probability = (vote * stack).sum(axis=0).astype(np.float32)
    spread = np.sqrt((vote * (stack - probability) ** 2).sum(axis=0)).astype(np.float32)
    if require_presence and not present:  # an empty mask; the probability and disagreement stay to be seen
        return SupportPrediction(np.zeros(size, bool), probability, prior, spread,
                                 weights.astype(np.float32), presence, False, 0.0, tuple(matches))
    score = float(np.dot(weights, [m.iou for m in matches]))
    return SupportPrediction(probability > 0.5, probability, prior, spread, weights.astype(np.float32),
                             presence, present, score, tuple(matches))


def searched(match: SupportMatch) -> SupportMatch:
    """``match`` with the presence and weight of the candidate it took (step 9): a switched support's appearance
    candidate; unchanged for every other support."""
    if match.chosen != "appearance" or match.anatomy is None:
        return match
    taken = next(c for c in match.candidates if c.kind == "appearance")
    return replace(match, presence=taken.presence, weight=match.match * max(taken.presence, MIN_PRESENCE_WEIGHT))
