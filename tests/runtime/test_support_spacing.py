"""Support sets in millimetres: the pixel spacing each support and query carries is used (registration in the
physical frame), the default is stated, and bad input (a bad spacing, CT supports on an MR query) is a clear
error. Real SimpleITK, real ONNX Runtime on a real CT scan resampled to two pixel sizes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gmiseg_edge.core.selection import spread
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import InputError, SupportSetSegmenter
from gmiseg_edge.runtime.registration import register
from gmiseg_edge.runtime.support.modality import intensity_kind
from gmiseg_edge.runtime.support.spacing import DEFAULT_SPACING, pixel_spacing, slice_spacing


def test_the_default_spacing_is_1_mm_and_bad_spacings_are_refused():
    assert DEFAULT_SPACING == (1.0, 1.0) and pixel_spacing(None) == (1.0, 1.0)
    assert pixel_spacing(0.8) == (0.8, 0.8) and pixel_spacing((0.7, 0.9)) == (0.7, 0.9)
    assert slice_spacing((5.0, 0.7, 0.9), axis=0) == (0.7, 0.9) and slice_spacing(2.0, axis=2) == (2.0, 2.0)
    for bad in (0.0, -1.0, (1.0, np.nan), (1.0, 2.0, 3.0)):
        with pytest.raises(InputError, match="query slice: spacing must be one or two positive numbers"):
            pixel_spacing(bad, name="query slice")
    with pytest.raises(InputError, match="ct: spacing of a volume must be one or three"):
        slice_spacing((1.0, 1.0), axis=0, name="ct")


def _phantom(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured 'body' of ``size`` mm at 1 mm per pixel, with an 'organ' (its mask returned too)."""
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.normal(60, 20, (size, size)).astype(np.float32), (0, 0), 4)
    centre = size // 2
    cv2.ellipse(image, (centre, centre), (int(size * 0.4), int(size * 0.3)), 0, 0, 360, 120, -1)
    cv2.ellipse(image, (int(size * 0.62), int(size * 0.42)), (int(size * 0.1), int(size * 0.07)), 15, 0, 360, 210, -1)
    cv2.circle(image, (int(size * 0.35), int(size * 0.6)), int(size * 0.06), 30, -1)
    organ = cv2.ellipse(np.zeros((size, size), np.uint8), (int(size * 0.62), int(size * 0.42)),
                        (int(size * 0.1), int(size * 0.07)), 15, 0, 360, 1, -1) > 0
    return np.clip(image, 0, 255).astype(np.uint8), organ


