"""The support-set segmenter's strategies chosen by name (runtime.support.segmenter.STRATEGIES): an unknown name is
a ValueError listing the known ones, and every named strategy runs and does what its name says. Real ONNX Runtime
and SimpleITK on a small phantom (the query a shifted, rotated copy of two supports)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime.support.segmenter import STRATEGIES, SupportSetSegmenter


def _scene(shift: tuple[int, int], angle: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 96 x 96 textured phantom with a bright ellipse (the structure) and a dark disc, moved as asked."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.normal(70, 20, (96, 96)).astype(np.float32), (0, 0), 2)
    cv2.circle(image, (30, 64), 9, 20, -1)
    cv2.ellipse(image, (50, 42), (16, 10), 15, 0, 360, 200, -1)
    mask = np.zeros((96, 96), np.uint8)
    cv2.ellipse(mask, (50, 42), (16, 10), 15, 0, 360, 1, -1)
    move = cv2.getRotationMatrix2D((48, 48), angle, 1.0)
    move[:, 2] += shift
    image = cv2.warpAffine(image, move, (96, 96), borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpAffine(mask, move, (96, 96), flags=cv2.INTER_NEAREST)
    return np.clip(image, 0, 255).astype(np.uint8), mask.astype(bool)


@pytest.fixture(scope="module")
def scenes():
    return [_scene((0, 0), 0, 0), _scene((4, -3), 8, 1)], _scene((-5, 4), -6, 2)


def test_an_unknown_strategy_name_lists_the_known_ones(predictor):
    for step, registry in STRATEGIES.items():
        known = ", ".join(registry)
        with pytest.raises(ValueError, match=rf"{step} must be one of {known} \(the known {step} strategies\), "
                                             r"got 'nearest'"):
            SupportSetSegmenter(predictor, **{step: "nearest"})
    with pytest.raises(ValueError, match="not both"):
        SupportSetSegmenter(predictor, locate="affine", register_supports=False)
    assert SupportSetSegmenter(predictor, deformable=False).locate_method == "affine"
    assert SupportSetSegmenter(predictor, register_supports=False).locate_method == "appearance"


def _run(predictor, scenes, **options):
    supports, (query, truth) = scenes
    # the B-spline stage and the probe's fit (3 s a support set here) only in their own steps' runs (CI time)
    options = {"locate": "affine", "appearance": "prototype"} | options
    segmenter = SupportSetSegmenter(predictor, **options)
    for i, (image, mask) in enumerate(supports):
        segmenter.add_support(image, mask, name=f"s{i}")
    result = segmenter.segment(query)
    assert result.mask.shape == truth.shape and len(result.matches) == 2
    return segmenter, result, truth


@pytest.mark.parametrize("step", sorted(STRATEGIES))
def test_every_named_strategy_runs_and_does_what_it_says(predictor, scenes, step):
    for name in STRATEGIES[step]:
        segmenter, result, truth = _run(predictor, scenes, **{step: name})
        matches = result.matches
        if step == "locate":
            assert all((m.anatomy is None) == (name == "appearance") for m in matches)
            if name != "appearance":
                assert all(("bspline" in m.registration.stages) == (name == "deformable") for m in matches)
                assert dice(result.mask, truth) > 0.8, name  # the registration carries the mask onto the query
        elif step == "appearance":
            models = segmenter.appearance_models()
            prototypes = [np.allclose(m.direction, s.foreground - s.background, atol=1e-6)
                          for m, s in zip(models, segmenter.supports, strict=True)]
            assert all(prototypes) == (name == "prototype"), name  # two supports: "auto" fits the probe
            assert dice(result.mask, truth) > 0.8, name
        elif step == "choice":
            kinds = [[c.kind for c in m.candidates] for m in matches]
            if name == "anatomy":
                assert kinds == [["anatomy"]] * 2 and all(m.chosen == "anatomy" for m in matches)
            elif name == "appearance":
                assert kinds == [["appearance", "anatomy"]] * 2 and all(m.chosen == "appearance" for m in matches)
            elif name == "weighed":  # each map (embedding, grey levels) that separates on the query gives one
                assert all(k[0] == "anatomy" and k[1:] in (["appearance"], ["appearance"] * 2) for k in kinds)
            else:
                assert kinds == [["anatomy", "appearance"]] * 2
            if name != "appearance":
                assert dice(result.mask, truth) > 0.8, name
        else:
            for m in matches:
                decoded = m.candidates[0]
                if name == "prior":
                    assert m.sam_probability is None and m.iou == 0.0
                    np.testing.assert_array_equal(m.probability, decoded.prior)
                elif name == "sam":
                    np.testing.assert_array_equal(m.probability, m.sam_probability)
                else:
                    np.testing.assert_array_equal(m.probability, ((m.sam_probability + m.prior) / 2)
                                                  .astype(np.float32))
            assert dice(result.mask, truth) > 0.8, name
