"""Segment a query image from a few labelled examples (a support set), with no re-training (DESIGN §7).

The hard part is *locating* the structure in the query. An embedding prototype alone locks onto look-alike
neighbours (liver for spleen, the left kidney for the right); registration alone carries a *lesion* to where it
was in the support's patient, not where it is in the query's. Each support therefore gives two candidate
priors, anatomy-guided and appearance-only, both decoded by SAM when needed, and keeps the anatomy one unless
evidence computed on the query says it is wrong and the other is right. The algorithm, exactly (``g`` = 64 the
embedding grid; maps are at the query's size).

**Sizes.** Every support and query carries its pixel spacing in mm (``spacing=``; 1 mm per pixel when not given,
:mod:`.support.spacing`). Registration runs in the physical frame, so the one size that relates a support to the
query, the warp, is in mm. The sizes within one image stay relative to it: the anatomy prior's reach is the
warped structure's own radius (measured on the query), with a floor of ``MIN_RADIUS`` = 3 px, and the match
region's margin is ``AROUND`` = 4 px. Measured with both in mm (3 mm and 4 mm), the same-scan table fell from
0.815 to 0.750 (abdomen rows, whose registration did not change: kidney_left 0.910 -> 0.414, spleen 0.746 ->
0.660; at 3 mm per pixel both become about one pixel), so they stay in pixels. Sizes of the *encoder's* view
stay in embedding cells (the ring of 4 cells, the 3 x 3 score mean, the agreement's smoothing over one cell): a
cell is a fixed fraction of the field of view the encoder sees, whatever the pixel size, and a ring narrower
than a few cells holds no cell of its own.

1. **Support** (``add_support``): the image is encoded through the predictor's embedding cache. Its mask is
   mapped to the g x g grid of the padded S x S frame (area weights): its *structure* cells (weight >= 0.5, or
   the heaviest when none reaches it), its *ring* (valid cells with weight 0 within 4 cells of the mask) and its
   *background* (every valid cell with weight 0). Grey levels (:class:`IntensityModel`): 32-bin histograms (one
   count added per bin) of the mask and of its pixel ring (the mask dilated by 4 cells' width, less the mask);
   per bin ``log(p_mask / p_ring)``; its ``middle`` and ``contrast`` the midpoint and difference of the mean
   ratio over the mask and over the ring.
   **Appearance direction** (refitted when a support is added): ``appearance="probe"``: one L2-regularised
   logistic regression over the unit embedding vectors of *all* supports' cells, structure cells against
   background cells (:func:`.embedding_probe.fit_direction`); ``appearance="prototype"`` (the method before it):
   per support ``fg - bg``, the weighted mean unit vectors of its structure cells and of its ring.
   ``appearance="auto"`` (the default): the probe for two or more supports, the prototype for a lone support
   (a direction fitted to one image's cells follows that image's particulars; measured in BENCHMARKS.md).
   ``score = direction . v`` per cell, 3 x 3 mean; the support's ``threshold`` is the midpoint of its mean
   score on its structure cells and on its ring, its ``contrast`` the difference of the two. The probe puts its
   weight on the features that tell the structure from its surroundings; a prototype weighs every feature the
   same, and the few a lesion shares with another patient's drown among the rest.
2. **Anatomy**: the support image is registered to the query (:mod:`.registration`: similarity, affine,
   B-spline, Mattes mutual information; in mm, each image at its own spacing) and its mask warped (linear):
   ``A`` in [0, 1]. A failed registration
   (or a query given only as an :class:`EncodedImage`) leaves this support with appearance only.
3. **Appearance**: ``z = (score - threshold) / contrast`` upsampled to the query's size (+0.5 is the
   support's own structure on average, -0.5 its ring) and ``E = sigmoid(4 z)``. ``near = exp(-d^2 / (2
   r^2))`` with ``d`` the distance to ``A >= 0.5`` and ``r`` the warped structure's equivalent radius (at
   least ``MIN_RADIUS`` = 3 px).
4. **Candidates** of the support. *Anatomy*: ``P = (A + E * near) / 2``, so a look-alike far from the
   anatomical prior is suppressed and appearance sharpens the warped mask near it. *Appearance*: the
   connected region of ``E >= 0.5`` over the whole query with the largest sum of ``z`` (the peak of ``E`` when
   none), ``P = E * near`` with ``near`` now around that region. Without anatomy only the appearance one.
5. **Presence** of the support: the mean of ``E`` over the first candidate's best prior component.
   **Weight**: ``match * max(presence, 0.05)``, ``match`` the normalised mutual information of the query and
   the warped support image within ``2 r + AROUND`` (4 px) of the structure
   (:func:`.registration.match_quality`; half the smallest registered support's for an appearance-only
   support). **Local agreement** of a registered support (locally weighted voting, as in multi-atlas
   segmentation): with ``d`` the query's grey levels minus the warped support image's,
   ``L = exp(-((d - median d) / s)^2 / 2)``, ``s = 1.4826 MAD(d) + 1`` (a robust spread of ``d``, in grey levels),
   smoothed by a Gaussian of one embedding cell (``max(H, W) / 64`` px): near 1 where the support's warped
   anatomy matches the query, near 0 where it does not.
6. **Decode** a candidate: the connected component of ``P >= 0.5`` holding most prior mass (or of
   ``P >= max(P) / 2`` when nothing reaches 0.5) gives the box (its extent) and a positive point (its most
   interior pixel); for the anatomy candidate a negative point goes on the strongest look-alike outside the
   near region (``E * (1 - near) >= 0.5``) when there is one; with ``mask_prompt=True`` the prior goes in as
   ``mask_input`` (logits ``MASK_LOGIT * (2 P - 1)`` on the 256 x 256 low-res padded frame). The single-mask
   output is taken. **Fuse SAM and prior**: ``p = (sigmoid(SAM logits) + P) / 2``: a pixel the prior is sure
   of (0 or 1) keeps the prior's answer, SAM decides where the prior is unsure (the warped edge).
7. **Choose** (``choice="auto"``): the *likeness* of a decoded candidate is the mean ``z`` over ``p > 0.5``,
   averaged with the grey-level likeness there (``(mean ratio - middle) / contrast``, same scale) when the
   support's grey-level contrast is at least ``MIN_INTENSITY_CONTRAST`` (1 nat; below it grey levels hardly
   tell the structure from its ring). The anatomy candidate is decoded first; only when it clearly does not
   look like the structure - its mean ``z`` *and* (when informative) its grey-level likeness are below
   ``UNLIKE`` (0: no more like the structure than like its surroundings) - is the appearance candidate
   decoded, and it is taken when its likeness exceeds the anatomy one's by ``MARGIN`` (0.25). There is no
   absolute bar on the appearance candidate: another patient's lesion, found right, scores ``z`` near 0 (the
   support's own contrast is measured on the cells the probe was fitted to, so it is inflated). A look-alike
   organ does not displace an anatomy candidate that looks right (right vs left kidney); a lesion registered
   onto healthy tissue does. The support's presence and weight stay the
   first candidate's: the appearance candidate is the best of all regions, so its own presence is biased
   high. ``choice="anatomy"`` / ``"appearance"`` always take that candidate (for measurement; ``"appearance"``
   with its own presence and weight).
8. **Combine** supports, pixel by pixel: a support's vote is ``w L`` (``L`` its local agreement when it took
   its anatomy candidate, 1 otherwise: an appearance candidate is not where the registration put the support);
   ``probability = sum(w L p) / sum(w L)``, mask ``probability > 0.5``; ``prior`` the same mean of the chosen
   ``P``; ``uncertainty`` the same weighted standard deviation of the supports' ``p`` (their disagreement,
   0..0.5). A support whose warped mask is too small or misplaced then gives way, where it disagrees, to the
   supports that match there. ``score`` the weighted mean of SAM's predicted IoU. With ``require_presence=True``
   the mask is empty unless the weighted mean presence reaches 0.5 (``probability`` and ``uncertainty`` are
   still given).
9. **Searched** (:meth:`SupportSetSegmenter.segment_with_search`, for volumes): the same decoding combined again
   with each switched support taking its appearance candidate's presence and weight. A volume falls back to
   these answers only when step 8's find the structure in no slice (:mod:`.support_volume`).

Measured on the sample data (benchmarks/support_set.py, same-patient and cross-patient supports) against the
prior alone and SAM alone, and against ``choice="anatomy"``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import overload

import cv2
import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.graph_io import LOW_RES
from gmiseg_edge.core.prompts import make_prompt
from gmiseg_edge.core.selection import spread
from gmiseg_edge.core.transforms import ImageGeometry, postprocess_logits
from gmiseg_edge.data.intensity import Window
from gmiseg_edge.runtime.embedding_probe import fit_direction
from gmiseg_edge.runtime.images import check_image
from gmiseg_edge.runtime.predictor import EncodedImage, Predictor
from gmiseg_edge.runtime.registration import Registration, match_quality, register
from gmiseg_edge.runtime.support.modality import check_same_kind, intensity_kind, stated_kind
from gmiseg_edge.runtime.support.selection import image_descriptor, most_alike
from gmiseg_edge.runtime.support.spacing import DEFAULT_SPACING, Spacing, pixel_spacing, slice_spacing

EMPTY_LOGIT = -20.0
RING_CELLS = 4
MASK_LOGIT = 8.0
MIN_RADIUS = 3.0  # px: a located region's radius is taken as at least this (see "Sizes" in the module docstring)
AROUND = 4.0  # px: the registration match is measured within twice the structure's radius plus this
MIN_PRESENCE_WEIGHT = 0.05
FUSIONS = ("fused", "prior", "sam")
INTENSITY_BINS = 32
MIN_INTENSITY_CONTRAST = 1.0  # nats: grey levels below this tell the structure from its ring too weakly to vote
CHOICES = ("auto", "local", "anatomy", "appearance")
LOCAL_CONTRAST = 0.5  # choice="local": z over the anatomy candidate minus z over its ring on the query, at least
# half the support's own structure-vs-ring difference (1 in z units), keeps the anatomy candidate
UNLIKE = 0.0  # the anatomy candidate's mask looks no more like the structure than like its surroundings ...
MARGIN = 0.25  # ... and the appearance candidate's looks more like it by a clear margin: take the appearance one
APPEARANCES = ("auto", "probe", "prototype")
MIN_PROBE_SUPPORTS = 2  # appearance="auto": fewer supports than this use the prototype


@dataclass(frozen=True)
class IntensityModel:
    """A support's grey levels (step 1): log-likelihood ratio of structure vs ring per 8-level bin."""

    ratio: np.ndarray  # (32,) log(p_structure / p_ring), histograms with one count added per bin
    middle: float  # midpoint of the mean ratio over the structure and over the ring
    contrast: float  # their difference (the symmetric Kullback-Leibler divergence of the two histograms)

    @classmethod
    def of(cls, pixels: np.ndarray, mask: np.ndarray, ring_width: float) -> IntensityModel | None:
        gray = _gray(pixels)
        size = 2 * max(1, round(ring_width)) + 1
        ring = (cv2.dilate(mask.astype(np.uint8), np.ones((size, size), np.uint8)) > 0) & ~mask
        if not ring.any():
            return None
        edges = np.linspace(0, 256, INTENSITY_BINS + 1)
        inside = np.histogram(gray[mask], edges)[0] + 1.0
        outside = np.histogram(gray[ring], edges)[0] + 1.0
        ratio = np.log(inside / inside.sum()) - np.log(outside / outside.sum())
        model = cls(ratio.astype(np.float32), 0.0, 1.0)
        high, low = model.mean_ratio(gray[mask]), model.mean_ratio(gray[ring])
        return cls(model.ratio, (high + low) / 2, max(high - low, 1e-3))

    def mean_ratio(self, values: np.ndarray) -> float:
        bins = np.clip((values * (INTENSITY_BINS / 256)).astype(int), 0, INTENSITY_BINS - 1)
        return float(self.ratio[bins].mean())

    def likeness(self, gray: np.ndarray, region: np.ndarray) -> float:
        """(mean ratio over ``region`` - middle) / contrast: +0.5 the structure's own, -0.5 its ring's."""
        return (self.mean_ratio(gray[region]) - self.middle) / self.contrast


