"""The appearance model (steps 1 and 3 of :mod:`.segmenter`): how the supports score the query's embedding cells,
and how much a region of the query looks like the supports' structure.

The strategies that fit the appearance direction, by name (:data:`APPEARANCES`): ``"probe"`` one L2-regularised
logistic regression over the unit embedding vectors of *all* supports' cells, structure against background
(:func:`gmiseg_edge.runtime.embedding_probe.fit_direction`); ``"prototype"`` per support ``fg - bg``, the weighted
mean unit vectors of its structure cells and of its ring; ``"auto"`` the probe for two or more supports, the
prototype for a lone support. ``score = direction . v`` per cell, 3 x 3 mean; a support's ``threshold`` is the
midpoint of its mean score on its structure cells and on its ring, its ``contrast`` their difference, and
``z = (score - threshold) / contrast`` (:func:`similarity`), ``E = sigmoid(4 z)``, or (``grey_appearance=True``,
not the default) with the support's grey levels when they are informative ``E = sigmoid(4 (z + z_grey) / 2)``
(:func:`joint_look`). ``choice="weighed"`` (not the default) weighs the two maps by how well each splits the
query by itself (:func:`separation`, :func:`weighed_look`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

import cv2
import numpy as np

from gmiseg_edge.core.transforms import postprocess_logits
from gmiseg_edge.runtime.embedding_probe import fit_direction
from gmiseg_edge.runtime.predictor import EncodedImage
from gmiseg_edge.runtime.support.supports import INTENSITY_BINS, IntensityModel, Support, unit

MIN_PROBE_SUPPORTS = 2  # appearance="auto": fewer supports than this use the prototype
MIN_INTENSITY_CONTRAST = 1.0  # nats: grey levels below this tell the structure from its ring too weakly to vote
SEPARATION = 2.0  # separation(): a high region this many background sds above the background separates fully


@dataclass(frozen=True)
class AppearanceModel:
    """How one support scores embedding cells (step 1): ``z = (direction . v - threshold) / contrast``."""

    direction: np.ndarray  # (256,)
    threshold: float
    contrast: float


def score_map(embedding: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``direction . v`` for each unit cell vector v of a (1, 256, g, g) embedding, 3 x 3 mean (for the
    prototype direction ``fg - bg`` this is cos(v, fg) - cos(v, bg))."""
    features = unit(embedding[0].astype(np.float32), 0)
    score = np.einsum("chw,c->hw", features, direction)
    return cv2.blur(score.astype(np.float32), (3, 3), borderType=cv2.BORDER_REPLICATE)


def unit_cells(embedding: np.ndarray) -> np.ndarray:
    """(g * g, 256) unit vectors of a (1, 256, g, g) embedding, row-major over the grid."""
    return unit(embedding[0].reshape(embedding.shape[1], -1).T.astype(np.float32), 1)


def calibrate(support: Support, direction: np.ndarray) -> AppearanceModel:
    """A support's threshold and contrast under ``direction`` (step 1): the midpoint and the difference of its
    mean score on its structure cells and on its ring."""
    score = score_map(support.encoded.embedding, direction)
    high = float(score[support.structure].mean())
    low = float(score[support.ring].mean())
    return AppearanceModel(direction.astype(np.float32), (high + low) / 2, max(high - low, 1e-3))


class UnitCells(Sequence[np.ndarray]):
    """Each support's unit cell vectors (:func:`unit_cells`), made when asked: the probe reads them support by
    support, so 200 supports never hold 800 MiB of them at once (issue 26)."""

    def __init__(self, supports: Sequence[Support]) -> None:
        self._supports = supports

    def __len__(self) -> int:
        return len(self._supports)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[np.ndarray]: ...
    def __getitem__(self, index):
        if isinstance(index, slice):
            return [unit_cells(s.encoded.embedding) for s in self._supports[index]]
        return unit_cells(self._supports[index].encoded.embedding)


def fit_prototypes(supports: Sequence[Support]) -> list[AppearanceModel]:
    """``appearance="prototype"``: each support scores by its own ``fg - bg``."""
    return [calibrate(s, s.foreground - s.background) for s in supports]


def fit_probe(supports: Sequence[Support]) -> list[AppearanceModel]:
    """``appearance="probe"``: one direction fitted to every support's cells, each support calibrated under it."""
    direction = fit_direction(UnitCells(supports), [s.structure.ravel() for s in supports],
                              [s.background_cells.ravel() for s in supports])
    return [calibrate(s, direction) for s in supports]


def fit_auto(supports: Sequence[Support]) -> list[AppearanceModel]:
    """``appearance="auto"``: the probe from ``MIN_PROBE_SUPPORTS`` supports on, the prototype for fewer (a
    direction fitted to one image's cells follows that image's particulars; measured in BENCHMARKS.md)."""
    return fit_prototypes(supports) if len(supports) < MIN_PROBE_SUPPORTS else fit_probe(supports)


#: the appearance strategies by name: supports -> one model per support
APPEARANCES: dict[str, Callable[[Sequence[Support]], list[AppearanceModel]]] = {
    "auto": fit_auto, "probe": fit_probe, "prototype": fit_prototypes}


