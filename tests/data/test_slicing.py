"""3D to 2D slicing: orientation, spacing, labelled / largest / middle slices, label selection."""

from __future__ import annotations

import nrrd
import numpy as np
import pytest

from gmiseg_edge.data import (
    DataError,
    extract_slices,
    instance_masks,
    label_values,
    labelled_indices,
    largest_index,
    load_sample_pair,
    middle_indices,
    require_nonempty,
    select_label,
    slice_2d,
    slice_spacing,
    volume_slices,
)


@pytest.fixture(scope="module")
def breast():
    return load_sample_pair("breast1")


@pytest.fixture(scope="module")
def abdomen():
    return load_sample_pair("totalseg_abdomen")


def test_slice_is_rows_by_columns(breast):
    image, _ = breast
    raw, _ = nrrd.read(str(image.path))  # (x, y, z) = (45, 120, 21)
    plane = slice_2d(image.array, 2, 9)
    assert plane.shape == (120, 45)  # rows = y, columns = x
    assert np.array_equal(plane, raw[:, :, 9].T)
    assert plane[7, 3] == raw[3, 7, 9]
    assert slice_2d(image.array, 0, 10).shape == (21, 120)  # (k, j)
    assert slice_2d(image.array, 1, 10).shape == (21, 45)  # (k, i)


def test_slice_spacing_is_row_col(breast):
    image, _ = breast
    sx, sy, sz = image.spacing
    assert slice_spacing(image.spacing, 2) == (sy, sx)
    assert slice_spacing(image.spacing, 0) == (sz, sy)
    assert slice_spacing(image.spacing, 1) == (sz, sx)


def test_slice_bad_axis_and_index(breast):
    image, _ = breast
    with pytest.raises(ValueError, match="axis"):
        slice_2d(image.array, 3, 0)
    with pytest.raises(IndexError, match="outside"):
        slice_2d(image.array, 2, 21)


def test_labelled_largest_and_middle_on_real_label(breast):
    _, labels = breast
    mask = labels.array > 0
    assert labelled_indices(mask, 2) == [8, 9, 10]
    areas = [int(mask[:, :, k].sum()) for k in (8, 9, 10)]
    assert areas == [21, 82, 40]
    assert largest_index(mask, 2) == 9
    extents = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    assert middle_indices(mask) == tuple((int(e[0]) + int(e[-1])) // 2 for e in extents)


def test_middle_of_split_label_is_nearest_labelled_slice():
    mask = np.zeros((4, 4, 11), dtype=bool)
    mask[1:3, 1:3, [1, 2, 9]] = True  # extent 1..9, middle 5 is empty
    middle = middle_indices(mask)
    assert middle[2] == 2  # nearest labelled slice to 5 (2 is 3 away, 9 is 4 away)
    assert mask[:, :, middle[2]].any()


def test_extract_slices_modes(abdomen):
    image, labels = abdomen
    liver = select_label(labels.array, 5, path=labels.path)
    every = extract_slices(image.array, liver, image.spacing, mode="labelled")
    assert [s.index for s in every] == labelled_indices(liver, 2)
    assert all(s.mask.any() and s.mask.dtype == bool for s in every)
    assert all(s.image.dtype == np.int16 and s.image.shape == (101, 122) for s in every)
    largest = extract_slices(image.array, liver, image.spacing, mode="largest")
    assert len(largest) == 1 and largest[0].mask.sum() == max(s.mask.sum() for s in every)
    middle = extract_slices(image.array, liver, image.spacing, mode="middle")
    assert [s.axis for s in middle] == [0, 1, 2]
    assert [s.index for s in middle] == list(middle_indices(liver))
    assert middle[0].image.shape == (30, 101) and middle[0].spacing == (3.0, 3.0)
    with pytest.raises(ValueError, match="mode"):
        extract_slices(image.array, liver, image.spacing, mode="random")


def test_select_label_binary_and_errors(abdomen):
    _, labels = abdomen
    present = label_values(labels.array)
    assert {1, 2, 3, 5} <= set(present) and 0 not in present
    spleen = select_label(labels.array, 1)
    assert spleen.dtype == bool and np.array_equal(spleen, labels.array == 1)
    with pytest.raises(DataError, match="label 12 is not present") as exc:
        select_label(labels.array, 12, path=labels.path)
    message = str(exc.value)
    assert str(labels.path) in message and str(present) in message


def test_empty_mask_errors(breast, tmp_path):
    _, labels = breast
    empty = labels.array * 0
    with pytest.raises(DataError, match="empty") as exc:
        select_label(empty, None, path=labels.path)
    assert str(labels.path) in str(exc.value)
    with pytest.raises(DataError, match="labels present: none") as exc:
        select_label(empty, 1, path=labels.path)
    assert str(labels.path) in str(exc.value)


def test_volume_slices_names_files(breast, abdomen):
    image, labels = breast
    slices = volume_slices(image, labels, 1, mode="labelled")
    assert [s.index for s in slices] == [8, 9, 10]
    with pytest.raises(DataError, match="does not match") as exc:
        volume_slices(image, abdomen[1], 1)
    assert str(abdomen[1].path) in str(exc.value) and str(image.path) in str(exc.value)
    with pytest.raises(DataError, match="not present") as exc:
        volume_slices(image, labels, 2)
    assert str(labels.path) in str(exc.value)


def test_require_nonempty_and_instances(breast):
    _, labels = breast
    mask = labels.array > 0
    assert require_nonempty(mask, labels.path) is mask
    with pytest.raises(DataError, match="lesion mask is empty") as exc:
        require_nonempty(mask[:, :, :3], labels.path, what="lesion mask")
    assert str(labels.path) in str(exc.value)
    assert list(instance_masks(labels.array)) == [1]
    with pytest.raises(DataError, match="no instance") as exc:
        instance_masks(labels.array * 0, path=labels.path)
    assert str(labels.path) in str(exc.value)
