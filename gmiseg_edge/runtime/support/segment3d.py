"""Segment a query *volume* from labelled support *volumes* of other patients (DESIGN §7): locate the structure in
3D, then SAM slice by slice with prompts from the located prior.

The method, exactly (:func:`segment_volume_from_supports`):

1. **Inputs**: the query and each support are put in LPS voxel order (:mod:`.geometry`; a query given as an
   array needs ``spacing=``) and mapped to uint8 with the same ``window`` (a CT window for CT; ``"percentile"``
   is computed per volume). Supports must be of the query's kind: a support in Hounsfield units (CT: more than
   1% of voxels below -500) on a query that is not, or the reverse, is refused (an :class:`InputError` naming
   the support). An empty support label is refused.
2. **Register** each support to the query (:func:`.register3d.register_volume`). A failed registration, or one
   whose warped label holds no voxel >= 0.5 in the query, drops that support with a message
   (``result.messages``).
3. **Prior**: the kept supports' warped labels fused by locally weighted voting (:func:`.volume_prior.fuse`):
   ``prior``, ``uncertainty`` (the supports' disagreement) and ``agreement`` (mean pairwise Dice of the warped
   labels).
4. **Locate** (``locate="auto"``): by *appearance* (:mod:`.appearance3d`: the embedding probe over the whole
   query volume, one 3D search) when the structure's place varies between patients, i.e. two or more supports
   were kept and their warped labels agree less than ``AGREEMENT_MIN`` (a lesion: each patient's sits
   elsewhere), or when no support could be registered; by *anatomy* otherwise (an organ; a lone support, whose
   variability cannot be seen). ``"anatomy"`` / ``"appearance"`` force one.
5. **Slices**: anatomy: the query slices where the prior reaches 0.5, plus ``MARGIN_MM`` on each side where the
   prior still reaches ``MIN_PROMPT``; appearance: the slices around the found component (:func:`.appearance3d.
   prior_slices`).
6. **Decode** each slice (encoded in chunks of ``CHUNK`` through the predictor's cache): the prior's pixels
   >= 0.5 (>= half its maximum on a slice where it stays below 0.5) give the box (their extent) and a positive
   point (the most interior pixel of their largest piece); with ``mask_prompt`` the prior also goes in as
   ``mask_input``. SAM's single-mask output ``s`` is fused with the prior: ``p = (s + prior) / 2``
   (``fusion="fused"``; ``"sam"``: ``p = s``; ``"prior"``: no decoder, ``p = prior``). The mask is ``p > 0.5``.
7. **Beyond the supports' view** (anatomy): a support scan may hold fewer slices than the query (a partial scan);
   where the mask reaches the last query slice inside every support's field of view and the query goes on, the
   structure is carried on from that slice by propagation (DESIGN §10: box and stop rules from the previous
   slice), outwards only.
8. **Result** in the query's own voxel order: mask, probability, prior, uncertainty, which way it was located
   (``located``), the slices decoded, the appearance component's confidence, and ``timings``: seconds encoding
   the query's slices (``encode``; ``encoded_slices`` the distinct slices asked for), registering, decoding,
   propagating, and fitting the probe on the supports (``support_probe``; their embeddings are cached, so a
   second query with the same supports pays little of it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.graph_io import LOW_RES
from gmiseg_edge.core.prompts import make_prompt
from gmiseg_edge.core.transforms import postprocess_logits
from gmiseg_edge.data.align import align_labels
from gmiseg_edge.data.images import Volume
from gmiseg_edge.data.intensity import Window, rescale_to_uint8
from gmiseg_edge.runtime.predictor import Predictor
from gmiseg_edge.runtime.propagate import SliceSource
from gmiseg_edge.runtime.support import appearance3d
from gmiseg_edge.runtime.support.decode import MASK_LOGIT
from gmiseg_edge.runtime.support.geometry import Canonical, canonical
from gmiseg_edge.runtime.support.register3d import Registration3D, register_volume
from gmiseg_edge.runtime.support.supports import grid_weights
from gmiseg_edge.runtime.support.volume_prior import VolumePrior, WarpedSupport, fuse

MIN_SLICES = 8  # a volume of fewer slices along its thinnest axis is a slab: 3D registration cannot work on it
LOCATES = ("auto", "anatomy", "appearance")
FUSIONS = ("fused", "sam", "prior")
AGREEMENT_MIN = 0.3
MARGIN_MM = 3.0
MIN_PROMPT = 0.1
CHUNK = 8
HU_AIR = -500.0
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class VolumeSupportResult:
    """A support set's answer on a query volume (module docstring, step 7); arrays in the query's voxel order."""

    mask: np.ndarray  # bool
    probability: np.ndarray  # float32
    prior: np.ndarray  # float32
    uncertainty: np.ndarray  # float32, 0..0.5
    located: str  # "anatomy" or "appearance"
    slices: tuple[int, ...]  # canonical (LPS) slice indices decoded
    confidence: float | None  # the appearance component's mean E (None: located by anatomy)
    agreement: float  # mean pairwise Dice of the supports' warped labels (nan: none registered)
    registrations: tuple[Registration3D, ...] = field(repr=False)
    messages: tuple[str, ...]
    timings: dict[str, float]
    path: str = "3d"


class _Timed:
    """The predictor with its ``encode_many`` timed (the encoder's share of ``timings``) and the distinct query
    slices it was given counted (an embedding asked for twice, e.g. by the search and then the decoding, is one
    encoder run: the cache holds it)."""

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor
        self.seconds = 0.0
        self._seen: set[int] = set()

    @property
    def images(self) -> int:
        return len(self._seen)

    def encode_many(self, images):
        start = time.perf_counter()
        encoded = self._predictor.encode_many(images)
        self.seconds += time.perf_counter() - start
        self._seen.update(hash(np.ascontiguousarray(image).tobytes()) for image in images)
        return encoded

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)


def volumetric(*volumes: Volume | np.ndarray) -> bool:
    """True when every volume holds at least ``MIN_SLICES`` voxels along each axis: the 3D path can register them
    (a slab of a few slices goes slice by slice, the 2D path)."""
    return all(min(np.shape(getattr(v, "array", v))) >= MIN_SLICES for v in volumes)


def as_volume(array: np.ndarray, spacing: Sequence[float] | None, name: str = "query") -> Volume:
    """A 3D array with its voxel ``spacing`` (mm along i, j, k) as a :class:`Volume` whose axes are LPS."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(f"{name}: shape {array.shape} is not a volume (I, J, K); a 2D image cannot take support "
                         "volumes: give it 2D supports (slices), or give the query as a volume")
    if spacing is None:
        raise InputError(f"{name}: an array volume needs spacing=(si, sj, sk) in mm to be registered with support "
                         "volumes (or read it from a file with gmiseg_edge.data.read_volume)")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"{name}: spacing {spacing} is not three positive sizes in mm")
    return Volume(array, spacing, np.diag([*spacing, 1.0]), Path(name), "dicom", "LPS", None)