@dataclass(frozen=True)
class Support:
    """One example: its pixels and mask, encoded image, unit prototypes (256,) and its cells on the grid."""

    name: str
    image: np.ndarray  # uint8 (H, W) or (H, W, 3)
    mask: np.ndarray  # bool (H, W)
    encoded: EncodedImage
    foreground: np.ndarray  # unit mean embedding of the structure cells
    background: np.ndarray  # ... and of the ring
    structure: np.ndarray  # bool (g, g): the structure's cells
    ring: np.ndarray  # bool (g, g): cells around it
    background_cells: np.ndarray  # bool (g, g): every valid cell outside the structure
    intensity: IntensityModel | None = None
    spacing: tuple[float, float] = DEFAULT_SPACING  # (row mm, col mm) of the image's pixels
    kind: str | None = None  # "CT", "not CT" or None (unknown): :mod:`.support.modality`
    descriptor: np.ndarray | None = field(default=None, repr=False)  # whole-image likeness (.support.selection)


@dataclass(frozen=True)
class AppearanceModel:
    """How one support scores embedding cells (step 1): ``z = (direction . v - threshold) / contrast``."""

    direction: np.ndarray  # (256,)
    threshold: float
    contrast: float


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


def grid_weights(mask: np.ndarray, prepared: ImageGeometry, input_size: int, grid: int) -> np.ndarray:
    """A (H, W) map as (grid, grid) area weights over the padded S x S model frame."""
    new_h, new_w = prepared.resized_size
    resized = cv2.resize(mask.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_AREA)
    padded = np.zeros((input_size, input_size), np.float32)
    padded[:new_h, :new_w] = resized
    return cv2.resize(padded, (grid, grid), interpolation=cv2.INTER_AREA)


