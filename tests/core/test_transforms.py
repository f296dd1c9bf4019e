"""Preprocessing and coordinate transforms against segment-anything's own, and the torch-free contract."""

from __future__ import annotations

import numpy as np
import pytest

from gmiseg_edge.core.transforms import (
    PreprocessConfig,
    postprocess_logits,
    preprocess,
    resized_shape,
    scale_boxes,
    scale_coords,
)
from tests.conftest import reference
from tests.no_torch import run_without_torch

SAM = PreprocessConfig(input_size=1024, normalization="sam")
LITE = PreprocessConfig(input_size=256, normalization="minmax")


def _real_images() -> list[np.ndarray]:
    """Real slices of several sizes and aspect ratios (grey and colour)."""
    from gmiseg_edge.data.samples import load_sample_cases

    images = [case.image for case in load_sample_cases()]
    base = images[0]
    images += [base[:300, :], base[:, :137], base[17:, 5:401], np.dstack([base, base[::-1], base.T[: base.shape[0]]])]
    return images


@pytest.mark.parametrize("index", range(6))
def test_sam_preprocessing_equals_segment_anything(index):
    torch = pytest.importorskip("torch")
    from segment_anything.modeling import Sam
    from segment_anything.utils.transforms import ResizeLongestSide

    images = _real_images()
    image = images[index % len(images)] if index < len(images) else images[-1]
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    resized = ResizeLongestSide(1024).apply_image(rgb)
    x = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    sam = Sam.__new__(Sam)
    torch.nn.Module.__init__(sam)
    sam.register_buffer("pixel_mean", torch.tensor(SAM.pixel_mean).view(-1, 1, 1), False)
    sam.register_buffer("pixel_std", torch.tensor(SAM.pixel_std).view(-1, 1, 1), False)
    sam.image_encoder = type("E", (), {"img_size": 1024})()
    expected = sam.preprocess(x).numpy()
    ours = preprocess(image, SAM)
    assert ours.tensor.shape == expected.shape == (1, 3, 1024, 1024)
    assert ours.resized_size == resized.shape[:2]
    assert float(np.abs(ours.tensor - expected).max()) <= 1e-4


def test_coordinate_transforms_equal_segment_anything():
    pytest.importorskip("torch")
    from segment_anything.utils.transforms import ResizeLongestSide

    rng = np.random.default_rng(0)
    for shape in [(512, 512), (300, 512), (512, 137), (495, 396), (1, 7)]:
        points = rng.uniform(0, max(shape), size=(5, 2))
        boxes = rng.uniform(0, max(shape), size=(3, 4))
        sa = ResizeLongestSide(1024)
        np.testing.assert_allclose(scale_coords(points, shape, 1024), sa.apply_coords(points, shape), atol=1e-4)
        np.testing.assert_allclose(scale_boxes(boxes, shape, 1024), sa.apply_boxes(boxes, shape), atol=1e-4)
        assert resized_shape(*shape, 1024) == sa.get_preprocess_shape(*shape, 1024)


def test_lite_medsam_preprocessing_reproduces_upstream_input():
    case = reference("lung2_slice")
    expected = reference("lite_medsam")["input"]
    ours = preprocess(case["image"], LITE).tensor
    assert float(np.abs(ours - expected).max()) <= 1e-5


def test_minmax_pads_with_zeros_and_scales_to_unit_range():
    image = np.tile(np.arange(200, dtype=np.uint8), (100, 1))
    prepared = preprocess(image, LITE)
    h, w = prepared.resized_size
    assert (h, w) == (128, 256)
    assert prepared.tensor[..., :h, :w].min() == 0.0 and prepared.tensor[..., :h, :w].max() == 1.0
    assert not prepared.tensor[..., h:, :].any()


def test_postprocess_equals_segment_anything():
    """Within 1e-4 of Sam.postprocess_masks' steps evaluated in float64.

    PyTorch's float32 bilinear computes source positions in float32, which alone moves large upsamplings by
    up to ~3e-4 on logits of magnitude 20; our folded float64 matrices sit within ~3e-6 of the exact result.
    """
    torch = pytest.importorskip("torch")
    from torch.nn import functional as F

    rng = np.random.default_rng(1)
    low_res = rng.normal(size=(3, 256, 256)).astype(np.float32) * 5
    for shape in [(512, 512), (300, 512), (512, 137), (1000, 1400)]:
        prepared = preprocess(np.zeros(shape, np.uint8), SAM)
        h, w = prepared.resized_size
        ours = postprocess_logits(low_res, prepared, 1024)
        assert ours.shape == (3, *shape)
        for dtype, tolerance in [(torch.float64, 1e-4), (torch.float32, 5e-4)]:
            t = F.interpolate(torch.from_numpy(low_res).to(dtype)[None], (1024, 1024), mode="bilinear")
            t = F.interpolate(t[..., :h, :w], shape, mode="bilinear", align_corners=False)[0].numpy()
            assert float(np.abs(ours - t).max()) <= tolerance, (shape, dtype)


