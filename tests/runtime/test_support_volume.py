"""Keeping the run of slices connected to the most confident one, and searching when none is found
(runtime.support_volume): the rules exactly."""

from __future__ import annotations

import numpy as np
import pytest

from gmiseg_edge.runtime.support.segmenter import SupportPrediction
from gmiseg_edge.runtime.support_volume import choose_slices, connected_slices, slice_confidence


def _square(row: int, col: int, size: int = 4, shape=(20, 20)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[row:row + size, col:col + size] = True
    return mask


def test_slices_are_kept_while_they_overlap_the_last_kept_one():
    empty = np.zeros((20, 20), bool)
    masks = [_square(14, 14),  # 0: does not touch slice 1: dropped
             _square(2, 2), _square(3, 3), _square(4, 4),  # 1..3: a structure drifting one pixel a slice
             _square(5, 5),  # 4: the anchor
             _square(6, 6),  # 5
             empty,  # 6: the structure ended ...
             _square(6, 6)]  # 7: ... so this look-alike beyond it is dropped, though it overlaps slice 5
    confidence = [2.0, 1.0, 1.0, 1.0, 3.0, 1.0, 0.0, 1.0]  # the anchor is the highest: slice 4
    keep = connected_slices(masks, confidence)
    assert keep.tolist() == [False, True, True, True, True, True, False, False]


def test_the_anchor_is_the_most_confident_slice_even_when_isolated():
    masks = [_square(2, 2), _square(3, 3), _square(14, 14)]
    assert connected_slices(masks, [1.0, 1.0, 9.0]).tolist() == [False, False, True]


def test_nothing_is_kept_when_no_slice_found_the_structure():
    masks = [np.zeros((5, 5), bool)] * 3
    assert not connected_slices(masks, [0.0, 0.0, 0.0]).any()
    assert connected_slices([], []).shape == (0,)
    with pytest.raises(ValueError, match="2 masks but 1 confidences"):
        connected_slices(masks[:2], [1.0])


def _prediction(mask: np.ndarray, present: bool, presence: float, score: float, spread: float) -> SupportPrediction:
    shape = mask.shape
    return SupportPrediction(mask, mask.astype(np.float32), mask.astype(np.float32), np.full(shape, spread, np.float32),
                             np.ones(1, np.float32), presence, present, score)


def test_slice_confidence_is_presence_score_agreement_and_root_area():
    mask = _square(0, 0, size=4)  # 16 pixels: sqrt 4
    assert slice_confidence(_prediction(mask, True, 0.8, 0.5, 0.1)) == pytest.approx(0.8 * 0.5 * 0.8 * 4)
    assert slice_confidence(_prediction(mask, False, 0.8, 0.5, 0.1)) == 0.0  # absent
    assert slice_confidence(_prediction(np.zeros((4, 4), bool), True, 0.8, 0.5, 0.1)) == 0.0  # empty
    assert slice_confidence(_prediction(mask, True, 0.8, 0.5, 0.5)) == 0.0  # the supports disagree completely


def test_the_searched_answers_are_used_only_when_the_anatomy_found_the_structure_nowhere():
    empty = np.zeros((20, 20), bool)
    searched = [_square(2, 2), _square(3, 3), _square(14, 14)]
    searched_confidence = [1.0, 2.0, 0.5]
    # the anatomy-guided answers keep a slice: the searched ones (a look-alike elsewhere) are not looked at
    found = choose_slices([empty, _square(14, 14), empty], [0.0, 1.0, 0.0], searched, searched_confidence)
    assert found.keep.tolist() == [False, True, False] and not found.searched and found.anchor == 1
    # absent on every slice: the searched answers' connected run, anchored on their most confident slice
    lost = choose_slices([empty] * 3, [0.0] * 3, searched, searched_confidence)
    assert lost.keep.tolist() == [True, True, False] and lost.searched and lost.anchor == 1
    # nothing anywhere: nothing kept, and no search claimed
    none = choose_slices([empty] * 3, [0.0] * 3, [empty] * 3, [0.0] * 3)
    assert not none.keep.any() and not none.searched and none.anchor == -1


def test_a_volume_needs_a_slice():
    from gmiseg_edge.runtime.support_volume import segment_volume

    with pytest.raises(ValueError, match="at least one slice"):
        segment_volume(None, lambda k: np.zeros((4, 4), np.uint8), 0)  # type: ignore[arg-type]