def _unit(vectors: np.ndarray, axis: int) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=axis, keepdims=True), 1e-12)


def _prototype(embedding: np.ndarray, weights: np.ndarray) -> np.ndarray:
    total = float(weights.sum())
    if total <= 0:
        return np.zeros(embedding.shape[1], np.float32)
    return _unit(np.einsum("chw,hw->c", embedding[0].astype(np.float64), weights) / total, 0).astype(np.float32)


def score_map(embedding: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``direction . v`` for each unit cell vector v of a (1, 256, g, g) embedding, 3 x 3 mean (for the
    prototype direction ``fg - bg`` this is cos(v, fg) - cos(v, bg))."""
    features = _unit(embedding[0].astype(np.float32), 0)
    score = np.einsum("chw,c->hw", features, direction)
    return cv2.blur(score.astype(np.float32), (3, 3), borderType=cv2.BORDER_REPLICATE)


def _unit_cells(embedding: np.ndarray) -> np.ndarray:
    """(g * g, 256) unit vectors of a (1, 256, g, g) embedding, row-major over the grid."""
    return _unit(embedding[0].reshape(embedding.shape[1], -1).T.astype(np.float32), 1)


def calibrate(support: Support, direction: np.ndarray) -> AppearanceModel:
    """A support's threshold and contrast under ``direction`` (step 1): the midpoint and the difference of its
    mean score on its structure cells and on its ring."""
    score = score_map(support.encoded.embedding, direction)
    high = float(score[support.structure].mean())
    low = float(score[support.ring].mean())
    return AppearanceModel(direction.astype(np.float32), (high + low) / 2, max(high - low, 1e-3))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))).astype(np.float32)


def _best_component(prior: np.ndarray) -> np.ndarray:
    """The connected component of ``prior >= 0.5`` (or ``>= max / 2``) holding the most prior mass."""
    level = 0.5 if prior.max() >= 0.5 else float(prior.max()) / 2
    region = (prior >= level).astype(np.uint8)
    count, labels = cv2.connectedComponents(region, connectivity=8)
    if count <= 2:
        return region.astype(bool)
    mass = np.bincount(labels.ravel(), weights=prior.ravel(), minlength=count)
    mass[0] = -1
    return labels == int(np.argmax(mass))


def _interior_point(region: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of ``region`` farthest from its border."""
    distance = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(col), int(row)


class SupportSetSegmenter:
    """Add (image, mask) supports, then ``segment`` queries; thread-safe, supports encoded once (cached).

    ``fusion``: ``"fused"`` (default, step 6), ``"prior"`` (the prior alone, no decoder) or ``"sam"`` (SAM's
    probabilities alone); ``mask_prompt`` gives the decoder the prior as ``mask_input``; ``deformable`` adds
    the B-spline stage; ``register_supports=False`` is appearance only (the method before anatomy);
    ``choice`` (step 7): ``"auto"``, or always the ``"anatomy"`` or the ``"appearance"`` candidate (with its
    own presence and weight); ``appearance`` (step 1): ``"auto"`` (the probe from two supports on, the prototype
    for one), ``"probe"`` or ``"prototype"``.
    """

    def __init__(self, predictor: Predictor, window: Window | None = None, *, fusion: str = "fused",
                 mask_prompt: bool = True, deformable: bool = True, register_supports: bool = True,
                 refine: bool = False, choice: str = "auto", appearance: str = "auto",
                 select: int | None = None) -> None:
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
        if appearance not in APPEARANCES:
            raise ValueError(f"appearance must be one of {APPEARANCES}, got {appearance!r}")
        if select is not None and select < 1:
            raise ValueError(f"select must be a positive number of supports or None, got {select!r}")
        self.select = select
        self.choice = choice
        self.appearance_method = appearance
        self.predictor = predictor
        self.window = window
        self.fusion = fusion
        self.mask_prompt = mask_prompt
        self.deformable = deformable
        self.register_supports = register_supports
        self.refine = refine  # kept for callers of the earlier API; the prior already prompts the decoder
        self._supports: list[Support] = []
        self._models: list[AppearanceModel] | None = None  # one per support, refitted when a support is added
        self._dims: int | None = None
        self._lock = threading.Lock()

    @property
    def supports(self) -> list[Support]:
        with self._lock:
            return list(self._supports)

    def _valid(self, prepared: ImageGeometry, grid: int) -> np.ndarray:
        inside = np.ones(prepared.original_size, bool)
        return grid_weights(inside, prepared, self.predictor.input_size, grid) >= 0.5

    # -- supports ---------------------------------------------------------------------------------------------

    def _claim_dims(self, dims: int, name: str) -> None:
        with self._lock:
            if self._dims is not None and self._dims != dims:
                have = "2D images" if self._dims == 2 else "3D volumes"
                raise InputError(f"{name}: a {dims}D support cannot join a support set of {have}; "
                                 "give all supports as 2D slices or all as 3D volumes")
            self._dims = dims

    def add_support(self, image: np.ndarray, mask: np.ndarray, name: str = "support", *, axis: int = 0,
                    max_slices: int = 8, spacing: Spacing = None, modality: str | None = None,
                    ) -> list[Support] | Support:
        """Add a 2D support (image (H, W) or (H, W, 3) with mask (H, W)), or a 3D one (image and mask (D, H, W),
        slices along ``axis``): its labelled slices, at most ``max_slices`` spread over the label's extent, become
        2D supports named ``"<name> slice <i>"``. Returns the support (the list of them for a volume).

        ``spacing``: the pixel size in mm, (row, col) or one number for a 2D image, one number per array axis
        for a volume. Not given: 1 mm per pixel (:data:`.support.spacing.DEFAULT_SPACING`), right when the
        supports and the queries share one pixel size; give it when they do not (registration and every size
        rule work in mm). Supports and queries must show the body the same way round: slice volumes read from
        files after :func:`gmiseg_edge.data.orient.to_lps` (two scans can be stored turned against each other).

        ``modality``: ``"CT"``, ``"MR"``, ... when the image is given as uint8; raw intensities say it themselves
        (Hounsfield units down to air are CT, :mod:`.support.modality`). A support of another modality than the
        supports before it, or than a query, is an :class:`InputError`."""
        mask = np.asarray(mask)
        image_shape = np.shape(image)
        kind = stated_kind(modality) or intensity_kind(np.asarray(image))
        check_same_kind(kind, [(s.name, s.kind) for s in self.supports], name=f"support {name}")
        if mask.ndim == 3:
            if image_shape != mask.shape:
                raise InputError(f"{name}: 3D mask of shape {mask.shape} differs from its image's {image_shape}")
            labelled = [i for i in range(mask.shape[axis]) if np.take(mask, i, axis=axis).any()]
            if not labelled:
                raise InputError(f"{name} mask is empty: a support needs at least one foreground voxel")
            step = slice_spacing(spacing, axis, name=name)
            self._claim_dims(3, name)
            labelled = spread(labelled, max_slices)
            return [self._add_2d(np.take(image, i, axis=axis), np.take(mask, i, axis=axis), f"{name} slice {i}",
                                 step, kind) for i in labelled]
        if mask.ndim != 2:
            raise InputError(f"{name} mask: expected (H, W) or a volume (D, H, W), got shape {mask.shape}")
        pixels = check_image(image, self.window, name=f"{name} image")
        if mask.shape != pixels.shape[:2]:
            raise InputError(f"{name} mask: shape {mask.shape} differs from its image's {pixels.shape[:2]}")
        if not mask.any():
            raise InputError(f"{name} mask is empty: a support needs at least one foreground pixel")
        if np.all(mask):
            raise InputError(f"{name} mask covers the whole image: a support needs background around its structure")
        step = pixel_spacing(spacing, name=name)
        self._claim_dims(2, name)
        return self._add_2d(pixels, mask, name, step, kind)

    def _add_2d(self, image: np.ndarray, mask: np.ndarray, name: str,
                spacing: tuple[float, float] = DEFAULT_SPACING, kind: str | None = None) -> Support:
        pixels = check_image(image, self.window, name=f"{name} image")
        encoded = self.predictor.encode(pixels)
        grid = encoded.embedding.shape[-1]
        weights = grid_weights(mask != 0, encoded.prepared, self.predictor.input_size, grid)
        valid = self._valid(encoded.prepared, grid)
        structure = weights >= min(0.5, float(weights.max()))
        outside = valid & (weights == 0)
        if not outside.any():
            raise InputError(f"{name} mask covers the whole image: a support needs background around its structure")
        near = cv2.dilate((weights > 0).astype(np.uint8), np.ones((2 * RING_CELLS + 1,) * 2, np.uint8)) > 0
        ring = outside & near if (outside & near).any() else outside
        foreground = _prototype(encoded.embedding, weights)
        background = _prototype(encoded.embedding, ring.astype(np.float32))
        cell = max(mask.shape) / grid
        support = Support(name, pixels, mask != 0, encoded, foreground, background, structure, ring, outside,
                          IntensityModel.of(pixels, mask != 0, RING_CELLS * cell), spacing, kind,
                          image_descriptor(encoded.embedding, valid))
        with self._lock:
            self._supports.append(support)
            self._models = None
        return support

    def appearance_models(self) -> list[AppearanceModel]:
        """One :class:`AppearanceModel` per support (step 1), fitted once per support set."""
        with self._lock:
            return list(self._fitted())

    def _fitted(self) -> list[AppearanceModel]:
        """The current supports' models, fitted after a support was added (the caller holds the lock)."""
        if self._models is None:
            self._models = _fit_models(self._supports, self.appearance_method)
        return self._models

    def _model(self, support: Support) -> AppearanceModel:
        """``support``'s model; supports and models are read under one lock, so a support added meanwhile by
        another thread cannot pair a support with another's model."""
        with self._lock:
            for candidate, model in zip(self._supports, self._fitted(), strict=True):
                if candidate is support:
                    return model
        return _fit_models([support], self.appearance_method)[0]  # not of this set: on its own

    # -- one support on the query -----------------------------------------------------------------------------

    def similarity(self, query: EncodedImage, support: Support) -> np.ndarray:
        """z = (score - threshold) / contrast at the query's size: +0.5 is the support's own structure on
        average, -0.5 its surroundings, 0 the threshold."""
        model = self._model(support)
        score = score_map(query.embedding, model.direction)
        full = postprocess_logits(score[None], query.prepared, self.predictor.input_size)[0]
        return ((full - model.threshold) / model.contrast).astype(np.float32)

    def appearance(self, query: EncodedImage, support: Support) -> np.ndarray:
        """E (step 3) at the query's size."""
        return _sigmoid(4 * self.similarity(query, support))

    def match(self, query: EncodedImage, pixels: np.ndarray | None, support: Support,
              spacing: tuple[float, float] = DEFAULT_SPACING) -> SupportMatch:
        """Steps 2-5 for one support (weight before the appearance-only correction of ``segment``): both
        candidates' priors; the anatomy candidate is the chosen one until :meth:`decode` weighs the evidence."""
        similarity = self.similarity(query, support)
        appearance = _sigmoid(4 * similarity)
        registration = anatomy = None
        if pixels is not None and self.register_supports:
            registration = register(pixels, support.image, deformable=self.deformable, fixed_spacing=spacing,
                                    moving_spacing=support.spacing)
            if registration.ok:
                anatomy = np.clip(registration.warp(support.mask.astype(np.float32)), 0, 1)
                if anatomy.max() < 0.5:  # warped out of the query: treat as failed
                    anatomy = None
        look_alike = _appearance_prior(appearance, similarity, spacing)
        candidates = []
        agreement = None
        query_gray = None if pixels is None else _gray(pixels)
        if anatomy is None:
            match = 0.0
        else:
            core = anatomy >= 0.5
            radius, distance = _reach(core, spacing)
            near = _near(distance, radius)
            prior = ((anatomy + appearance * near) / 2).astype(np.float32)
            candidates.append(Candidate("anatomy", prior, float(appearance[_best_component(prior)].mean())))
            around = distance <= 2 * radius + AROUND
            assert registration is not None
            warped = registration.warp(_gray(support.image))
            match = match_quality(pixels, warped, around)
            agreement = local_agreement(query_gray, warped)
        if self.choice != "anatomy" or anatomy is None:
            candidates.append(Candidate("appearance", look_alike,
                                        float(appearance[_best_component(look_alike)].mean())))
        if self.choice == "appearance" and anatomy is not None:
            candidates.reverse()
        first = candidates[0]
        return SupportMatch(support.name, registration, anatomy, appearance, first.prior, first.presence,
                            match, match * max(first.presence, MIN_PRESENCE_WEIGHT), similarity=similarity,
                            chosen=first.kind, candidates=tuple(candidates), intensity=support.intensity,
                            query_gray=query_gray, agreement=agreement, spacing=spacing)

    def _decode_candidate(self, query: EncodedImage, match: SupportMatch, candidate: Candidate) -> Candidate:
        """Step 6-7 for one candidate: prompts from its prior, SAM's output, fused with the prior."""
        prior = candidate.prior
        component = _best_component(prior)
        rows, cols = np.nonzero(component)
        height, width = query.size
        box = np.array([cols.min(), rows.min(), min(cols.max() + 1, width), min(rows.max() + 1, height)], np.float32)
        points = [_interior_point(component)]
        labels = [1]
        if candidate.kind == "anatomy" and match.anatomy is not None:
            core = match.anatomy >= 0.5
            radius, distance = _reach(core, match.spacing)
            lookalike = match.appearance * (distance > 2 * radius)
            if lookalike.max() >= 0.5:
                row, col = np.unravel_index(int(np.argmax(lookalike)), lookalike.shape)
                points.append((int(col), int(row)))
                labels.append(0)
        mask_input = None
        if self.mask_prompt:
            low = grid_weights(prior, query.prepared, self.predictor.input_size, LOW_RES)
            mask_input = (MASK_LOGIT * (2 * low - 1)).astype(np.float32)
        prompt = make_prompt(np.asarray(points, np.float32), np.asarray(labels, np.float32), box, mask_input,
                             image_size=query.size)
        if self.fusion == "prior":  # no decoder
            return replace(candidate, **_likeness(match, prior, component), probability=prior,
                           box=box)
        low_res, iou = self.predictor.decode(query, prompt)
        sam = _sigmoid(postprocess_logits(low_res[:1], query.prepared, self.predictor.input_size)[0])
        probability = sam if self.fusion == "sam" else (sam + prior) / 2
        return replace(candidate, **_likeness(match, probability, component),
                       probability=probability.astype(np.float32), sam_probability=sam, iou=float(iou[0]), box=box)

    def decode(self, query: EncodedImage, match: SupportMatch) -> SupportMatch:
        """Step 6-8 for one support: decode its first candidate; decode the appearance candidate too only when
        the first does not look like the support's structure, and take it when it clearly does (step 8)."""
        first = self._decode_candidate(query, match, match.candidates[0])
        decoded = [first]
        chosen = first
        if (self.choice in ("auto", "local") and first.kind == "anatomy" and len(match.candidates) > 1
                and _looks_unlike(match, first)
                and not (self.choice == "local" and _stands_out(match, first))):
            other = self._decode_candidate(query, match, match.candidates[1])
            decoded.append(other)
            if other.likeness - first.likeness >= MARGIN:
                chosen = other
        decoded += list(match.candidates[len(decoded):])
        # presence and weight stay the first candidate's: the appearance candidate is the best of all regions,
        # so its presence is biased high (it would outvote supports whose anatomy holds, and find look-alikes
        # on queries without the structure)
        return replace(match, prior=chosen.prior, probability=chosen.probability,
                       sam_probability=chosen.sam_probability, iou=chosen.iou, box=chosen.box, chosen=chosen.kind,
                       candidates=tuple(decoded))

    # -- the query --------------------------------------------------------------------------------------------

    def segment(self, query_image: np.ndarray | EncodedImage, require_presence: bool = False, *,
                spacing: Spacing = None, modality: str | None = None) -> SupportPrediction:
        """Segment the query with every support (the module's algorithm). ``spacing``: the query's pixel size in
        mm ((row, col) or one number); not given: 1 mm per pixel, as for supports (:meth:`add_support`).
        ``modality``: as for supports; a query of another modality than the supports is an :class:`InputError`."""
        query, matches = self._answer(query_image, spacing, modality)
        return _combine(query.size, matches, require_presence)

    def segment_with_search(self, query_image: np.ndarray | EncodedImage, *, spacing: Spacing = None,
                            modality: str | None = None) -> tuple[SupportPrediction, SupportPrediction]:
        """Two answers from one decoding, both with ``require_presence=True``: ``segment``'s, and the *searched*
        one, where a support that took its appearance candidate also takes that candidate's presence and weight
        (step 9). A volume uses the searched answers only when ``segment``'s find the structure in no slice
        (:mod:`.support_volume`): one slice's look-alike must not outvote the anatomy, but a structure the
        anatomy finds nowhere (a lesion that sits elsewhere in another patient) is then searched for. When no
        support switched, both are the same object."""
        query, matches = self._answer(query_image, spacing, modality)
        anchored = _combine(query.size, matches, True)
        searched = [_searched(m) for m in matches]
        if all(a is b for a, b in zip(matches, searched, strict=True)):  # no support switched: the same answer
            return anchored, anchored
        return anchored, _combine(query.size, searched, True)

    def _answer(self, query_image: np.ndarray | EncodedImage,
                spacing: Spacing = None, modality: str | None = None) -> tuple[EncodedImage, list[SupportMatch]]:
        """Steps 1-7 for every support: the encoded query and each support's decoded match, weighted."""
        supports = self.supports
        if not supports:
            raise InputError("no supports: call add_support(image, mask) first")
        step = pixel_spacing(spacing, name="query image")
        if not isinstance(query_image, EncodedImage):
            kind = stated_kind(modality) or intensity_kind(np.asarray(query_image))
            check_same_kind(kind, [(s.name, s.kind) for s in supports])
        if isinstance(query_image, EncodedImage):
            pixels = None  # no pixels to register: appearance only (stated fallback)
            query = query_image
        else:
            pixels = check_image(query_image, self.window, name="query image")
            query = self.predictor.encode(pixels)
        if self.select is not None and len(supports) > self.select:
            descriptor = image_descriptor(query.embedding, self._valid(query.prepared, query.embedding.shape[-1]))
            supports = [supports[i] for i in most_alike(descriptor, [s.descriptor for s in supports], self.select)]
        matches = [self.decode(query, self.match(query, pixels, support, step)) for support in supports]
        registered = [m.match for m in matches if m.anatomy is not None]
        fallback = 0.5 * min(registered) if registered else 1.0
        return query, [m if m.anatomy is not None else
                       replace(m, match=fallback, weight=fallback * max(m.presence, MIN_PRESENCE_WEIGHT))
                       for m in matches]


def local_agreement(query_gray: np.ndarray, warped_gray: np.ndarray) -> np.ndarray:
    """L (step 5): how well a warped support image matches the query around each pixel, in (0, 1]."""
    difference = query_gray.astype(np.float32) - warped_gray.astype(np.float32)
    centre = float(np.median(difference))
    scale = 1.4826 * float(np.median(np.abs(difference - centre))) + 1.0
    agreement = np.exp(-0.5 * ((difference - centre) / scale) ** 2).astype(np.float32)
    cell = max(1.0, max(query_gray.shape[:2]) / 64)
    return np.maximum(cv2.GaussianBlur(agreement, (0, 0), cell), 1e-6)


def _votes(weights: np.ndarray, matches: list[SupportMatch], size: tuple[int, int]) -> np.ndarray:
    """Each support's per-pixel vote ``w L`` (step 8), normalised over the supports at every pixel."""
    votes = np.stack([w * (m.agreement if m.chosen == "anatomy" and m.agreement is not None
                           else np.ones(size, np.float32)) for w, m in zip(weights, matches, strict=True)])
    return (votes / votes.sum(axis=0)).astype(np.float32)


def _combine(size: tuple[int, int], matches: list[SupportMatch], require_presence: bool) -> SupportPrediction:
    """Step 8: the supports' answers on a query of ``size`` (H, W) combined by weight and local agreement."""
    weights = np.asarray([max(m.weight, 1e-6) for m in matches], np.float64)
    weights /= weights.sum()
    votes = _votes(weights, matches, size)
    prior = (votes * np.stack([m.prior for m in matches])).sum(axis=0).astype(np.float32)
    presence = float(np.dot(weights, [m.presence for m in matches]))
    present = presence >= 0.5
    stack = np.stack([m.probability for m in matches])
    probability = (votes * stack).sum(axis=0).astype(np.float32)
    spread = np.sqrt((votes * (stack - probability) ** 2).sum(axis=0)).astype(np.float32)
    if require_presence and not present:  # an empty mask; the probability and disagreement stay to be seen
        return SupportPrediction(np.zeros(size, bool), probability, prior, spread,
                                 weights.astype(np.float32), presence, False, 0.0, tuple(matches))
    score = float(np.dot(weights, [m.iou for m in matches]))
    return SupportPrediction(probability > 0.5, probability, prior, spread, weights.astype(np.float32),
                             presence, present, score, tuple(matches))


def _searched(match: SupportMatch) -> SupportMatch:
    """``match`` with the presence and weight of the candidate it took (step 9): a switched support's appearance
    candidate; unchanged for every other support."""
    if match.chosen != "appearance" or match.anatomy is None:
        return match
    taken = next(c for c in match.candidates if c.kind == "appearance")
    return replace(match, presence=taken.presence, weight=match.match * max(taken.presence, MIN_PRESENCE_WEIGHT))


def _fit_models(supports: list[Support], method: str) -> list[AppearanceModel]:
    """Step 1's appearance direction and each support's calibration under it."""
    if method == "prototype" or (method == "auto" and len(supports) < MIN_PROBE_SUPPORTS):
        return [calibrate(s, s.foreground - s.background) for s in supports]
    direction = fit_direction(_UnitCells(supports), [s.structure.ravel() for s in supports],
                              [s.background_cells.ravel() for s in supports])
    return [calibrate(s, direction) for s in supports]


class _UnitCells(Sequence[np.ndarray]):
    """Each support's unit cell vectors (:func:`_unit_cells`), made when asked: the probe reads them support by
    support, so 200 supports never hold 800 MiB of them at once (issue 26)."""

    def __init__(self, supports: list[Support]) -> None:
        self._supports = supports

    def __len__(self) -> int:
        return len(self._supports)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[np.ndarray]: ...
    def __getitem__(self, index):
        if isinstance(index, slice):
            return [_unit_cells(s.encoded.embedding) for s in self._supports[index]]
        return _unit_cells(self._supports[index].encoded.embedding)


def _gray(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=2).astype(np.float32) if image.ndim == 3 else image.astype(np.float32)


def _reach(core: np.ndarray, spacing: tuple[float, float]) -> tuple[float, np.ndarray]:
    """A located region's equivalent radius in pixels (at least ``MIN_RADIUS``) and every pixel's distance to it.
    ``spacing`` (the image's) is not used: the floor in mm cost same-scan supports (module docstring, Sizes)."""
    del spacing
    radius = max(MIN_RADIUS, float(np.sqrt(core.sum() / np.pi)))
    return radius, cv2.distanceTransform((~core).astype(np.uint8), cv2.DIST_L2, 3)


def _near(distance: np.ndarray, radius: float) -> np.ndarray:
    """``exp(-d^2 / (2 r^2))``: 1 on the region, fading over about its radius (step 3)."""
    return np.exp(-0.5 * (distance / radius) ** 2).astype(np.float32)


def _appearance_prior(appearance: np.ndarray, similarity: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
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
    radius, distance = _reach(core, spacing)
    return (appearance * _near(distance, radius)).astype(np.float32)


def _looks_unlike(match: SupportMatch, candidate: Candidate) -> bool:
    """Every informative signal puts the decoded candidate below UNLIKE: its embedding z, and its grey-level
    likeness when the support's grey levels are informative (a look-alike organ's position can make z alone
    negative on the right structure; grey levels then still say it is right)."""
    embedding, grey = candidate.looks
    informative = match.intensity is not None and match.intensity.contrast >= MIN_INTENSITY_CONTRAST
    return embedding < UNLIKE and not (informative and np.isfinite(grey) and grey >= UNLIKE)


def _stands_out(match: SupportMatch, candidate: Candidate) -> bool:
    """``choice="local"``: the decoded candidate stands out from its own surroundings *on the query* in the
    support's appearance direction: mean z over it minus mean z over its ring (RING_CELLS embedding cells wide)
    is at least LOCAL_CONTRAST. Unlike the likeness, this needs no threshold carried over from the support's
    image, so a shift of every score between two patients' scans does not move it."""
    if match.similarity is None or candidate.probability is None:
        return False
    region = candidate.probability > 0.5
    if not region.any():
        return False
    cell = max(region.shape) / 64
    size = 2 * max(1, round(RING_CELLS * cell)) + 1
    ring = (cv2.dilate(region.astype(np.uint8), np.ones((size, size), np.uint8)) > 0) & ~region
    if not ring.any():
        return False
    return float(match.similarity[region].mean() - match.similarity[ring].mean()) >= LOCAL_CONTRAST


def _likeness(match: SupportMatch, probability: np.ndarray, component: np.ndarray) -> dict:
    """How much ``probability > 0.5`` (``component`` when that is empty) looks like the support's structure:
    the mean z (embedding), averaged with the grey-level likeness when the support's grey levels tell its
    structure from its ring (contrast >= MIN_INTENSITY_CONTRAST). Both are +0.5 on the support's own structure
    on average, -0.5 on its surroundings."""
    region = probability > 0.5
    if not region.any():
        region = component
    embedding = float(match.similarity[region].mean()) if match.similarity is not None else float("nan")
    grey = float("nan")
    if match.intensity is not None and match.query_gray is not None:
        grey = match.intensity.likeness(match.query_gray, region)
    informative = match.intensity is not None and match.intensity.contrast >= MIN_INTENSITY_CONTRAST
    likeness = (embedding + grey) / 2 if informative and np.isfinite(grey) else embedding
    return {"likeness": likeness, "looks": (embedding, grey)}
