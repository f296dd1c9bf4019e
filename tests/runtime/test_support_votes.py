"""Locally weighted voting (runtime.support.segmenter, steps 5 and 8): each registered support votes where its warped
image matches the query. numpy and OpenCV only."""

from __future__ import annotations

import numpy as np

from gmiseg_edge.runtime.support.segmenter import SupportMatch, _combine, local_agreement


def _texture(shape=(48, 48), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.float32)


def test_local_agreement_is_high_where_the_warped_support_matches_and_low_where_it_does_not():
    query = _texture()
    assert np.allclose(local_agreement(query, query), 1.0, atol=1e-5)
    warped = query.copy()
    warped[:, :24] = _texture(seed=1)[:, :24]  # the left half is another image
    agreement = local_agreement(query, warped)
    assert agreement.shape == query.shape and agreement.min() > 0 and agreement.max() <= 1
    assert agreement[:, 32:].mean() > 0.8 and agreement[:, :16].mean() < 0.5


def _match(name: str, probability: np.ndarray, agreement: np.ndarray | None, chosen: str = "anatomy") -> SupportMatch:
    shape = probability.shape
    return SupportMatch(name, None, np.zeros(shape, np.float32), np.zeros(shape, np.float32), probability,
                        presence=0.8, match=0.5, weight=0.4, probability=probability, iou=0.9, chosen=chosen,
                        agreement=agreement)


def test_each_support_votes_where_it_matches_the_query():
    query = _texture()
    good, bad = query.copy(), query.copy()
    bad[:, :24] = _texture(seed=1)[:, :24]  # misregistered on the left
    says_yes = np.ones(query.shape, np.float32)
    says_no = np.zeros(query.shape, np.float32)
    matches = [_match("good", says_yes, local_agreement(query, good)),
               _match("bad", says_no, local_agreement(query, bad))]
    result = _combine(query.shape, matches, require_presence=False)
    assert np.allclose(result.weights, 0.5)  # the same global weight ...
    assert result.probability[:, :16].mean() > 0.75  # ... but on the left the matching support carries the vote
    assert abs(float(result.probability[:, 36:].mean()) - 0.5) < 0.1  # where both match, an even split
    assert result.uncertainty[:, :16].mean() < result.uncertainty[:, 36:].mean()
    # an appearance candidate is not where the registration put its support: it votes with weight alone
    switched = [_match("good", says_yes, local_agreement(query, good)),
                _match("bad", says_no, local_agreement(query, bad), chosen="appearance")]
    even = _combine(query.shape, switched, require_presence=False)
    assert even.probability[:, :16].mean() < result.probability[:, :16].mean()
