"""The plugin's Qt-free parts on real files: the reader's layout and geometry, prompts from layer coordinates,
objects that keep their labels, saving with the source geometry (NIfTI, DICOM-SEG); and the npe2 manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gmiseg_edge.core.errors import DataError, InputError
from gmiseg_edge.data import read_volume, sample_data_dir
from gmiseg_edge.data.slicing import slice_2d
from gmiseg_edge.viewer.image import SourceImage
from gmiseg_edge.viewer.labels import next_label, paste, paste_changes
from gmiseg_edge.viewer.prompts import slice_prompt
from gmiseg_edge.viewer.reader import SOURCE_KEY, axis_codes, napari_get_reader, read_layers
from gmiseg_edge.viewer.save import save_labels
from tests.viewer.conftest import CT, require_napari

MANIFEST = Path(__file__).resolve().parents[2] / "gmiseg_edge" / "viewer" / "napari.yaml"


def test_reader_layout_scale_and_orientation():
    path = sample_data_dir() / CT
    volume = read_volume(path)
    data, kwargs, kind = napari_get_reader(str(path))(str(path))[0]
    assert kind == "image" and data.shape == volume.array.shape[::-1]
    for k in (0, 13, volume.array.shape[2] - 1):  # napari's slice k is the runtime's slice_2d(volume, 2, k)
        assert np.array_equal(data[k], slice_2d(volume.array, 2, k))
    assert tuple(kwargs["scale"]) == tuple(reversed(volume.spacing))
    import nibabel as nib

    codes = nib.aff2axcodes(volume.affine)
    assert kwargs["axis_labels"] == tuple(f"{a} ({c})" for a, c in zip("kji", codes[::-1], strict=True))
    assert axis_codes(np.diag([-2.0, 3.0, 1.0, 1.0]), "RAS") == ("L", "A", "S")
    assert axis_codes(np.diag([1.0, 1.0, 1.0, 1.0]), "left-posterior-superior") == ("L", "P", "S")
    png = sample_data_dir() / "stardist" / "img2d.tif"
    layer = read_layers(png)[0]
    assert layer[0].ndim == 2 and layer[1]["rgb"] is False
    assert napari_get_reader("notes.txt") is None
    with pytest.raises(DataError, match=r"cannot read|corrupt|truncated"):
        read_layers(_broken(png.parent, "broken.nii.gz"))


def _broken(_: Path, name: str) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / name
    path.write_bytes(b"not a nifti")
    return path


def test_source_image_windows_like_the_runtime_and_refuses_4d():
    volume = read_volume(sample_data_dir() / CT).array
    image = SourceImage(np.transpose(volume, (2, 1, 0)), "abdomen")
    from gmiseg_edge.data import apply_window

    assert np.array_equal(image.slice(7), apply_window(slice_2d(volume, 2, 7), "abdomen"))
    with pytest.raises(InputError, match="outside"):
        image.slice(image.depth)
    with pytest.raises(InputError, match="4D"):
        SourceImage(np.zeros((2, 3, 8, 8), np.float32), "abdomen")
    photo = SourceImage(np.zeros((8, 9, 3), np.uint8), "lung", rgb=True)
    assert photo.warnings and "RGB photo" in photo.warnings[0]


def test_source_image_pixel_size_is_the_layers_scale():
    """The reader's layer scale (the header's voxel size) reaches the support set as mm: a slice's (row, col) is
    the runtime's ``slice_spacing`` of the file's volume; no scale, no size (the runtime's 1 mm default)."""
    from napari.layers import Image

    from gmiseg_edge.data import slice_spacing

    path = sample_data_dir() / CT
    volume = read_volume(path)
    data, kwargs, _ = read_layers(path)[0]
    image = SourceImage.of_layer(Image(data, scale=kwargs["scale"], name="ct"), "abdomen")
    assert image.plane_spacing == pytest.approx(slice_spacing(volume.spacing, 2))
    assert image.voxel_spacing == pytest.approx(tuple(reversed(volume.spacing)))
    flat = SourceImage(np.zeros((8, 9), np.float32), "abdomen")
    assert flat.plane_spacing is None and flat.voxel_spacing is None


def test_paste_keeps_other_objects_unless_asked():
    labels = np.zeros((2, 6, 6), np.uint16)
    labels[0, :3] = 1
    mask = np.zeros((6, 6), bool)
    mask[2:5] = True
    assert paste(labels, mask, 2, region=(0,)) == 6  # row 2 belongs to object 1: kept
    assert (labels[0, :3] == 1).all() and (labels[0, 3:5] == 2).all() and not labels[1].any()
    smaller = np.zeros((6, 6), bool)
    smaller[4] = True
    paste(labels, smaller, 2, region=(0,))  # object 2's pixels outside its new mask are cleared
    assert (labels[0, 3] == 0).all() and (labels[0, 4] == 2).all()
    paste(labels, mask, 2, overwrite=True, region=(0,))
    assert (labels[0, 2] == 2).all() and next_label(labels) == 3
    with pytest.raises(InputError, match="label"):
        paste(labels, mask, 0, region=(0,))


@pytest.mark.parametrize("overwrite", [False, True])
def test_paste_changes_are_the_pixels_paste_changes(overwrite):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, (3, 20, 24)).astype(np.uint16)
    mask = rng.random((20, 24)) > 0.5
    expected = labels.copy()
    kept = paste(expected, mask, 2, overwrite, region=(1,))
    indices, values, kept_out = paste_changes(labels, mask, 2, overwrite, region=(1,))
    assert kept_out == kept and len(indices) == 3 and (indices[0] == 1).all()
    assert np.array_equal(labels[indices] != values, np.ones(len(values), bool)), "an unchanged pixel listed"
    written = labels.copy()
    written[indices] = values
    assert np.array_equal(written, expected)
    assert paste_changes(expected, mask, 2, overwrite, region=(1,))[1].size == 0  # written already: nothing left
    plane, plane_expected = labels[0].copy(), labels[0].copy()
    paste(plane_expected, mask, 3, overwrite)
    flat, flat_values, _ = paste_changes(plane, mask, 3, overwrite)  # a 2D image: the whole map
    plane[flat] = flat_values
    assert len(flat) == 2 and np.array_equal(plane, plane_expected)
    with pytest.raises(InputError, match="region"):
        paste_changes(labels, mask, 2, region=(slice(0, 1),))