def _kind(array: np.ndarray) -> str | None:
    """"CT" for Hounsfield units (air below -500), "not CT" for other intensities, None for uint8 (unknown)."""
    if array.dtype == np.uint8:
        return None
    sample = array.ravel()[:: max(1, array.size // 1_000_000)]
    return "CT" if np.mean(sample < HU_AIR) > 0.01 else "not CT"


def _label_array(support: Volume, label: Any, name: str) -> np.ndarray:
    if isinstance(label, Volume):
        label = align_labels(support, label)
    label = np.asarray(label)
    if label.shape != np.shape(support.array):
        raise InputError(f"{name}: label of shape {label.shape} differs from its volume's {np.shape(support.array)}")
    if not label.any():
        raise InputError(f"{name}: its label is empty: a support volume needs at least one labelled voxel")
    return label != 0


def _uint8(volume: Canonical, window: Window | None) -> tuple[np.ndarray, Callable[[int], np.ndarray]]:
    """The canonical array as uint8 (one mapping for the volume) and its slice k as SAM sees it (J, I)."""
    source = SliceSource(volume.array, 2, window, name=volume.name)
    array = volume.array if source.range is None else rescale_to_uint8(volume.array, *source.range)
    return array, lambda k: np.ascontiguousarray(array[:, :, k].T)


def _region(prior: np.ndarray) -> np.ndarray:
    level = 0.5 if prior.max() >= 0.5 else float(prior.max()) / 2
    return prior >= level


def _interior_point(region: np.ndarray) -> tuple[int, int]:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    largest = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) if count > 2 else region
    distance = cv2.distanceTransform(np.pad(largest, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(col), int(row)


def _decode(predictor: Predictor, encoded, prior: np.ndarray, fusion: str, mask_prompt: bool) -> np.ndarray:
    """Step 6 on one slice: the fused probability (H, W)."""
    if fusion == "prior":
        return prior
    region = _region(prior)
    rows, cols = np.nonzero(region)
    height, width = prior.shape
    box = np.array([cols.min(), rows.min(), min(cols.max() + 1, width), min(rows.max() + 1, height)], np.float32)
    mask_input = None
    if mask_prompt:
        low = grid_weights(prior, encoded.prepared, predictor.input_size, LOW_RES)
        mask_input = (MASK_LOGIT * (2 * low - 1)).astype(np.float32)
    prompt = make_prompt(np.asarray([_interior_point(region)], np.float32), np.ones(1, np.float32), box, mask_input,
                         image_size=encoded.size)
    low_res, _ = predictor.decode(encoded, prompt)
    logits = postprocess_logits(low_res[:1], encoded.prepared, predictor.input_size)[0]
    sam = (1 / (1 + np.exp(-np.clip(logits, -60, 60)))).astype(np.float32)
    return sam if fusion == "sam" else (sam + prior) / 2


def _beyond_view(predictor: Predictor, volume: np.ndarray, mask: np.ndarray, covered: np.ndarray, window: Window | None,
                 ) -> tuple[int, int]:
    """Step 7: where the mask reaches the last slice the supports see and the query goes on, carry the structure
    on from that slice by propagation (:func:`gmiseg_edge.runtime.propagate.propagate`, its own stop rules), in
    that direction only; ``mask`` is extended in place. Returns the slices added and the slices propagation
    encoded."""
    seen = np.flatnonzero(covered)
    added = encoded = 0
    for edge, step in ((int(seen.min()), -1), (int(seen.max()), 1)):
        beyond = range(edge + step, -1 if step < 0 else volume.shape[2], step)
        if not len(beyond) or not mask[:, :, edge].any():
            continue
        lo, hi = (0, edge + 1) if step < 0 else (edge, volume.shape[2])
        seed = edge - lo
        result = predictor.propagate(volume[:, :, lo:hi], seed, mask=np.ascontiguousarray(mask[:, :, edge].T), axis=2,
                                     window=window)
        encoded += result.encoded
        for k in beyond:
            plane = result.mask[:, :, k - lo]
            if plane.any():
                mask[:, :, k] = plane
                added += 1
    return added, encoded


def _register_all(query: Canonical, query_u8: np.ndarray, supports: list[tuple[Canonical, np.ndarray, np.ndarray]],
                  deformable: bool, progress: Progress | None, messages: list[str],
                  reuse: dict[str, Registration3D] | None) -> tuple[list[Registration3D], list[WarpedSupport]]:
    registrations, warped = [], []
    for index, (support, support_u8, label) in enumerate(supports):
        if progress is not None:
            progress("register", index, len(supports))
        registration = None if reuse is None else reuse.get(support.name)
        if registration is None:
            registration = register_volume(query_u8, query.affine, support_u8, support.affine, name=support.name,
                                           deformable=deformable)
            if reuse is not None:
                reuse[support.name] = registration
        registrations.append(registration)
        if not registration.ok:
            messages.append(f"support dropped: {registration.message}")
            continue
        if registration.message:
            messages.append(f"{support.name}: {registration.message}")

        def warp(array: np.ndarray, support=support, registration=registration) -> np.ndarray:
            return registration.warp(array, support.affine, query.array.shape, query.affine)

        moved = np.clip(warp(label.astype(np.float32)), 0, 1)
        if moved.max() < 0.5:
            messages.append(f"{support.name} dropped: its label lands outside the query's field of view")
            continue
        view = warp(np.ones(support.array.shape, np.float32)) >= 0.5
        warped.append(WarpedSupport(support.name, moved, view, warp(support_u8.astype(np.float32))))
    if progress is not None:
        progress("register", len(supports), len(supports))
    return registrations, warped


def segment_volume_from_supports(
    predictor: Predictor,
    query: Volume | np.ndarray,
    supports: Sequence[tuple[Volume, Any]],
    window: Window | None = None,
    *,
    spacing: Sequence[float] | None = None,
    locate: str = "auto",
    fusion: str = "fused",
    mask_prompt: bool = True,
    deformable: bool = True,
    progress: Progress | None = None,
    registrations: dict[str, Registration3D] | None = None,
) -> VolumeSupportResult:
    """Segment ``query`` (a :class:`Volume`, or a 3D array with ``spacing``) from ``supports``: (support
    :class:`Volume`, its label: an array on its grid, non-zero = structure, or a label :class:`Volume`) pairs of
    other patients; the module's method. ``window``: the intensity mapping to uint8 (a CT window such as
    ``"abdomen"``, ``(low, high)``, ``"percentile"``); ``progress(step, done, total)``; ``registrations``: a dict
    kept by the caller for one query, support name -> registration, filled and reused (registration does not
    depend on the label: several structures of one query share it)."""
    if locate not in LOCATES:
        raise InputError(f"locate must be one of {LOCATES}, got {locate!r}")
    if fusion not in FUSIONS:
        raise InputError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    if not supports:
        raise InputError("no support volumes given")
    started = time.perf_counter()
    if not isinstance(query, Volume):
        query = as_volume(query, spacing)
    query_c = canonical(query, "query")
    query_kind = _kind(query_c.array)
    prepared = []
    for index, entry in enumerate(supports):
        support, label = entry
        name = str(getattr(support, "path", "") or f"support {index}")
        if not isinstance(support, Volume) or np.ndim(support.array) != 3:
            raise InputError(f"{name}: supports of a query volume must be volumes (a 2D support cannot join them)")
        labels = _label_array(support, label, name)
        kind = _kind(np.asarray(support.array))
        if None not in (kind, query_kind) and kind != query_kind:
            raise InputError(f"{name}: the support is {kind} but the query is {query_kind}: supports must be scans "
                             "of the query's modality")
        support_c = canonical(support, name)
        label_c = canonical(SimpleNamespace(array=labels, affine=support.affine, format=support.format,
                                            space=support.space), name)
        prepared.append((support_c, _uint8(support_c, window)[0], label_c.array))
    query_u8, query_pixels = _uint8(query_c, window)
    timed = _Timed(predictor)
    messages: list[str] = []
    start = time.perf_counter()
    registrations, warped = ([], []) if locate == "appearance" else _register_all(
        query_c, query_u8, prepared, deformable, progress, messages, registrations)
    register_seconds = time.perf_counter() - start
    fused: VolumePrior | None = fuse(query_u8, query_c.spacing, warped) if warped else None
    located = locate
    if locate == "auto":
        located = "anatomy" if fused is not None and (len(warped) < 2 or fused.agreement >= AGREEMENT_MIN) \
            else "appearance"
        if fused is None:
            messages.append("no registered support puts the structure in the query: located by appearance")
    shape = query_c.array.shape
    prior = np.zeros(shape, np.float32) if fused is None else fused.prior
    uncertainty = np.zeros(shape, np.float32) if fused is None else fused.uncertainty
    probability = np.zeros(shape, np.float32)
    confidence = None
    decode_seconds = support_seconds = 0.0
    priors: dict[int, np.ndarray] = {}
    if located == "anatomy" and fused is None:
        messages.append("located by anatomy (as asked), but no support is left to locate it with: empty mask")
    elif located == "anatomy":
        assert fused is not None
        peak = prior.max(axis=(0, 1))
        margin = int(np.ceil(MARGIN_MM / query_c.spacing[2]))
        keep = np.zeros(shape[2], bool)
        for k in fused.slices:
            keep[max(0, k - margin):k + margin + 1] = True
        keep &= peak >= MIN_PROMPT
        priors = {int(k): np.ascontiguousarray(prior[:, :, k].T) for k in np.flatnonzero(keep)}
    else:
        prior = np.zeros(shape, np.float32)  # the appearance prior replaces the anatomical one
        tick = time.perf_counter()
        probe = appearance3d.fit_probe(predictor, [(_uint8(s, window)[1], np.transpose(lab, (2, 1, 0)))
                                               for s, _, lab in prepared])
        support_seconds = time.perf_counter() - tick
        found = appearance3d.search(timed, probe, query_pixels, shape[2], query_c.spacing[2])
        if found is None:
            messages.append("the appearance search found nothing that looks like the structure: empty mask")
        else:
            confidence = found.confidence
            priors = appearance3d.prior_slices(timed, probe, query_pixels, shape[2], found)
            for k, p in priors.items():
                prior[:, :, k] = p.T
    order = sorted(priors)
    for begin in range(0, len(order), CHUNK):
        chunk = order[begin:begin + CHUNK]
        encoded = timed.encode_many([query_pixels(k) for k in chunk]) if fusion != "prior" else [None] * len(chunk)
        tick = time.perf_counter()
        for k, image in zip(chunk, encoded, strict=True):
            if priors[k].max() > 0:
                probability[:, :, k] = _decode(timed, image, priors[k], fusion, mask_prompt).T
        decode_seconds += time.perf_counter() - tick
        if progress is not None:
            progress("decode", begin + len(chunk), len(order))
    mask = probability > 0.5
    propagate_seconds, propagated = 0.0, 0
    if located == "anatomy" and fused is not None and mask.any():
        tick = time.perf_counter()
        extended, propagated = _beyond_view(predictor, query_c.array, mask, fused.covered, window)
        propagate_seconds = time.perf_counter() - tick
        if extended:
            messages.append(f"the structure reaches the edge of the supports' field of view: carried on by "
                            f"propagation over {extended} more slice(s)")
    if not mask.any() and not any("empty mask" in m for m in messages):
        messages.append(f"located by {located}, but no slice's answer holds the structure: empty mask")
    return VolumeSupportResult(
        mask=query_c.restore(mask), probability=query_c.restore(probability), prior=query_c.restore(prior),
        uncertainty=query_c.restore(uncertainty), located=located, slices=tuple(order), confidence=confidence,
        agreement=float("nan") if fused is None else fused.agreement, registrations=tuple(registrations),
        messages=tuple(messages), timings={"encode": timed.seconds, "encoded_slices": float(timed.images),
                                           "register": register_seconds, "decode": decode_seconds,
                                           "support_probe": support_seconds,
                                           "propagate": propagate_seconds, "propagated_slices": float(propagated),
                                           "total": time.perf_counter() - started})
