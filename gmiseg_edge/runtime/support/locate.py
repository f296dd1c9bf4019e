"""Locating the structure for one support (steps 2-5 of :mod:`.segmenter`): registration and appearance give the
support's candidates (:class:`Candidate`), its presence, match and local agreement (:class:`SupportMatch`).

The location strategies by name (:data:`LOCATES`), each the registration of a support onto the query:
``"deformable"`` (similarity, affine, B-spline; the default), ``"affine"`` (no B-spline stage) and
``"appearance"`` (no registration: the appearance candidate only, the method before anatomy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import cv2
import numpy as np

from gmiseg_edge.runtime.predictor import EncodedImage
from gmiseg_edge.runtime.registration import Registration, match_quality, register
from gmiseg_edge.runtime.support.appearance import (
    AppearanceModel,
    grey_similarity,
    informative,
    joint_look,
    sigmoid,
    similarity,
    weighed_look,
)
from gmiseg_edge.runtime.support.spacing import DEFAULT_SPACING
from gmiseg_edge.runtime.support.supports import IntensityModel, Support, gray

MIN_RADIUS = 3.0  # px: a located region's radius is taken as at least this (see "Sizes" in .segmenter)
AROUND = 4.0  # px: the registration match is measured within twice the structure's radius plus this
MIN_PRESENCE_WEIGHT = 0.05


@dataclass(frozen=True)
class Candidate:
    """One way of locating the structure for one support (step 6): its prior and, once decoded, SAM's answer."""

    kind: str  # "anatomy" (registration-guided) or "appearance" (best look-alike over the whole query)
    prior: np.ndarray
    presence: float  # mean E over the prior's best component
    likeness: float = float("nan")  # how much the decoded mask (p > 0.5) looks like the support's structure
    looks: tuple[float, float] = (float("nan"), float("nan"))  # (embedding z, grey-level) likeness
    probability: np.ndarray | None = None
    sam_probability: np.ndarray | None = None
    iou: float = 0.0
    box: np.ndarray | None = None


@dataclass(frozen=True)
class SupportMatch:
    """What one support says about the query (maps at the query's size)."""

    name: str
    registration: Registration | None  # None: not registered (query given as an EncodedImage)
    anatomy: np.ndarray | None  # warped mask in [0, 1], None for appearance only
    appearance: np.ndarray  # E in [0, 1]
    prior: np.ndarray  # P in [0, 1] of the chosen candidate
    presence: float
    match: float
    weight: float
    probability: np.ndarray | None = None  # p after decoding (None when not decoded)
    sam_probability: np.ndarray | None = None
    iou: float = 0.0
    box: np.ndarray | None = None
    similarity: np.ndarray | None = field(default=None, repr=False)  # z = (score - threshold) / contrast
    chosen: str = "anatomy"  # the candidate taken: "anatomy" or "appearance"
    intensity: IntensityModel | None = field(default=None, repr=False)  # the support's grey levels
    query_gray: np.ndarray | None = field(default=None, repr=False)  # None: query given as an EncodedImage
    candidates: tuple[Candidate, ...] = field(default=(), repr=False)
    agreement: np.ndarray | None = field(default=None, repr=False)  # L (step 5); None when not registered
    spacing: tuple[float, float] = DEFAULT_SPACING  # the query's (row mm, col mm)
    look_weights: tuple[float, float] | None = None  # choice="weighed": (embedding, grey) separation on the query


#: a location strategy: (query pixels, support, query spacing) -> the support registered onto the query, or None
Locate = Callable[[np.ndarray, Support, tuple[float, float]], Registration | None]


def _registered(pixels: np.ndarray, support: Support, spacing: tuple[float, float], *,
                deformable: bool) -> Registration:
    return register(pixels, support.image, deformable=deformable, fixed_spacing=spacing,
                    moving_spacing=support.spacing)


def _unregistered(pixels: np.ndarray, support: Support, spacing: tuple[float, float]) -> None:
    del pixels, support, spacing
    return None


#: the location strategies by name
LOCATES: dict[str, Locate] = {
    "deformable": partial(_registered, deformable=True),
    "affine": partial(_registered, deformable=False),
    "appearance": _unregistered,
}


def local_agreement(query_gray: np.ndarray, warped_gray: np.ndarray) -> np.ndarray:
    """L (step 5): how well a warped support image matches the query around each pixel, in (0, 1]."""
    difference = query_gray.astype(np.float32) - warped_gray.astype(np.float32)
    centre = float(np.median(difference))
    scale = 1.4826 * float(np.median(np.abs(difference - centre))) + 1.0
    agreement = np.exp(-0.5 * ((difference - centre) / scale) ** 2).astype(np.float32)
    cell = max(1.0, max(query_gray.shape[:2]) / 64)
    return np.maximum(cv2.GaussianBlur(agreement, (0, 0), cell), 1e-6)


def best_component(prior: np.ndarray) -> np.ndarray:
    """The connected component of ``prior >= 0.5`` (or ``>= max / 2``) holding the most prior mass."""
    level = 0.5 if prior.max() >= 0.5 else float(prior.max()) / 2
    region = (prior >= level).astype(np.uint8)
    count, labels = cv2.connectedComponents(region, connectivity=8)
    if count <= 2:
        return region.astype(bool)
    mass = np.bincount(labels.ravel(), weights=prior.ravel(), minlength=count)
    mass[0] = -1
    return labels == int(np.argmax(mass))