def similarity(query: EncodedImage, model: AppearanceModel, input_size: int) -> np.ndarray:
    """z = (score - threshold) / contrast at the query's size: +0.5 is the support's own structure on
    average, -0.5 its surroundings, 0 the threshold."""
    score = score_map(query.embedding, model.direction)
    full = postprocess_logits(score[None], query.prepared, input_size)[0]
    return ((full - model.threshold) / model.contrast).astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function as float32 (inputs clipped to +-60)."""
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))).astype(np.float32)


def grey_similarity(intensity: IntensityModel, query_gray: np.ndarray) -> np.ndarray:
    """The grey-level counterpart of :func:`similarity`: per pixel the support's log-likelihood ratio of the
    query's grey level, smoothed over one embedding cell (``max(H, W) / 64`` px), as ``(ratio - middle) /
    contrast`` (+0.5 the support's structure on average, -0.5 its ring)."""
    bins = np.clip((query_gray * (INTENSITY_BINS / 256)).astype(int), 0, INTENSITY_BINS - 1)
    cell = max(1.0, max(query_gray.shape[:2]) / 64)
    ratio = cv2.GaussianBlur(intensity.ratio[bins].astype(np.float32), (0, 0), cell)
    return ((ratio - intensity.middle) / intensity.contrast).astype(np.float32)


def informative(intensity: IntensityModel | None) -> bool:
    """Whether a support's grey levels tell its structure from its ring (contrast >= MIN_INTENSITY_CONTRAST)."""
    return intensity is not None and intensity.contrast >= MIN_INTENSITY_CONTRAST


def joint_look(z: np.ndarray, intensity: IntensityModel | None, query_gray: np.ndarray | None) -> np.ndarray:
    """The map E is made from (step 3): the embedding's ``z`` averaged with the grey-level z
    (:func:`grey_similarity`) when the support's grey levels are :func:`informative` and the query's pixels are
    known; ``z`` itself otherwise. Both are +0.5 on the support's structure on average, -0.5 on its ring. An
    encoder whose cells do not carry another patient's lesion (mobile_sam on FLAIR tumours: AUC 0.83 of the
    probe's score on the query's tumour cells, lite_medsam 0.997; BENCHMARKS.md, issue 24) still finds it by the
    grey levels it shares with the support's."""
    if query_gray is None or intensity is None or not informative(intensity):
        return z
    return ((z + grey_similarity(intensity, query_gray)) / 2).astype(np.float32)


def likeness(similarity: np.ndarray | None, intensity: IntensityModel | None, query_gray: np.ndarray | None,
             probability: np.ndarray, component: np.ndarray, weights: tuple[float, float] | None = None) -> dict:
    """How much ``probability > 0.5`` (``component`` when that is empty) looks like the support's structure:
    the mean z (embedding), averaged with the grey-level likeness when the support's grey levels are
    :func:`informative`; with ``weights`` (``choice="weighed"``, :func:`weighed_look`) their weighed sum
    ``(s_e z + s_g grey) / max(s_e + s_g, 1)`` instead. Both are +0.5 on the support's own structure on average,
    -0.5 on its surroundings. Returns the :class:`.locate.Candidate` fields ``likeness`` and ``looks``
    (embedding, grey)."""
    region = probability > 0.5
    if not region.any():
        region = component
    embedding = float(similarity[region].mean()) if similarity is not None else float("nan")
    grey = float("nan")
    if intensity is not None and query_gray is not None:
        grey = intensity.likeness(query_gray, region)
    value = (embedding + grey) / 2 if informative(intensity) and np.isfinite(grey) else embedding
    if weights is not None and sum(weights) > 0:
        embedding_weight, grey_weight = weights
        grey_weight = grey_weight if np.isfinite(grey) else 0.0
        value = (embedding_weight * embedding + (grey_weight * grey if grey_weight else 0.0)) \
            / max(embedding_weight + grey_weight, 1.0)
    return {"likeness": value, "looks": (embedding, grey)}


def separation(score: np.ndarray) -> float:
    """How well a z-scale score map splits *the query* into a compact high region and a low background, in
    [0, 1]; nothing measured on the supports enters. *High*: ``score >= min(0, (max + median) / 2)``, at or
    above the support's threshold, or above the midpoint of the query's peak and its typical score when that is
    lower (a shift of every score between two patients' scans does not make an informative map flat). ``core``: the
    connected high region with the largest summed score above the level. The product of its share of that sum
    (one region, not scattered look-alikes), ``max(0, 1 - 2 f)`` with ``f`` the high share of the query (a
    minority: a grey level that half the query shares is spread, not a structure) and ``min(1, d /
    SEPARATION)``, ``d`` the core's mean above the low background's in the background's standard deviations
    (not flat)."""
    level = min(0.0, (float(score.max()) + float(np.median(score))) / 2)
    high = score >= level
    if high.all():
        return 0.0
    count, labels = cv2.connectedComponents(high.astype(np.uint8), connectivity=8)
    above = np.maximum(score - level, 0).astype(np.float64)
    mass = np.bincount(labels.ravel(), weights=above.ravel(), minlength=count)
    mass[0] = -1
    core = labels == int(np.argmax(mass))
    total = float(above.sum())
    if total <= 0:
        return 0.0
    compact = float(mass.max()) / total * max(0.0, 1.0 - 2.0 * float(high.mean()))
    low = score[~high]
    apart = (float(score[core].mean()) - float(low.mean())) / max(float(low.std()), 0.05)
    return float(compact * min(1.0, max(apart, 0.0) / SEPARATION))


def weighed_look(z: np.ndarray, grey: np.ndarray | None) -> tuple[np.ndarray, tuple[float, float]]:
    """``choice="weighed"``: each map's :func:`separation` on the query, ``(s_e, s_g)`` (``grey`` None: grey
    levels not informative on the support, or no query pixels: ``s_g = 0``), and the map E is made from: the
    one that separates better (``z`` on a tie). A candidate's likeness weighs the two by them
    (:func:`likeness`)."""
    embedding = separation(z)
    grey_weight = separation(grey) if grey is not None else 0.0
    look = grey if grey is not None and grey_weight > embedding else z
    return look.astype(np.float32), (embedding, grey_weight)
