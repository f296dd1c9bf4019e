"""choice="weighed" (runtime.support.choice, issue 24; not the default): the embedding z and the grey-level z are
weighed by how well each splits the query by itself (appearance.separation), so grey levels that separate on the
query can overrule an embedding z >= 0 that does not. Pure maps for the separation rule, then the real exported
lite_medsam (ONNX Runtime) and SimpleITK on a phantom whose structure sits elsewhere than the supports'."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime.support.appearance import grey_similarity, informative, likeness, separation, sigmoid
from gmiseg_edge.runtime.support.choice import CHOICES, looks_unlike, looks_unlike_weighed
from gmiseg_edge.runtime.support.locate import Candidate, SupportMatch
from gmiseg_edge.runtime.support.segmenter import SupportSetSegmenter
from gmiseg_edge.runtime.support.supports import IntensityModel
from tests.runtime.phantoms import disc_scene


def _disc_map(low: float = -1.0, high: float = 1.0, radius: int = 10, seed: int = 0) -> np.ndarray:
    """A 96 x 96 z-scale map: ``low`` with noise (sd 0.1), ``high`` on a disc."""
    rng = np.random.default_rng(seed)
    score = (low + rng.normal(0, 0.1, (96, 96))).astype(np.float32)
    disc = np.zeros((96, 96), np.uint8)
    cv2.circle(disc, (50, 40), radius, 1, -1)
    score[disc > 0] = high
    return score


def test_separation_is_high_for_one_compact_region_and_low_for_flat_spread_or_scattered_maps():
    assert separation(_disc_map()) > 0.8
    # every score shifted below the support's threshold (another scan): the peak region still separates
    assert separation(_disc_map() - 1.5) == pytest.approx(separation(_disc_map()), abs=0.05)
    noise = np.random.default_rng(1).normal(0, 1, (96, 96)).astype(np.float32)
    assert separation(noise) < 0.1  # flat: half the query is "high"
    assert separation(_disc_map(radius=40)) == 0.0  # spread: the disc covers more than half the query
    assert separation(np.zeros((96, 96), np.float32)) == 0.0
    scattered = _disc_map(radius=0)
    for row in range(8, 96, 16):
        for col in range(8, 96, 16):
            cv2.circle(scattered, (col, row), 3, 1.0, -1)
    assert separation(scattered) < 0.2  # 36 look-alikes, none holding most of the score


def _match(look_weights: tuple[float, float] | None) -> SupportMatch:
    empty = np.zeros((8, 8), np.float32)
    model = IntensityModel(np.zeros(32, np.float32), 0.0, 3.0)  # informative grey levels (3 nats)
    return SupportMatch("s", None, empty, empty, empty, 0.5, 1.0, 0.5, intensity=model, look_weights=look_weights)


def test_the_weighed_gate_trusts_the_map_that_separates_on_the_query():
    """The embedding says "like" (z +0.3), the grey levels "unlike" (-0.5). "auto" keeps the candidate (z >= 0);
    "weighed" reconsiders it when the grey levels separate better on the query, not when the embedding does."""
    candidate = Candidate("anatomy", np.zeros((8, 8), np.float32), 0.5, looks=(0.3, -0.5))
    assert not looks_unlike(_match(None), candidate)
    region = np.ones((8, 8), bool)
    for weights, unlike in (((0.2, 0.9), True), ((0.9, 0.2), False)):
        similarity = np.full((8, 8), 0.3, np.float32)
        intensity = IntensityModel(np.full(32, -1.5, np.float32), 0.0, 3.0)  # every grey level: -0.5
        scored = likeness(similarity, intensity, np.zeros((8, 8), np.float32), region.astype(np.float32), region,
                          weights)
        assert scored["looks"] == pytest.approx((0.3, -0.5))
        assert scored["likeness"] == pytest.approx((weights[0] * 0.3 - weights[1] * 0.5) / max(sum(weights), 1))
        weighed = Candidate("anatomy", candidate.prior, 0.5, likeness=scored["likeness"], looks=scored["looks"])
        assert looks_unlike_weighed(_match(weights), weighed) is unlike
    # neither map separates on the query: "auto"'s rule
    assert looks_unlike_weighed(_match((0.0, 0.0)), candidate) is looks_unlike(_match(None), candidate)


def test_weighed_choice_weighs_each_support_by_the_query_and_finds_a_moved_structure(predictor):
    """With the real model: each match's weights are the two maps' separation on the query, E is made from the
    map that separates better, each map gives an appearance candidate, every decoded candidate's likeness is the
    weighed sum, and the supports' disc, registered onto plain texture, is found where it sits on the query."""
    assert "weighed" in CHOICES
    supports = [disc_scene((30, 30), 0, 20), disc_scene((34, 62), 4, 20)]
    query, truth = disc_scene((64, 60), 1, 35)
    segmenter = SupportSetSegmenter(predictor, locate="affine", appearance="prototype", choice="weighed")
    for i, (image, mask) in enumerate(supports):
        segmenter.add_support(image, mask, name=f"s{i}")
    result = segmenter.segment(query)
    for match, support in zip(result.matches, segmenter.supports, strict=True):
        assert informative(support.intensity)
        grey = grey_similarity(support.intensity, query.astype(np.float32))
        weights = (separation(match.similarity), separation(grey))
        assert match.look_weights == pytest.approx(weights, abs=1e-6)
        better = grey if weights[1] > weights[0] else match.similarity
        np.testing.assert_allclose(match.appearance, sigmoid(4 * better), atol=1e-5)
        # the anatomy candidate, then one appearance candidate per map that separates on the query
        assert [c.kind for c in match.candidates] == ["anatomy"] + ["appearance"] * (1 + (min(weights) > 0))
        for candidate in match.candidates:
            if candidate.probability is not None:
                expected = (weights[0] * candidate.looks[0] + weights[1] * candidate.looks[1]) / max(sum(weights), 1)
                assert candidate.likeness == pytest.approx(expected, abs=1e-5)
    assert dice(result.mask, truth) > 0.8