def test_prompts_on_the_slice_and_outside_the_image():
    box = np.array([[3, 10, 20], [3, 10, 40], [3, 30, 40], [3, 30, 20]], float)
    other = box.copy()
    other[:, 0] = 4
    points = np.array([[3, 15.2, 25.7], [4, 1, 1], [3, 20, 30]])
    prompt = slice_prompt([box, other], points, np.array([True, True, False]), 3, (50, 60))
    assert prompt.box.tolist() == [20, 10, 40, 30]
    assert prompt.points.tolist() == [[26, 15], [30, 20]] and prompt.labels.tolist() == [1, 0]
    assert slice_prompt([box], np.zeros((0, 3)), np.zeros(0, bool), 5, (50, 60)).empty
    with pytest.raises(InputError, match=r"click.*outside"):
        slice_prompt([], np.array([[3, 55, 5]]), np.array([True]), 3, (50, 60))
    far = box + np.array([0, 100, 100])
    with pytest.raises(InputError, match=r"box.*outside"):
        slice_prompt([far], np.zeros((0, 3)), np.zeros(0, bool), 3, (50, 60))
    edge = box + np.array([0, 25, 0])  # rows 35..55 on a 50-row image: clipped to the image
    assert slice_prompt([edge], np.zeros((0, 3)), np.zeros(0, bool), 3, (50, 60)).box[3] == 49


def test_save_with_source_geometry(tmp_path):
    path = sample_data_dir() / CT
    data, kwargs, _ = read_layers(path)[0]
    source = kwargs["metadata"][SOURCE_KEY]
    labels = np.zeros(data.shape, np.uint16)
    labels[10, 20:40, 30:50] = 2
    out = save_labels(labels, source, tmp_path / "objects.nii.gz")
    back = read_volume(out)
    assert np.array_equal(back.array, np.transpose(labels, (2, 1, 0)))
    assert np.allclose(back.affine, source.affine)
    with pytest.raises(DataError, match="DICOM"):
        save_labels(labels, source, tmp_path / "objects.dcm")
    with pytest.raises(DataError, match="no source"):
        save_labels(labels, None, tmp_path / "objects.nii.gz")
    assert not (tmp_path / "objects.dcm").exists()


def test_dicom_seg_from_a_dicom_series(tmp_path):
    pytest.importorskip("highdicom")
    from gmiseg_edge.data.dicom_seg import read_dicom_seg
    from tests.dicom_series import sample_ct, write_series

    hu, affine, _ = sample_ct()
    write_series(tmp_path / "series", hu, affine)
    data, kwargs, _ = read_layers(tmp_path / "series")[0]
    source = kwargs["metadata"][SOURCE_KEY]
    import nibabel as nib

    codes = nib.aff2axcodes(np.diag([-1.0, -1.0, 1.0, 1.0]) @ source.affine)  # LPS -> RAS: the same letters
    assert source.format == "dicom"
    assert kwargs["axis_labels"] == tuple(f"{a} ({c})" for a, c in zip("kji", codes[::-1], strict=True))
    labels = np.zeros(data.shape, np.uint16)
    labels[3, 10:20, 10:30] = 1
    labels[5, 30:40, 5:15] = 2
    out = save_labels(labels, source, tmp_path / "objects.dcm", model="lite_medsam")
    assert np.array_equal(read_dicom_seg(out, source), np.transpose(labels, (2, 1, 0)))


def test_manifest_names_importable_contributions():
    require_napari()
    import npe2

    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "gmiseg-edge"
    for command in manifest.contributions.commands:
        module, name = command.python_name.split(":")
        assert callable(getattr(__import__(module, fromlist=[name]), name)), command.python_name
    patterns = manifest.contributions.readers[0].filename_patterns
    assert {"*.nii.gz", "*.nrrd", "*.png", "*.tif"} <= set(patterns)