@pytest.mark.parametrize("input_size", [256, 1024])
@pytest.mark.parametrize("shape", [(512, 512), (7, 3), (1, 900), (2000, 1500), (255, 257)])
def test_banded_postprocess_equals_the_dense_folded_maps(shape, input_size):
    """The gathers of postprocess_logits give the dense float64 product rows @ logits @ cols.T (no BLAS)."""
    from gmiseg_edge.core.transforms import PreprocessConfig, linear_resize_matrix

    rng = np.random.default_rng(2)
    low_res = rng.normal(size=(2, 256, 256)) * 20
    prepared = preprocess(np.zeros(shape, np.uint8), PreprocessConfig(input_size=input_size))
    (h, w), (height, width) = prepared.resized_size, prepared.original_size
    rows = linear_resize_matrix(h, height) @ linear_resize_matrix(256, input_size)[:h]
    cols = linear_resize_matrix(w, width) @ linear_resize_matrix(256, input_size)[:w]
    dense = rows @ low_res @ cols.T
    ours = postprocess_logits(low_res.astype(np.float32), prepared, input_size)
    assert ours.shape == (2, *shape) and ours.dtype == np.float32
    assert float(np.abs(ours - dense).max()) <= 1e-4


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10), np.uint16), "uint8"),
        (np.zeros((10, 10), np.float32), "uint8"),
        (np.zeros((10, 10, 4), np.uint8), "shape"),
        (np.zeros((2, 10, 10, 3), np.uint8), "shape"),
        (np.zeros((0, 10), np.uint8), "empty"),
    ],
)
def test_bad_images_are_refused_with_a_clear_message(image, message):
    with pytest.raises(ValueError, match=message):
        preprocess(image, SAM, name="scan.png")


def test_preprocessing_works_without_torch():
    run_without_torch(
        """
        import numpy as np
        from gmiseg_edge.core.transforms import PreprocessConfig, preprocess, postprocess_logits
        from gmiseg_edge.models.zoo import get_spec
        prepared = preprocess(np.full((40, 60), 7, np.uint8), get_spec("lite_medsam").preprocess)
        assert prepared.tensor.shape == (1, 3, 256, 256)
        out = postprocess_logits(np.zeros((1, 256, 256), np.float32), prepared, 256)
        assert out.shape == (1, 40, 60)
        print("ok")
        """
    )


@pytest.mark.parametrize("shape", [(3000, 2000), (2048, 1024, 3), (1999, 3001, 3), (5000, 257)])
def test_banded_area_resize_equals_opencv_in_one_pass(shape):
    import cv2

    from gmiseg_edge.core.transforms import area_resize

    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    new_h, new_w = resized_shape(shape[0], shape[1], 256)
    expected = cv2.resize(image.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_AREA)
    assert np.array_equal(area_resize(image, new_h, new_w, band_bytes=1 << 16), expected)


@pytest.mark.parametrize("config", [SAM, LITE])
def test_grey_images_are_resized_as_one_channel_with_the_values_of_their_rgb_copy(config):
    image = np.random.default_rng(2).integers(0, 256, (700, 1100), dtype=np.uint8)
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    assert np.array_equal(preprocess(image, config).tensor, preprocess(rgb, config).tensor)


def test_images_above_the_pixel_limit_are_refused_before_any_copy():
    from gmiseg_edge.core.errors import InputError
    from gmiseg_edge.core.transforms import MAX_PIXELS

    side = int(MAX_PIXELS**0.5) + 1
    huge = np.broadcast_to(np.uint8(7), (side, side))  # no memory behind it: refused before it is copied
    with pytest.raises(InputError, match=rf"scan.png: {side} x {side} pixels .* above the limit of {MAX_PIXELS}"):
        preprocess(huge, LITE, name="scan.png")
