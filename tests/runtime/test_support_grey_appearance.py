"""The appearance map E with the support's grey levels (runtime.support.appearance.joint_look, issue 24; the option
grey_appearance=True, not the default): where a support's grey levels are informative, E = sigmoid(4 (z + z_grey)
/ 2), so a structure the encoder's cells do not carry across patients can still be found by its grey levels.
Real ONNX Runtime (the exported lite_medsam) and SimpleITK on a small phantom: the query's bright structure sits
elsewhere than the support's, on another texture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gmiseg_edge.runtime.support.appearance import grey_similarity, informative, joint_look, sigmoid
from gmiseg_edge.runtime.support.segmenter import SupportSetSegmenter
from gmiseg_edge.runtime.support.supports import IntensityModel
from tests.runtime.phantoms import disc_scene


def _ring(mask: np.ndarray, width: int = 6) -> np.ndarray:
    return (cv2.dilate(mask.astype(np.uint8), np.ones((2 * width + 1,) * 2, np.uint8)) > 0) & ~mask


def test_grey_similarity_is_plus_on_the_structure_and_minus_on_its_ring_on_another_image():
    support, support_mask = disc_scene((30, 30), 0, 20)
    query, query_mask = disc_scene((64, 60), 1, 20)
    model = IntensityModel.of(support, support_mask, 6)
    assert model is not None and informative(model)
    z = grey_similarity(model, query.astype(np.float32))
    assert z.shape == query.shape and z.dtype == np.float32
    inside = cv2.erode(query_mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0  # past the smoothing
    assert z[inside].mean() > 0.3
    assert z[_ring(query_mask)].mean() < 0.0
    assert z[inside].mean() - z[~cv2.dilate(query_mask.astype(np.uint8), np.ones((9, 9))).astype(bool)].mean() > 0.7


def test_joint_look_averages_only_informative_grey_levels():
    support, support_mask = disc_scene((30, 30), 0, 20)
    query = disc_scene((64, 60), 1, 20)[0].astype(np.float32)
    z = np.random.default_rng(3).normal(0, 1, query.shape).astype(np.float32)
    model = IntensityModel.of(support, support_mask, 6)
    np.testing.assert_allclose(joint_look(z, model, query), (z + grey_similarity(model, query)) / 2, atol=1e-6)
    assert joint_look(z, model, None) is z  # no query pixels (an EncodedImage query): the embedding alone
    assert joint_look(z, None, query) is z
    flat = IntensityModel(model.ratio, model.middle, 0.5)  # contrast below MIN_INTENSITY_CONTRAST: uninformative
    assert joint_look(z, flat, query) is z


@pytest.fixture(scope="module")
def phantom():
    supports = [disc_scene((30, 30), 0, 20), disc_scene((34, 62), 4, 20)]
    return supports, disc_scene((64, 60), 1, 35)


def _match(predictor, phantom, grey: bool):
    supports, (query, _) = phantom
    segmenter = SupportSetSegmenter(predictor, locate="affine", grey_appearance=grey)
    for i, (image, mask) in enumerate(supports):
        segmenter.add_support(image, mask, name=f"s{i}")
    encoded = predictor.encode(query)
    return [segmenter.match(encoded, query, s) for s in segmenter.supports], segmenter


def test_the_segmenter_builds_e_from_the_embedding_and_the_grey_levels(predictor, phantom):
    """E is exactly sigmoid(4 (z + z_grey) / 2) with grey_appearance=True, sigmoid(4 z) without (the default); the
    match's similarity stays the embedding's z either way (the choice's likeness reads it)."""
    (query, truth) = phantom[1]
    with_grey, segmenter = _match(predictor, phantom, True)
    without, _ = _match(predictor, phantom, False)
    assert SupportSetSegmenter(predictor).grey_appearance is False
    for joint, alone, support in zip(with_grey, without, segmenter.supports, strict=True):
        assert informative(support.intensity)
        np.testing.assert_array_equal(joint.similarity, alone.similarity)
        np.testing.assert_allclose(alone.appearance, sigmoid(4 * alone.similarity), atol=1e-6)
        expected = sigmoid(4 * (alone.similarity + grey_similarity(support.intensity, query.astype(np.float32))) / 2)
        np.testing.assert_allclose(joint.appearance, expected, atol=1e-6)
        # the joint map still finds the query's structure, moved and on another texture
        assert joint.appearance[truth].mean() > 0.6 and joint.appearance[~truth].mean() < 0.3
