"""save_like: a mask written with the geometry of its image, read back identical."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest

from gmiseg_edge.data import DataError, load_sample_pair, read_image_2d, read_mask, read_volume, save_like


def test_nifti_keeps_affine_and_header(tmp_path: Path):
    image, labels = load_sample_pair("totalseg_abdomen")
    liver = labels.array == 5
    out = save_like(image, liver, tmp_path / "liver.nii.gz")
    back = read_volume(out)
    assert back.array.dtype == np.uint8 and np.array_equal(back.array, liver)
    assert np.allclose(back.affine, image.affine) and back.spacing == image.spacing
    written = nib.load(str(out)).header
    assert written.get_intent()[0] == "label"
    assert written["qform_code"] == image.header["qform_code"]
    assert written["sform_code"] == image.header["sform_code"]


def test_nifti_uncompressed_and_multilabel(tmp_path: Path):
    image, labels = load_sample_pair("totalseg_abdomen")
    out = save_like(image, labels.array.astype(np.int64), tmp_path / "labels.nii")
    assert np.array_equal(read_mask(out).array, labels.array)


def test_nrrd_keeps_space_directions_and_origin(tmp_path: Path):
    image, labels = load_sample_pair("lung2")
    out = save_like(image, labels.array > 0, tmp_path / "lesion.nrrd")
    data, header = nrrd.read(str(out))
    assert data.dtype == np.uint8 and np.array_equal(data, labels.array > 0)
    assert header["space"] == image.header["space"]
    assert np.allclose(header["space directions"], image.header["space directions"])
    assert np.allclose(header["space origin"], image.header["space origin"])
    assert np.allclose(read_volume(out).affine, image.affine)


def test_png_bool_is_0_255_and_labels_keep_values(tmp_path: Path):
    image, labels = load_sample_pair("dsb_nuclei")
    out = save_like(image, labels.array > 0, tmp_path / "fg.png")
    assert set(np.unique(read_image_2d(out).array).tolist()) == {0, 255}
    out = save_like(image, labels.array, tmp_path / "instances.png")
    back = read_mask(out)
    assert back.array.dtype == np.uint8 and np.array_equal(back.array, labels.array)
    assert not list(tmp_path.glob(".tmp-*"))  # atomic writes leave nothing behind


def test_shape_mismatch_names_files(tmp_path: Path):
    image, labels = load_sample_pair("lung2")
    path = tmp_path / "bad.nrrd"
    with pytest.raises(DataError, match="does not match") as exc:
        save_like(image, labels.array[:, :, :5] > 0, path)
    assert str(path) in str(exc.value) and str(image.path) in str(exc.value)
    assert not path.exists()


def test_wrong_format_for_reference(tmp_path: Path):
    image, labels = load_sample_pair("totalseg_abdomen")
    path = tmp_path / "liver.nrrd"
    with pytest.raises(DataError, match=r"\.nii") as exc:
        save_like(image, labels.array == 5, path)
    assert str(path) in str(exc.value)
    image2d, mask2d = load_sample_pair("dsb_nuclei")
    with pytest.raises(DataError, match=r"\.png") as exc:
        save_like(image2d, mask2d.array > 0, tmp_path / "mask.jpg")
    assert "mask.jpg" in str(exc.value)


def test_float_array_refused(tmp_path: Path):
    image, labels = load_sample_pair("lung2")
    with pytest.raises(DataError, match="float") as exc:
        save_like(image, labels.array.astype(np.float32), tmp_path / "soft.nrrd")
    assert "soft.nrrd" in str(exc.value)
