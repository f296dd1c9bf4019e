"""Overlay pictures as a clinician reads them: a volume's slice in the radiological view decided from its affine
(RAS and LPS files alike), square mm, at least 384 px on the short side, with a legend; on synthetic volumes whose
patient directions are known, and on the shipped CT."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gmiseg_edge.data.images import Volume
from gmiseg_edge.data.samples import load_sample_pair
from gmiseg_edge.data.slicing import slice_2d
from gmiseg_edge.jobs.overlays import (
    MIN_SIDE,
    image_view,
    label_picture,
    mask_picture,
    palette,
    volume_view,
    write_overlay,
)
from gmiseg_edge.jobs.overlays.tint import OUTLINE, TINT

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def volume(array: np.ndarray, affine: np.ndarray, space: str) -> Volume:
    """A volume as a reader returns it: ``affine`` in ``space`` ("RAS": a NIfTI file, else an LPS NRRD)."""
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    fmt, name = ("nifti", "RAS") if space == "RAS" else ("nrrd", "left-posterior-superior")
    return Volume(array, spacing, affine, Path(f"synthetic.{fmt}"), fmt, name, None)


def red_centroid(picture: np.ndarray) -> tuple[float, float]:
    """(row, col) of the tinted pixels (not the legend's box, pure red), as fractions of the picture's size."""
    red = (picture[..., 0] > 100) & (picture[..., 1] < 60) & (picture[..., 2] < 60) & ~np.all(picture == TINT, axis=2)
    rows, cols = np.nonzero(red)
    assert rows.size, "no tinted pixel in the picture"
    return rows.mean() / picture.shape[0], cols.mean() / picture.shape[1]


# RAS volume, voxel axes i -> patient's Right, j -> Anterior, k -> Superior (1 x 2 x 3 mm voxels)
RAS_AFFINE = np.array([[1.0, 0, 0, -20], [0, 2.0, 0, -30], [0, 0, 3.0, 0], [0, 0, 0, 1]])
SHAPE = (40, 30, 4)


def marker(i: slice, j: slice) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[i, j, :] = True
    return mask


def test_axial_slice_puts_the_patients_right_on_the_left_and_anterior_up():
    image = volume(np.zeros(SHAPE, np.int16), RAS_AFFINE, "RAS")
    view = volume_view(image, 2)
    assert view.plane == "axial" and view.edges == ("A", "P", "R", "L")
    # right + anterior: top left of the picture (the raw slice has it bottom right)
    right_anterior = marker(slice(32, 38), slice(22, 28))
    oriented = view.orient(slice_2d(right_anterior, 2, 1))
    rows, cols = np.nonzero(oriented)
    assert rows.max() < oriented.shape[0] / 2 and cols.max() < oriented.shape[1] / 2
    # through the whole picture (upscaled, legend drawn): right + posterior is bottom left, left + anterior top right
    pixels = np.full(SHAPE[:2][::-1], 90, np.uint8)
    row, col = red_centroid(mask_picture(pixels, slice_2d(marker(slice(32, 38), slice(2, 8)), 2, 1), view))
    assert row > 0.6 and col < 0.4
    row, col = red_centroid(mask_picture(pixels, slice_2d(marker(slice(2, 8), slice(22, 28)), 2, 1), view))
    assert row < 0.4 and col > 0.6


def test_an_lps_ordered_twin_and_a_transposed_twin_give_the_same_picture():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, SHAPE).astype(np.uint8)
    mask = marker(slice(30, 38), slice(20, 28))
    ras = volume(data, RAS_AFFINE, "RAS")
    # the same patient stored the other way round: i -> patient's Left, j -> Posterior (LPS +x, +y), in an LPS file
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [SHAPE[0] - 1, SHAPE[1] - 1]  # voxel (i, j) of the twin is voxel (n-1-i, n-1-j) of the original
    lps = volume(data[::-1, ::-1].copy(), RAS_TO_LPS @ RAS_AFFINE @ flip, "LPS")
    # and with i and j swapped (an anterior-first voxel order)
    swap = np.eye(4)[[1, 0, 2, 3]]
    swapped = volume(data.transpose(1, 0, 2).copy(), RAS_AFFINE @ swap, "RAS")
    twins = [(ras, mask), (lps, mask[::-1, ::-1]), (swapped, mask.transpose(1, 0, 2))]
    pictures = [mask_picture(slice_2d(v.array, 2, 2), slice_2d(m, 2, 2), volume_view(v, 2), "liver", 0.9)
                for v, m in twins]
    assert volume_view(swapped, 2).transpose and not volume_view(ras, 2).transpose
    for picture in pictures[1:]:
        np.testing.assert_array_equal(picture, pictures[0])


def test_coronal_and_sagittal_slices_are_shown_superior_up():
    # voxel axes (Right, Superior, Anterior): slices along k are coronal; right + superior -> top left
    coronal = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    view = volume_view(volume(np.zeros(SHAPE, np.int16), coronal, "RAS"), 2)
    assert view.plane == "coronal" and view.edges == ("S", "I", "R", "L")
    rows, cols = np.nonzero(view.orient(slice_2d(marker(slice(32, 38), slice(22, 28)), 2, 0)))
    assert rows.max() < 15 and cols.max() < 20
    # voxel axes (Anterior, Superior, Right): slices along k are sagittal; anterior + superior -> top left
    sagittal = np.array([[0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    view = volume_view(volume(np.zeros(SHAPE, np.int16), sagittal, "RAS"), 2)
    assert view.plane == "sagittal" and view.edges == ("S", "I", "A", "P")
    rows, cols = np.nonzero(view.orient(slice_2d(marker(slice(32, 38), slice(22, 28)), 2, 0)))
    assert rows.max() < 15 and cols.max() < 20


def test_pictures_are_square_mm_and_at_least_384_px_on_the_short_side():
    view = volume_view(volume(np.zeros(SHAPE, np.int16), RAS_AFFINE, "RAS"), 2)
    # 40 columns of 1 mm, 30 rows of 2 mm: 60 x 40 mm, shown 384 px tall at 2:3
    picture = mask_picture(np.zeros(SHAPE[:2][::-1], np.uint8), np.zeros(SHAPE[:2][::-1], bool), view)
    assert min(picture.shape[:2]) >= MIN_SIDE
    assert picture.shape[1] / picture.shape[0] == pytest.approx(40 / 60, abs=0.01)
    small = label_picture(np.zeros((101, 122), np.uint8), np.zeros((101, 122), np.uint8))
    assert small.shape[:2] == (384, 464)  # a 2D image keeps its orientation and proportions
    assert label_picture(np.zeros((512, 600), np.uint8), np.zeros((512, 600), np.uint8)).shape[:2] == (512, 600)


def test_the_outline_stays_one_crisp_line_after_upscaling():
    mask = np.zeros((60, 60), bool)
    mask[20:40, 20:40] = True
    picture = mask_picture(np.zeros((60, 60), np.uint8), mask, name="")
    yellow = np.all(picture == OUTLINE, axis=2)
    row = yellow[picture.shape[0] // 2]  # a line through the square: two 1-px contour crossings
    assert np.count_nonzero(row) == 2


def test_the_legend_names_the_structure_with_its_colour_and_dice():
    grey = np.full((100, 100), 128, np.uint8)
    mask = np.zeros((100, 100), bool)
    mask[60:80, 60:80] = True
    with_dice = mask_picture(grey, mask, name="liver", dice=0.93)
    corner = with_dice[:40, :200]
    assert np.any(np.all(corner == TINT, axis=2)), "no legend colour box in the top-left corner"
    assert np.any(np.all(corner == OUTLINE, axis=2)), "the legend box has no outline colour"
    assert np.count_nonzero(np.all(corner > 200, axis=2)) > 50, "no legend text"
    name_only = mask_picture(grey, mask, name="liver")
    assert np.count_nonzero(np.any(with_dice != name_only, axis=2)) > 100  # "Dice 0.93" drawn
    # a label map: each object's own colour in the legend
    labels = np.zeros((100, 100), np.uint8)
    labels[10:30, 60:80], labels[60:80, 10:30] = 1, 2
    picture = label_picture(grey, labels, name="nucleus")
    colours = palette(2)
    for k in (1, 2):
        assert np.any(np.all(picture[:60, :40] == colours[k], axis=2)), f"no legend box for object {k}"


def test_the_shipped_ct_slice_is_radiological(tmp_path):
    image, labels = load_sample_pair("totalseg_abdomen")
    liver = labels.array == 5
    k = int(np.argmax(liver.sum(axis=(0, 1))))
    pixels = np.clip((slice_2d(image.array, 2, k).astype(np.float32) + 160) / 400 * 255, 0, 255).astype(np.uint8)
    path = write_overlay(tmp_path / "ct.png", pixels, slice_2d(liver, 2, k), volume_view(image, 2), "liver", 1.0)
    picture = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert min(picture.shape[:2]) >= MIN_SIDE
    _, col = red_centroid(picture)
    assert col < 0.5, "the liver (patient's right) is not on the image's left"


def test_a_2d_image_keeps_its_orientation():
    view = image_view()
    array = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(view.orient(array), array)
    assert view.edges is None


def test_a_dicom_series_of_the_shipped_ct_gives_the_nifti_picture(tmp_path):
    from gmiseg_edge.data import read_image
    from gmiseg_edge.data.intensity import to_uint8
    from gmiseg_edge.data.sample_dicom import SAMPLE_SERIES_CROP, write_sample_series

    _, labels_path = write_sample_series(tmp_path / "ct")  # slices 12..17 of the NIfTI, its label map beside it
    series, series_labels = read_image(tmp_path / "ct"), read_image(labels_path)
    nifti, labels = load_sample_pair("totalseg_abdomen")
    assert series.format == "dicom" and series.space.upper() != "RAS"
    k = 3
    pictures = [mask_picture(to_uint8(slice_2d(image.array, 2, index), "abdomen"),
                             slice_2d(label_map.array == 5, 2, index), volume_view(image, 2), "liver")
                for image, label_map, index in ((series, series_labels, k),
                                                (nifti, labels, SAMPLE_SERIES_CROP[2].start + k))]
    np.testing.assert_array_equal(pictures[0], pictures[1])