def reach(core: np.ndarray, spacing: tuple[float, float]) -> tuple[float, np.ndarray]:
    """A located region's equivalent radius in pixels (at least ``MIN_RADIUS``) and every pixel's distance to it.
    ``spacing`` (the image's) is not used: the floor in mm cost same-scan supports (.segmenter, Sizes)."""
    del spacing
    radius = max(MIN_RADIUS, float(np.sqrt(core.sum() / np.pi)))
    return radius, cv2.distanceTransform((~core).astype(np.uint8), cv2.DIST_L2, 3)


def near(distance: np.ndarray, radius: float) -> np.ndarray:
    """``exp(-d^2 / (2 r^2))``: 1 on the region, fading over about its radius (step 3)."""
    return np.exp(-0.5 * (distance / radius) ** 2).astype(np.float32)


def appearance_prior(appearance: np.ndarray, similarity: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """The appearance candidate's prior: E faded (like the anatomy prior) away from the query's best look-alike,
    the connected region of ``E >= 0.5`` with the largest summed z (or the peak of E when none reaches 0.5)."""
    region = (appearance >= 0.5).astype(np.uint8)
    count, labels = cv2.connectedComponents(region, connectivity=8)
    if count <= 1:
        peak = np.unravel_index(int(np.argmax(appearance)), appearance.shape)
        core = np.zeros(appearance.shape, bool)
        core[peak] = True
    else:
        mass = np.bincount(labels.ravel(), weights=np.maximum(similarity, 0).ravel(), minlength=count)
        mass[0] = -1
        core = labels == int(np.argmax(mass))
    radius, distance = reach(core, spacing)
    return (appearance * near(distance, radius)).astype(np.float32)


def locate(query: EncodedImage, pixels: np.ndarray | None, support: Support, model: AppearanceModel,
           input_size: int, spacing: tuple[float, float], locate_by: Locate, *, appearance_candidate: bool,
           appearance_first: bool, grey: bool = False, weighed: bool = False) -> SupportMatch:
    """Steps 2-5 for one support (weight before the appearance-only correction of
    :func:`.fusion.weigh_unregistered`): its candidates' priors, the first one chosen until the choice
    (:mod:`.choice`) weighs the evidence. ``pixels`` None (a query given as an :class:`EncodedImage`) or a
    failed registration leave the appearance candidate only. With a registration, ``appearance_candidate``
    says whether the appearance candidate is made too, ``appearance_first`` whether it comes first. ``grey``: E
    is ``sigmoid(4 (z + z_grey) / 2)`` when the support's grey levels are informative and the query's pixels
    are given (:func:`.appearance.joint_look`); ``weighed`` (``choice="weighed"``, it overrides ``grey``): E is
    ``sigmoid(4 look)`` with ``look`` the embedding's and the grey levels' z weighed by how well each separates
    on the query (:func:`.appearance.weighed_look`), the weights kept as the match's ``look_weights``; the map
    that separates less well also gives an appearance candidate (after the other's) when its separation is above
    0. The match keeps the embedding's ``z`` as its ``similarity``."""
    z = similarity(query, model, input_size)
    query_gray = None if pixels is None else gray(pixels)
    look_weights = None
    looks = []  # maps that give an appearance candidate after E's own
    if weighed:
        grey_z = grey_similarity(support.intensity, query_gray) \
            if query_gray is not None and informative(support.intensity) else None
        look, look_weights = weighed_look(z, grey_z)
        if grey_z is not None and min(look_weights) > 0:
            looks.append(z if look_weights[1] > look_weights[0] else grey_z)
    else:
        look = joint_look(z, support.intensity, query_gray) if grey else z
    appearance = sigmoid(4 * look)
    registration = anatomy = None
    if pixels is not None:
        registration = locate_by(pixels, support, spacing)
        if registration is not None and registration.ok:
            anatomy = np.clip(registration.warp(support.mask.astype(np.float32)), 0, 1)
            if anatomy.max() < 0.5:  # warped out of the query: treat as failed
                anatomy = None
    look_alike = appearance_prior(appearance, look, spacing)
    candidates = []
    agreement = None
    if anatomy is None:
        match = 0.0
    else:
        core = anatomy >= 0.5
        radius, distance = reach(core, spacing)
        prior = ((anatomy + appearance * near(distance, radius)) / 2).astype(np.float32)
        candidates.append(Candidate("anatomy", prior, float(appearance[best_component(prior)].mean())))
        around = distance <= 2 * radius + AROUND
        assert registration is not None
        warped = registration.warp(gray(support.image))
        match = match_quality(pixels, warped, around)
        agreement = local_agreement(query_gray, warped)
    if appearance_candidate or anatomy is None:
        candidates.append(Candidate("appearance", look_alike, float(appearance[best_component(look_alike)].mean())))
        for other in looks:
            prior = appearance_prior(sigmoid(4 * other), other, spacing)
            candidates.append(Candidate("appearance", prior, float(appearance[best_component(prior)].mean())))
    if appearance_first and anatomy is not None:
        candidates.reverse()
    first = candidates[0]
    return SupportMatch(support.name, registration, anatomy, appearance, first.prior, first.presence,
                        match, match * max(first.presence, MIN_PRESENCE_WEIGHT), similarity=z,
                        chosen=first.kind, candidates=tuple(candidates), intensity=support.intensity,
                        query_gray=query_gray, agreement=agreement, spacing=spacing, look_weights=look_weights)
