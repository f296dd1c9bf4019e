"""A support set through a volume: every slice segmented, then only the run of slices connected to the most
confident one kept (DESIGN §7 on volumes).

A support set answers each slice on its own, and its presence decision is weak: slices beyond the end of an
organ still get masks, usually on a neighbour (BENCHMARKS.md, presence). A structure is connected through the
volume, so those masks can be told apart by where they sit:

1. **Anchor**: each slice's *confidence* is its presence x weighted predicted IoU x agreement (1 - 2 x the
   supports' mean disagreement over the mask) x sqrt(mask area) (a large confident answer is a safer anchor than
   a small one); 0 for a slice whose answer is absent or empty. The anchor is the slice of highest confidence.
2. **Walk** from the anchor in both directions: the next slice is kept while its mask overlaps (shares at least
   one pixel with) the last kept slice's mask; the first slice that is empty or does not overlap ends that
   direction, and every slice beyond it is dropped.
3. **Search when the anatomy finds nothing**: when no slice is kept (every slice's answer is absent), the same
   two steps run on the slices' *searched* answers (:meth:`.SupportSetSegmenter.segment_with_search`: a support
   that took its appearance candidate keeps that candidate's presence). Another patient's lesion sits elsewhere
   than where registration carries the supports' lesion, so the anatomy-guided answer is absent on every
   slice; the searched one finds it. The searched answers are not used when the anatomy-guided ones find the
   structure somewhere: on a slice beyond an organ's end its look-alike (the other kidney) would switch in.
   A scan without the structure can then get a mask on its best look-alike: callers say so (``searched``).

:func:`segment_volume` runs the whole of it on a volume given slice by slice.

Measured against keeping every slice the support set marks present (``benchmarks/support_volume.py``), and
against finding a seed slice with the support set and propagating from it, which scored lower.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gmiseg_edge.runtime.support.segmenter import SupportPrediction, SupportSetSegmenter


def slice_confidence(prediction: SupportPrediction) -> float:
    """presence x score x agreement x sqrt(area) of one slice's answer; 0 when absent or empty."""
    area = int(np.count_nonzero(prediction.mask))
    if not prediction.present or area == 0:
        return 0.0
    agreement = 1.0 - 2.0 * float(prediction.uncertainty[prediction.mask].mean())
    return max(0.0, prediction.presence * prediction.score * agreement * float(np.sqrt(area)))


def connected_slices(masks: Sequence[np.ndarray], confidences: Sequence[float]) -> np.ndarray:
    """Which slices to keep (bool, one per slice): the anchor and the slices reached from it through
    overlapping masks (module docstring). None kept when every confidence is 0."""
    if len(masks) != len(confidences):
        raise ValueError(f"{len(masks)} masks but {len(confidences)} confidences")
    keep = np.zeros(len(masks), bool)
    if not len(masks) or max(confidences) <= 0:
        return keep
    anchor = int(np.argmax(confidences))
    keep[anchor] = True
    for step in (-1, 1):
        last, k = masks[anchor], anchor + step
        while 0 <= k < len(masks) and np.logical_and(masks[k], last).any():
            keep[k], last, k = True, masks[k], k + step
    return keep


@dataclass(frozen=True)
class VolumeChoice:
    """Which slices to keep, and whether they come from the searched answers (step 3)."""

    keep: np.ndarray  # bool, one per slice
    searched: bool
    anchor: int  # the anchor slice (-1 when nothing is kept)


def choose_slices(masks: Sequence[np.ndarray], confidences: Sequence[float], searched_masks: Sequence[np.ndarray],
                  searched_confidences: Sequence[float]) -> VolumeChoice:
    """Steps 1-3: the connected run of the support set's answers; of its searched answers when the first keep
    no slice."""
    keep = connected_slices(masks, confidences)
    if keep.any():
        return VolumeChoice(keep, False, int(np.argmax(confidences)))
    keep = connected_slices(searched_masks, searched_confidences)
    return VolumeChoice(keep, bool(keep.any()), int(np.argmax(searched_confidences)) if keep.any() else -1)


@dataclass(frozen=True)
class SupportVolume:
    """A support set's answer on a volume, slice by slice (slice k of the arrays is the volume's slice k)."""

    mask: np.ndarray  # bool (depth, H, W): the kept slices' masks, empty elsewhere
    uncertainty: np.ndarray  # uint8 (depth, H, W): the supports' disagreement, 0..255 for 0..0.5
    marked: np.ndarray  # bool (depth,): slices the chosen answers found the structure on, before the walk
    choice: VolumeChoice


def uncertainty_uint8(prediction: SupportPrediction) -> np.ndarray:
    """A prediction's disagreement (0..0.5) as uint8 0..255."""
    return np.round(np.clip(prediction.uncertainty, 0, 0.5) * 510).astype(np.uint8)


def segment_volume(segmenter: SupportSetSegmenter, pixels: Callable[[int], np.ndarray], depth: int,
                   progress: Callable[[int, int], None] | None = None, *,
                   spacing: tuple[float, float] | None = None) -> SupportVolume:
    """Steps 1-3 on a volume of ``depth`` slices: ``pixels(k)`` gives slice k as the supports' images are given
    (uint8 (H, W) or (H, W, 3)); each slice is segmented once (:meth:`~.SupportSetSegmenter.segment_with_search`);
    ``progress(done, depth)`` before the first and after each; ``spacing`` the slices' (row mm, col mm) pixel
    size (not given: 1 mm, :meth:`~.SupportSetSegmenter.segment`)."""
    if depth < 1:
        raise ValueError(f"a volume needs at least one slice, got depth {depth}")
    masks: list[np.ndarray] = []
    spreads: list[np.ndarray] = []
    confidence, searched_confidence = np.zeros(depth), np.zeros(depth)
    searched_masks: list[np.ndarray] = []
    searched_spreads: list[np.ndarray] = []
    if progress is not None:
        progress(0, depth)
    for k in range(depth):
        anchored, searched = segmenter.segment_with_search(pixels(k), spacing=spacing)
        masks.append(anchored.mask)
        spreads.append(uncertainty_uint8(anchored))
        confidence[k] = slice_confidence(anchored)
        searched_masks.append(searched.mask)
        # no support switched (the usual slice): the searched answer is the same object, so is its map
        searched_spreads.append(spreads[-1] if searched is anchored else uncertainty_uint8(searched))
        searched_confidence[k] = confidence[k] if searched is anchored else slice_confidence(searched)
        if progress is not None:
            progress(k + 1, depth)
    choice = choose_slices(masks, confidence, searched_masks, searched_confidence)
    mask = np.stack(searched_masks if choice.searched else masks)
    marked = mask.any(axis=(1, 2))
    mask[~choice.keep] = False
    return SupportVolume(mask, np.stack(searched_spreads if choice.searched else spreads), marked, choice)
