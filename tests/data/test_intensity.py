"""Windows (intensities to uint8): CT presets, custom (low, high), percentiles, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from gmiseg_edge.data import (
    WINDOWS,
    DataError,
    apply_window,
    load_sample_pair,
    parse_window,
    percentile_to_uint8,
    rescale_to_uint8,
    slice_2d,
    to_uint8,
    window_from_width_level,
    window_range,
)


@pytest.fixture(scope="module")
def ct_slice() -> np.ndarray:
    image, _ = load_sample_pair("lung2")
    return slice_2d(image.array, 2, 7)


@pytest.mark.parametrize(
    ("name", "window"),
    [
        ("lung", (-1350, 150)),
        ("abdomen", (-160, 240)),
        ("soft_tissue", (-160, 240)),
        ("liver", (-45, 105)),
        ("brain", (0, 80)),
        ("bone", (-500, 1300)),
    ],
)
def test_presets(name: str, window: tuple[float, float]):
    assert WINDOWS[name] == window
    assert window_range(name.upper()) == window


def test_width_level():
    assert window_from_width_level(1500, -600) == (-1350, 150)
    with pytest.raises(ValueError, match="width"):
        window_from_width_level(0, 40)


def test_window_maps_ends_and_truncates():
    hu = np.array([-2000, -1350, -1349, -600, 149, 150, 3000], dtype=np.int16)
    out = apply_window(hu, "lung")
    assert out.dtype == np.uint8
    # floor(255 * (x + 1350) / 1500): -1349 -> 0.17 -> 0, -600 -> 127.5 -> 127, 149 -> 254.83 -> 254
    assert out.tolist() == [0, 0, 0, 127, 254, 255, 255]


def test_window_on_real_ct(ct_slice: np.ndarray):
    out = apply_window(ct_slice, "lung")
    assert out.shape == ct_slice.shape and out.dtype == np.uint8
    expected = np.floor((np.clip(ct_slice.astype(np.float64), -1350, 150) + 1350) / 1500 * 255)
    assert np.array_equal(out, expected.astype(np.uint8))
    custom = apply_window(ct_slice, (-1350.0, 150.0))
    assert np.array_equal(custom, out)
    assert np.array_equal(rescale_to_uint8(ct_slice, *window_range("lung")), out)


def test_bad_windows():
    with pytest.raises(ValueError, match=r"unknown window 'lungs'.*lung"):
        window_range("lungs")
    with pytest.raises(ValueError, match="low < high"):
        window_range((100, 100))
    with pytest.raises(ValueError, match="finite"):
        window_range((float("nan"), 1))


def test_percentile_clips_outliers():
    image, _ = load_sample_pair("dsb_nuclei")
    out = percentile_to_uint8(image.array)
    low, high = np.percentile(image.array, [0.5, 99.5])
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.all(out[image.array >= high] == 255) and np.all(out[image.array <= low] == 0)
    assert np.array_equal(apply_window(image.array), out)
    full = apply_window(image.array, "minmax")
    assert full[image.array == image.array.max()].min() == 255


def test_constant_images_give_zeros_not_nan():
    for image in (np.full((8, 9), 7, np.int16), np.full((4, 4), 3.5, np.float32), np.zeros((3, 3, 3))):
        out = percentile_to_uint8(image)
        assert out.dtype == np.uint8 and not out.any()
        assert not apply_window(image, "minmax").any()


def test_sparse_image_falls_back_to_minmax():
    image = np.zeros((100, 100), np.uint16)
    image[0, :3] = 1000  # 0.03 % bright pixels: the 0.5 and 99.5 percentiles are both 0
    out = percentile_to_uint8(image)
    assert out.max() == 255 and out[1:].max() == 0


def test_nan_and_bad_percentiles():
    image = np.ones((5, 5), np.float32)
    image[0, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN"):
        percentile_to_uint8(image)
    with pytest.raises(ValueError, match="percentiles"):
        percentile_to_uint8(np.ones((3, 3)), 99, 1)


def test_to_uint8_keeps_uint8_and_names_the_file_on_a_bad_window(ct_slice: np.ndarray):
    photo = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_uint8(photo, "lung") is photo  # uint8 is used as it is, whatever the window
    assert np.array_equal(to_uint8(ct_slice, "lung"), apply_window(ct_slice, "lung"))
    with pytest.raises(DataError, match=r"ct\.nrrd: cannot apply the window 'lungs'"):
        to_uint8(ct_slice, "lungs", "ct.nrrd")


def test_parse_window():
    assert parse_window("abdomen") == "abdomen" and parse_window("percentile") == "percentile"
    assert parse_window("-160,240") == (-160.0, 240.0)
    with pytest.raises(ValueError, match="low,high"):
        parse_window("1,x")
