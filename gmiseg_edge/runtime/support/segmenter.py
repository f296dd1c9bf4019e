"""Segment a query image from a few labelled examples (a support set), with no re-training (DESIGN §7).

The hard part is *locating* the structure in the query. An embedding prototype alone locks onto look-alike
neighbours (liver for spleen, the left kidney for the right); registration alone carries a *lesion* to where it
was in the support's patient, not where it is in the query's. Each support therefore gives two candidate
priors, anatomy-guided and appearance-only, both decoded by SAM when needed, and keeps the anatomy one unless
evidence computed on the query says it is wrong and the other is right. The algorithm, exactly (``g`` = 64 the
embedding grid; maps are at the query's size).

**Modules** (one job each; :class:`SupportSetSegmenter` here only orchestrates them): :mod:`.supports` (step 1:
the supports, their cells and grey levels), :mod:`.appearance` (step 1's appearance model and step 3's score
maps), :mod:`.locate` (steps 2-5: registration and appearance give each support's candidates),
:mod:`.decode` (step 6: prompts from a candidate, SAM), :mod:`.choice` (step 7), :mod:`.fusion` (step 6's
fusion of SAM and prior, steps 8-9: voting). The steps with alternatives take them by name from a registry
(:data:`STRATEGIES`: ``locate``, ``appearance``, ``choice``, ``fusion``), so benchmarks and the command line can
list and compare them.

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
   ``A`` in [0, 1] (``locate="deformable"``; ``"affine"`` stops before the B-spline, ``"appearance"`` does not
   register). A failed registration (or a query given only as an :class:`EncodedImage`) leaves this support with
   appearance only.
3. **Appearance**: ``z = (score - threshold) / contrast`` upsampled to the query's size (+0.5 is the
   support's own structure on average, -0.5 its ring) and ``E = sigmoid(4 z)``; when the support's grey levels
   are informative (step 7) and the query's pixels are given, ``grey_appearance=True`` (not the default) makes
   it ``E = sigmoid(4 (z + z_grey) / 2)`` with ``z_grey = (ratio - middle) / contrast`` of the query's grey
   levels, smoothed over one cell (:func:`.appearance.joint_look`; it helped mobile_sam on 1 of 9 lesions and
   cost lite_medsam 0.458 -> 0.395 on the cross-patient benchmark, so it stays an option). ``near = exp(-d^2 / (2
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
   with its own presence and weight). ``choice="weighed"`` (not the default; measured in BENCHMARKS.md, issue 24)
   weighs the embedding's and the grey levels' z by how well each splits the query by itself
   (:func:`.appearance.separation`): E comes from the one that separates better, each that separates at all
   gives an appearance candidate, a candidate's likeness is ``(s_e z + s_g grey) / max(s_e + s_g, 1)``, and the
   anatomy candidate is reconsidered when that is below ``UNLIKE`` (the likeliest appearance candidate taken by
   ``MARGIN``).
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

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.selection import spread
from gmiseg_edge.core.transforms import ImageGeometry
from gmiseg_edge.data.intensity import Window
from gmiseg_edge.runtime.images import check_image
from gmiseg_edge.runtime.predictor import EncodedImage, Predictor
from gmiseg_edge.runtime.support.appearance import (
    APPEARANCES,
    MIN_INTENSITY_CONTRAST,
    MIN_PROBE_SUPPORTS,
    AppearanceModel,
    UnitCells,
    calibrate,
    score_map,
    sigmoid,
)
from gmiseg_edge.runtime.support.appearance import similarity as similarity_map
from gmiseg_edge.runtime.support.appearance import unit_cells as _unit_cells
from gmiseg_edge.runtime.support.choice import CHOICES, LOCAL_CONTRAST, MARGIN, UNLIKE, Choice, choose
from gmiseg_edge.runtime.support.decode import MASK_LOGIT, decode_candidate
from gmiseg_edge.runtime.support.fusion import FUSIONS, Fusion, SupportPrediction, searched, weigh_unregistered
from gmiseg_edge.runtime.support.fusion import combine as _combine
from gmiseg_edge.runtime.support.locate import (
    AROUND,
    LOCATES,
    MIN_PRESENCE_WEIGHT,
    MIN_RADIUS,
    Candidate,
    Locate,
    SupportMatch,
    local_agreement,
    locate,
)
from gmiseg_edge.runtime.support.modality import check_same_kind, intensity_kind, stated_kind
from gmiseg_edge.runtime.support.selection import image_descriptor, most_alike
from gmiseg_edge.runtime.support.spacing import DEFAULT_SPACING, Spacing, pixel_spacing, slice_spacing
from gmiseg_edge.runtime.support.strategies import pick
from gmiseg_edge.runtime.support.supports import (
    INTENSITY_BINS,
    RING_CELLS,
    IntensityModel,
    Support,
    check_mask_2d,
    grid_weights,
    labelled_slices,
    make_support,
    valid_cells,
)

__all__ = [
    "APPEARANCES", "AROUND", "CHOICES", "DEFAULT_SPACING", "FUSIONS", "INTENSITY_BINS", "LOCAL_CONTRAST", "LOCATES",
    "MARGIN", "MASK_LOGIT", "MIN_INTENSITY_CONTRAST", "MIN_PRESENCE_WEIGHT", "MIN_PROBE_SUPPORTS", "MIN_RADIUS",
    "RING_CELLS", "STRATEGIES", "UNLIKE", "AppearanceModel", "Candidate", "IntensityModel", "Support", "SupportMatch",
    "SupportPrediction", "SupportSetSegmenter", "UnitCells", "_combine", "_unit_cells", "calibrate", "grid_weights",
    "local_agreement", "score_map",
]

#: every step with strategies chosen by name: step -> its registry (name -> strategy)
STRATEGIES = {"locate": LOCATES, "appearance": APPEARANCES, "choice": CHOICES, "fusion": FUSIONS}


def _locate_name(locate_name: str | None, register_supports: bool, deformable: bool) -> str:
    """``locate=`` by name, or from the earlier ``register_supports=`` / ``deformable=`` switches."""
    if locate_name is None:
        return "appearance" if not register_supports else "deformable" if deformable else "affine"
    if not (register_supports and deformable):
        raise ValueError("give locate= or the earlier register_supports= / deformable= switches, not both")
    return locate_name


class SupportSetSegmenter:
    """Add (image, mask) supports, then ``segment`` queries; thread-safe, supports encoded once (cached).

    Each step with alternatives takes a strategy by name (:data:`STRATEGIES`; an unknown name is a ValueError
    listing the known ones): ``locate`` (:data:`.locate.LOCATES`: ``"deformable"`` registration, the default;
    ``"affine"`` without the B-spline stage; ``"appearance"`` no registration, the method before anatomy);
    ``appearance`` (step 1, :data:`.appearance.APPEARANCES`: ``"auto"`` the probe from two supports on, the
    prototype for one; ``"probe"``; ``"prototype"``); ``choice`` (step 7, :data:`.choice.CHOICES`: ``"auto"``,
    ``"local"``, ``"weighed"``, or always the ``"anatomy"`` or the ``"appearance"`` candidate, with its own
    presence and weight);
    ``fusion`` (step 6, :data:`.fusion.FUSIONS`: ``"fused"``, ``"prior"`` the prior alone, no decoder, or
    ``"sam"`` SAM's probabilities alone). ``mask_prompt`` gives the decoder the prior as ``mask_input``;
    ``select`` keeps the ``select`` supports most like each query (:mod:`.selection`). ``grey_appearance=True``
    (step 3; not the default, measured in BENCHMARKS.md, issue 24) averages the grey-level z into E where the
    support's grey levels are informative. ``deformable=False`` is
    ``locate="affine"`` and ``register_supports=False`` ``locate="appearance"`` (the earlier switches).
    """

    def __init__(self, predictor: Predictor, window: Window | None = None, *, fusion: str = "fused",
                 mask_prompt: bool = True, deformable: bool = True, register_supports: bool = True,
                 refine: bool = False, choice: str = "auto", appearance: str = "auto",
                 select: int | None = None, locate: str | None = None, grey_appearance: bool = False) -> None:
        self._fusion: Fusion = pick(FUSIONS, "fusion", fusion)
        self._choice: Choice = pick(CHOICES, "choice", choice)
        self._fit = pick(APPEARANCES, "appearance", appearance)
        self.locate_method = _locate_name(locate, register_supports, deformable)
        self._locate: Locate = pick(LOCATES, "locate", self.locate_method)
        if select is not None and select < 1:
            raise ValueError(f"select must be a positive number of supports or None, got {select!r}")
        self.select = select
        self.grey_appearance = grey_appearance
        self.choice = choice
        self.appearance_method = appearance
        self.predictor = predictor
        self.window = window
        self.fusion = fusion
        self.mask_prompt = mask_prompt
        self.deformable = self.locate_method == "deformable"
        self.register_supports = self.locate_method != "appearance"
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
        return valid_cells(prepared, self.predictor.input_size, grid)

    # -- supports (.supports) ---------------------------------------------------------------------------------

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
            labelled = labelled_slices(image_shape, mask, axis, name)
            step = slice_spacing(spacing, axis, name=name)
            self._claim_dims(3, name)
            return [self._add_2d(np.take(image, i, axis=axis), np.take(mask, i, axis=axis), f"{name} slice {i}",
                                 step, kind) for i in spread(labelled, max_slices)]
        if mask.ndim != 2:
            raise InputError(f"{name} mask: expected (H, W) or a volume (D, H, W), got shape {mask.shape}")
        pixels = check_image(image, self.window, name=f"{name} image")
        check_mask_2d(pixels, mask, name)
        step = pixel_spacing(spacing, name=name)
        self._claim_dims(2, name)
        return self._add_2d(pixels, mask, name, step, kind)

    def _add_2d(self, image: np.ndarray, mask: np.ndarray, name: str,
                spacing: tuple[float, float] = DEFAULT_SPACING, kind: str | None = None) -> Support:
        support = make_support(self.predictor, self.window, image, mask, name, spacing, kind)
        with self._lock:
            self._supports.append(support)
            self._models = None
        return support

    # -- the appearance model (.appearance) -------------------------------------------------------------------

    def appearance_models(self) -> list[AppearanceModel]:
        """One :class:`AppearanceModel` per support (step 1), fitted once per support set."""
        with self._lock:
            return list(self._fitted())

    def _fitted(self) -> list[AppearanceModel]:
        """The current supports' models, fitted after a support was added (the caller holds the lock)."""
        if self._models is None:
            self._models = self._fit(self._supports)
        return self._models

    def _model(self, support: Support) -> AppearanceModel:
        """``support``'s model; supports and models are read under one lock, so a support added meanwhile by
        another thread cannot pair a support with another's model."""
        with self._lock:
            for candidate, model in zip(self._supports, self._fitted(), strict=True):
                if candidate is support:
                    return model
        return self._fit([support])[0]  # not of this set: on its own

    def similarity(self, query: EncodedImage, support: Support) -> np.ndarray:
        """z = (score - threshold) / contrast at the query's size: +0.5 is the support's own structure on
        average, -0.5 its surroundings, 0 the threshold."""
        return similarity_map(query, self._model(support), self.predictor.input_size)

    def appearance(self, query: EncodedImage, support: Support) -> np.ndarray:
        """E (step 3) at the query's size."""
        return sigmoid(4 * self.similarity(query, support))

    # -- one support on the query (.locate, .decode, .choice) -------------------------------------------------

    def match(self, query: EncodedImage, pixels: np.ndarray | None, support: Support,
              spacing: tuple[float, float] = DEFAULT_SPACING) -> SupportMatch:
        """Steps 2-5 for one support (:func:`.locate.locate`; weight before the appearance-only correction of
        ``segment``): both candidates' priors; the first is the chosen one until :meth:`decode` weighs the
        evidence."""
        return locate(query, pixels, support, self._model(support), self.predictor.input_size, spacing,
                      self._locate, appearance_candidate=self._choice.appearance_candidate,
                      appearance_first=self._choice.appearance_first, grey=self.grey_appearance,
                      weighed=self._choice.weighed)

    def decode(self, query: EncodedImage, match: SupportMatch) -> SupportMatch:
        """Steps 6-7 for one support (:func:`.choice.choose`): decode its first candidate; decode the appearance
        candidate too only when the first does not look like the support's structure, and take it when it
        clearly does."""
        return choose(match, self._choice, lambda candidate: decode_candidate(
            self.predictor, query, match, candidate, self._fusion, self.mask_prompt))

    # -- the query (.fusion) ----------------------------------------------------------------------------------

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
        switched = [searched(m) for m in matches]
        if all(a is b for a, b in zip(matches, switched, strict=True)):  # no support switched: the same answer
            return anchored, anchored
        return anchored, _combine(query.size, switched, True)

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
        return query, weigh_unregistered(matches)