def _resample(image: np.ndarray, mask: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and ``mask`` with pixels ``factor`` times larger (area when shrinking, linear when enlarging)."""
    size = (round(image.shape[1] / factor), round(image.shape[0] / factor))
    method = cv2.INTER_AREA if factor > 1 else cv2.INTER_LINEAR
    return (cv2.resize(image, size, interpolation=method),
            cv2.resize(mask.astype(np.float32), size, interpolation=method) > 0.5)


def test_registration_meets_a_3_mm_support_on_a_0_8_mm_query_in_millimetres():
    image, organ = _phantom(240)
    support, support_mask = _resample(image, organ, 3.0)  # 80 px at 3 mm
    query, query_mask = _resample(image, organ, 0.8)  # 300 px at 0.8 mm
    result = register(query, support, fixed_spacing=(0.8, 0.8), moving_spacing=(3.0, 3.0))
    assert result.ok, result.message
    assert 0.9 < result.scale < 1.1  # the same body: scale 1 in mm, not the 3.75 of the pixel frame
    warped = result.warp(support_mask.astype(np.float32))
    assert warped.shape == query.shape
    assert dice(warped > 0.5, query_mask) > 0.85
    # in pixels the two are 3.75x apart, beyond the similarity stage's scale limits: it settles near scale 1 on
    # a part of the query, and the organ lands elsewhere
    unstated = register(query, support)
    assert not unstated.ok or dice(unstated.warp(support_mask.astype(np.float32)) > 0.5, query_mask) < 0.5


def test_a_real_scan_at_3_mm_and_at_0_8_mm_gives_a_comparable_mask(predictor):
    from gmiseg_edge.data import load_sample_cases

    cases = load_sample_cases(["totalseg_abdomen"], slices="all", labels=["liver"])
    assert cases[0].spacing == (3.0, 3.0)
    query = max(cases, key=lambda c: int(c.mask.sum()))
    supports = spread([c for c in cases if abs(c.slice_index - query.slice_index) >= 3], 3)
    segmenter = SupportSetSegmenter(predictor)
    for case in supports:
        segmenter.add_support(case.image, case.mask, name=f"slice {case.slice_index}", spacing=case.spacing)
    equal = segmenter.segment(query.image, spacing=3.0)
    fine_image, _ = _resample(query.image, query.mask, 0.8 / 3.0)  # the same slice at 0.8 mm: 3.75x the pixels
    fine = segmenter.segment(fine_image, spacing=0.8)
    assert all(m.registration is not None and m.registration.ok for m in fine.matches)
    back = cv2.resize(fine.probability, query.mask.shape[::-1], interpolation=cv2.INTER_AREA) > 0.5
    equal_dice, fine_dice = dice(equal.mask, query.mask), dice(back, query.mask)
    # tolerance: the 0.8 mm query is an interpolated image (the encoder sees other textures and edges) and its
    # mask is scored after area-downsampling back to 3 mm; half a 3 mm pixel of shift along a liver's outline
    # costs about 0.03 Dice, so 0.05 allows one such shift and some texture change, not a lost registration
    assert equal_dice > 0.85 and fine_dice > equal_dice - 0.05, (equal_dice, fine_dice)
    assert dice(back, equal.mask) > 0.9
    assert all(0.7 < m.registration.scale < 1.4 for m in fine.matches)  # one body: scale 1 in mm
    # without the spacing the query is 3.75x the supports' pixel size, beyond registration's scale limits
    unstated = segmenter.segment(fine_image)
    unstated_back = cv2.resize(unstated.probability, query.mask.shape[::-1], interpolation=cv2.INTER_AREA) > 0.5
    assert dice(unstated_back, query.mask) < fine_dice, (dice(unstated_back, query.mask), fine_dice,
                                                         [m.registration.message for m in unstated.matches])


def test_ct_supports_on_an_mr_query_are_refused_by_name(predictor):
    ct = np.full((96, 96), -1000, np.int16)  # air around a body in Hounsfield units
    cv2.circle(ct, (48, 48), 36, 40, -1)
    cv2.circle(ct, (60, 40), 10, 140, -1)
    organ = cv2.circle(np.zeros((96, 96), np.uint8), (60, 40), 10, 1, -1) > 0
    mr = (np.clip(ct.astype(np.float32) + 1000, 0, None) * 3).astype(np.uint16)  # non-negative MR-like counts
    assert intensity_kind(ct) == "CT" and intensity_kind(mr) == "not CT" and intensity_kind(ct.astype(np.uint8)) is None
    segmenter = SupportSetSegmenter(predictor, window="percentile")
    segmenter.add_support(ct, organ, name="ct slice 4")
    runs = predictor.stats.encoder_runs
    with pytest.raises(InputError, match=r"query image holds non-CT .* support\(s\) ct slice 4 hold CT"):
        segmenter.segment(mr)
    with pytest.raises(InputError, match=r"support mr slice holds non-CT .* support\(s\) ct slice 4 hold CT"):
        segmenter.add_support(mr, organ, name="mr slice")
    # uint8 images no longer say where they came from: the caller states it
    uint8 = SupportSetSegmenter(predictor)
    uint8.add_support(np.clip(ct / 4 + 128, 0, 255).astype(np.uint8), organ, name="windowed ct", modality="CT")
    with pytest.raises(InputError, match=r"query image holds non-CT"):
        uint8.segment(np.clip(mr / 16, 0, 255).astype(np.uint8), modality="MR")
    assert predictor.stats.encoder_runs - runs <= 1  # refused before encoding (the one run: the windowed support)


def test_spacing_errors_and_mixed_supports_name_the_input(predictor):
    segmenter = SupportSetSegmenter(predictor)
    image = np.zeros((64, 64), np.uint8)
    image[20:40, 20:40] = 200
    with pytest.raises(InputError, match="tiny: spacing must be one or two positive numbers"):
        segmenter.add_support(image, image > 0, name="tiny", spacing=(0.0, 1.0))
    with pytest.raises(InputError, match="blank mask is empty"):
        segmenter.add_support(image, np.zeros((64, 64), bool), name="blank", spacing=1.0)
    segmenter.add_support(image, image > 0, name="slice", spacing=(0.5, 0.5))
    with pytest.raises(InputError, match="vol: a 3D support cannot join a support set of 2D images"):
        segmenter.add_support(np.stack([image] * 3), np.stack([image > 0] * 3), name="vol", spacing=(3.0, 0.5, 0.5))
    with pytest.raises(InputError, match="query image: spacing must be"):
        segmenter.segment(image, spacing=(1.0, -1.0))
    assert segmenter.supports[0].spacing == (0.5, 0.5)
