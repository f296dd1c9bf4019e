"""Readers: 2D images and 3D volumes from real files, and every bad-input error naming the file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import nibabel as nib
import nrrd
import numpy as np
import pytest
import tifffile
from PIL import Image

from gmiseg_edge.data import (
    DataError,
    Image2D,
    MissingFileError,
    Volume,
    file_stem,
    file_suffix,
    read_image,
    read_image_2d,
    read_mask,
    read_pair,
    read_volume,
    sample_data_dir,
)

SAMPLES = sample_data_dir()
LUNG2_IMAGE = SAMPLES / "pyradiomics" / "lung2_image.nrrd"
LUNG2_LABEL = SAMPLES / "pyradiomics" / "lung2_label.nrrd"
BREAST_IMAGE = SAMPLES / "pyradiomics" / "breast1_image.nrrd"
BREAST_LABEL = SAMPLES / "pyradiomics" / "breast1_label.nrrd"
CT_IMAGE = SAMPLES / "totalsegmentator" / "example_ct_sm.nii.gz"
CT_LABELS = SAMPLES / "totalsegmentator" / "example_seg.nii.gz"
NUCLEI_IMAGE = SAMPLES / "stardist" / "img2d.tif"
NUCLEI_MASK = SAMPLES / "stardist" / "mask2d.tif"


def names_file(exc: pytest.ExceptionInfo, path: Path) -> bool:
    return str(path) in str(exc.value)


def truncated_copy(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.fixture(scope="module")
def nuclei() -> np.ndarray:
    return tifffile.imread(NUCLEI_IMAGE)


@pytest.fixture(scope="module")
def rgb_photo(nuclei: np.ndarray) -> np.ndarray:
    """A real-data RGB image with distinct channels: the nuclei image in R, a flipped copy in G, 0 in B."""
    red = (nuclei // 1).astype(np.uint8)
    return np.dstack([red, red[::-1], np.zeros_like(red)])


# ---------------------------------------------------------------- suffixes


def test_suffix_and_stem_handle_double_extensions():
    assert file_suffix("a/case_01.nii.gz") == ".nii.gz"
    assert file_stem("a/case_01.nii.gz") == "case_01"
    assert file_suffix("x.NRRD") == ".nrrd"
    assert file_stem("scan.v2.png") == "scan.v2"
    assert file_stem("noext") == "noext"


# ---------------------------------------------------------------- 2D


def test_tiff_16bit_keeps_dtype_and_values(nuclei: np.ndarray):
    image = read_image_2d(NUCLEI_IMAGE)
    assert isinstance(image, Image2D)
    assert image.array.dtype == np.uint16 and image.array.shape == (512, 512)
    assert np.array_equal(image.array, nuclei)


def test_png_16bit_gray_roundtrip(tmp_path: Path, nuclei: np.ndarray):
    wide = nuclei.astype(np.uint16) * 250  # use the 16-bit range
    path = tmp_path / "gray16.png"
    assert cv2.imwrite(str(path), wide)
    image = read_image_2d(path)
    assert image.array.dtype == np.uint16 and np.array_equal(image.array, wide)


def test_png_colour_is_rgb_order(tmp_path: Path, rgb_photo: np.ndarray):
    path = tmp_path / "colour.png"
    Image.fromarray(rgb_photo).save(path)  # Pillow writes RGB
    image = read_image_2d(path)
    assert image.array.shape == (512, 512, 3) and image.array.dtype == np.uint8
    assert np.array_equal(image.array, rgb_photo)


def test_png_alpha_is_dropped(tmp_path: Path, rgb_photo: np.ndarray):
    rgba = np.dstack([rgb_photo, np.full(rgb_photo.shape[:2], 255, np.uint8)])
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(path)
    assert np.array_equal(read_image_2d(path).array, rgb_photo)


def test_jpeg_gray_and_colour(tmp_path: Path, rgb_photo: np.ndarray):
    Image.fromarray(rgb_photo[:, :, 0]).save(tmp_path / "g.jpg", quality=95)
    Image.fromarray(rgb_photo).save(tmp_path / "c.jpeg", quality=95)
    gray, colour = read_image_2d(tmp_path / "g.jpg"), read_image_2d(tmp_path / "c.jpeg")
    assert gray.array.shape == (512, 512) and gray.array.dtype == np.uint8
    assert colour.array.shape == (512, 512, 3)
    # lossy, but the red channel must stay red (RGB order, not BGR)
    assert colour.array[..., 0].mean() > 5 * colour.array[..., 2].mean()


def test_tiff_rgb_planar_is_channels_last(tmp_path: Path, rgb_photo: np.ndarray):
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.moveaxis(rgb_photo, -1, 0), photometric="rgb", planarconfig="separate")
    assert np.array_equal(read_image_2d(path).array, rgb_photo)


def test_read_image_dispatches_on_extension():
    assert isinstance(read_image(NUCLEI_IMAGE), Image2D)
    assert isinstance(read_image(BREAST_IMAGE), Volume)


# ---------------------------------------------------------------- 3D


def test_nrrd_volume_voxel_order_and_spacing():
    volume = read_volume(BREAST_IMAGE)
    raw, header = nrrd.read(str(BREAST_IMAGE))
    assert volume.format == "nrrd" and volume.space == "left-posterior-superior"
    assert volume.array.shape == (45, 120, 21) and volume.array.dtype == np.int16
    assert np.array_equal(volume.array, raw)
    assert volume.spacing == pytest.approx((0.664062, 0.664062, 2.1))
    assert np.allclose(volume.affine[:3, 3], header["space origin"])


def test_cropped_nrrd_keeps_hu_and_spacing():
    volume = read_volume(LUNG2_IMAGE)
    assert volume.array.shape == (512, 512, 11)
    assert volume.spacing == pytest.approx((0.6269531, 0.6269531, 5.0))
    assert volume.array.min() == -1024  # HU, not rescaled


def test_nifti_volume_spacing_and_affine():
    volume = read_volume(CT_IMAGE)
    image = nib.load(str(CT_IMAGE))
    assert volume.format == "nifti" and volume.space == "RAS"
    assert volume.array.shape == (122, 101, 30) and volume.array.dtype == np.int16
    assert volume.spacing == (3.0, 3.0, 3.0)
    assert np.allclose(volume.affine, image.affine)


def test_read_pair_checks_and_returns_both():
    image, mask = read_pair(CT_IMAGE, CT_LABELS)
    assert image.array.shape == mask.array.shape
    assert {1, 2, 3, 5} <= set(np.unique(mask.array).tolist())


def test_read_mask_casts_integral_floats(tmp_path: Path):
    labels = read_volume(CT_LABELS)
    path = tmp_path / "float_labels.nii.gz"
    nib.save(nib.Nifti1Image(labels.array.astype(np.float32), labels.affine), str(path))
    mask = read_mask(path)
    assert np.issubdtype(mask.array.dtype, np.integer)
    assert np.array_equal(mask.array, labels.array)


def test_read_mask_accepts_gray_stored_as_colour(tmp_path: Path):
    mask = tifffile.imread(NUCLEI_MASK)
    binary = np.where(mask > 0, 255, 0).astype(np.uint8)
    path = tmp_path / "mask_rgb.png"
    Image.fromarray(np.dstack([binary] * 3)).save(path)
    assert np.array_equal(read_mask(path).array, binary)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["missing.png", "missing.nii.gz", "missing.nrrd", "missing.tif"])
def test_missing_file(tmp_path: Path, name: str):
    path = tmp_path / name
    with pytest.raises(MissingFileError) as exc:
        read_image(path)
    assert names_file(exc, path) and "not found" in str(exc.value)
    assert isinstance(exc.value, FileNotFoundError) and isinstance(exc.value, DataError)


def test_folder_instead_of_file(tmp_path: Path):
    folder = tmp_path / "scan.nrrd"
    folder.mkdir()
    with pytest.raises(DataError, match="folder") as exc:
        read_volume(folder)
    assert names_file(exc, folder)


@pytest.mark.parametrize("name", ["scan.bmp", "scan"])
def test_unsupported_extension(tmp_path: Path, name: str):
    path = tmp_path / name
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(DataError, match="unsupported file type") as exc:
        read_image(path)
    assert names_file(exc, path)


def test_dcm_file_that_is_not_dicom(tmp_path: Path):
    path = tmp_path / "scan.dcm"  # .dcm goes to the DICOM reader (tests/data/test_dicom.py)
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(DataError, match="is not a DICOM file") as exc:
        read_image(path)
    assert names_file(exc, path)


def test_2d_reader_refuses_volume_and_back():
    with pytest.raises(DataError, match="3D volume") as exc:
        read_image_2d(CT_IMAGE)
    assert names_file(exc, CT_IMAGE)
    with pytest.raises(DataError, match="2D image") as exc:
        read_volume(NUCLEI_IMAGE)
    assert names_file(exc, NUCLEI_IMAGE)


@pytest.mark.parametrize(
    "source",
    [LUNG2_IMAGE, BREAST_IMAGE, CT_IMAGE, NUCLEI_IMAGE, NUCLEI_MASK],
    ids=["nrrd-bzip2", "nrrd-gzip", "nii.gz", "tiff-zlib", "tiff-mask"],
)
def test_truncated_sample_file(tmp_path: Path, source: Path):
    path = truncated_copy(source, tmp_path / ("cut_" + source.name))
    with pytest.raises(DataError, match="truncated or corrupt") as exc:
        read_image(path)
    assert names_file(exc, path)


def test_truncated_uncompressed_nifti(tmp_path: Path):
    full = tmp_path / "full.nii"
    nib.save(nib.load(str(CT_LABELS)), str(full))
    path = truncated_copy(full, tmp_path / "cut.nii")
    with pytest.raises(DataError, match="truncated or corrupt") as exc:
        read_volume(path)
    assert names_file(exc, path)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_truncated_2d_files(tmp_path: Path, rgb_photo: np.ndarray, suffix: str):
    full = tmp_path / f"full{suffix}"
    Image.fromarray(rgb_photo).save(full)
    path = truncated_copy(full, tmp_path / f"cut{suffix}", 0.6)
    with pytest.raises(DataError, match="truncated or corrupt") as exc:
        read_image_2d(path)
    assert names_file(exc, path)


def test_not_an_image_at_all(tmp_path: Path):
    path = tmp_path / "notes.nii.gz"
    path.write_text("not a volume")
    with pytest.raises(DataError, match="cannot read NIfTI") as exc:
        read_volume(path)
    assert names_file(exc, path)


def test_shape_mismatch_names_both_files(tmp_path: Path):
    other = tmp_path / "other_label.nrrd"
    shutil.copyfile(LUNG2_LABEL, other)
    with pytest.raises(DataError, match="does not match") as exc:
        read_pair(BREAST_IMAGE, other)
    assert names_file(exc, BREAST_IMAGE) and names_file(exc, other)
    assert "(45, 120, 21)" in str(exc.value) and "(512, 512, 11)" in str(exc.value)


def test_2d_image_with_3d_mask(tmp_path: Path):
    with pytest.raises(DataError, match="2D image") as exc:
        read_pair(NUCLEI_IMAGE, BREAST_LABEL)
    assert names_file(exc, NUCLEI_IMAGE) and names_file(exc, BREAST_LABEL)


def test_2d_shape_mismatch(tmp_path: Path):
    mask = tifffile.imread(NUCLEI_MASK)[:256]
    path = tmp_path / "half_mask.png"
    cv2.imwrite(str(path), mask)
    with pytest.raises(DataError, match=r"\(512, 512\) does not match") as exc:
        read_pair(NUCLEI_IMAGE, path)
    assert names_file(exc, NUCLEI_IMAGE) and names_file(exc, path)


def test_spacing_mismatch(tmp_path: Path):
    labels = read_volume(CT_LABELS)
    path = tmp_path / "labels_2mm.nii.gz"
    nib.save(nib.Nifti1Image(labels.array, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    with pytest.raises(DataError, match="spacing") as exc:
        read_pair(CT_IMAGE, path)
    assert names_file(exc, CT_IMAGE) and names_file(exc, path)


def test_nan_voxels_error_by_default(tmp_path: Path):
    ct = read_volume(CT_IMAGE)
    data = ct.array.astype(np.float32)
    data[ct.array < -1000] = np.nan  # air outside the body becomes NaN
    n_nan = int(np.isnan(data).sum())
    path = tmp_path / "ct_nan.nii.gz"
    nib.save(nib.Nifti1Image(data, ct.affine), str(path))
    with pytest.raises(DataError) as exc:
        read_volume(path)
    assert names_file(exc, path)
    assert re.search(rf"\b{n_nan} NaN\b", str(exc.value))
    assert np.isnan(read_volume(path, nan="keep").array).sum() == n_nan
    zeroed = read_volume(path, nan="zero").array
    assert not np.isnan(zeroed).any() and zeroed.dtype == np.float32


def test_nan_pixels_in_float_tiff(tmp_path: Path, nuclei: np.ndarray):
    data = nuclei.astype(np.float32)
    data[:2, :3] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, data)
    with pytest.raises(DataError, match="6 NaN") as exc:
        read_image_2d(path)
    assert names_file(exc, path)


def test_mask_with_fractional_values(tmp_path: Path):
    labels = read_volume(CT_LABELS)
    path = tmp_path / "soft.nii.gz"
    nib.save(nib.Nifti1Image(labels.array.astype(np.float32) / 2, labels.affine), str(path))
    with pytest.raises(DataError, match="non-integer") as exc:
        read_mask(path)
    assert names_file(exc, path)


def test_colour_mask_with_differing_channels(tmp_path: Path, rgb_photo: np.ndarray):
    path = tmp_path / "colour_mask.png"
    Image.fromarray(rgb_photo).save(path)
    with pytest.raises(DataError, match="colour") as exc:
        read_mask(path)
    assert names_file(exc, path)


def test_multipage_tiff_is_not_2d(tmp_path: Path, nuclei: np.ndarray):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack([nuclei] * 5))
    with pytest.raises(DataError, match="expected a 2D image") as exc:
        read_image_2d(path)
    assert names_file(exc, path)


def test_empty_png_is_a_one_line_error(tmp_path: Path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=re.escape(f"{path}: is empty (0 bytes)")):
        read_image(path)


def test_images_above_the_pixel_limit_are_refused_from_their_header(tmp_path: Path):
    from gmiseg_edge.core.transforms import MAX_PIXELS

    png = tmp_path / "huge.png"  # a PNG signature and IHDR of 30000 x 30000, no pixel data
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + (30000).to_bytes(4, "big") * 2
                    + bytes([8, 0, 0, 0, 0]) + b"\0" * 4)
    jpeg = tmp_path / "huge.jpg"  # SOI, an APP0 segment, then SOF0 of 30000 x 30000
    jpeg.write_bytes(b"\xff\xd8\xff\xe0\x00\x04ab\xff\xc0\x00\x0b\x08" + (30000).to_bytes(2, "big") * 2
                     + b"\x01\x01\x11\x00")
    for path in (png, jpeg):
        with pytest.raises(DataError, match=rf"{re.escape(str(path))}: 30000 x 30000 pixels .* {MAX_PIXELS}"):
            read_image(path)


def test_nrrd_origin_that_is_not_a_3d_point_names_the_file(tmp_path: Path):
    path = tmp_path / "flat_origin.nrrd"
    nrrd.write(str(path), np.zeros((4, 4, 3), np.int16), {"space": "left-posterior-superior",
                                                          "space directions": np.eye(3),
                                                          "space origin": np.array([1.0, 2.0, 3.0])})
    path.write_bytes(path.read_bytes().replace(b"space origin: (1,2,3)", b"space origin: (1,2)"))
    with pytest.raises(DataError, match=re.escape(f"{path}: 'space origin' [1.0, 2.0] is not a 3D point")):
        read_image(path)


def test_a_detached_nrrd_header_may_only_name_a_data_file_in_its_folder_or_below(tmp_path: Path):
    """Issue 26: ``data file: ../../../../etc/passwd`` in a .nhdr was read, segmented and rendered."""
    case = tmp_path / "case"
    (case / "data").mkdir(parents=True)
    volume = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    nrrd.write(str(case / "data" / "ct.nhdr"), volume, {"encoding": "raw"}, detached_header=True)
    raw = (case / "data" / "ct.raw").read_bytes()
    (tmp_path / "secret.raw").write_bytes(raw)  # outside the header's folder
    header = (case / "data" / "ct.nhdr").read_text()
    assert "data file: ct.raw" in header
    below = case / "below.nhdr"
    below.write_text(header.replace("data file: ct.raw", "data file: data/ct.raw"))
    assert np.array_equal(read_volume(below).array, volume)  # below the header's folder: read
    (case / "link.raw").symlink_to(tmp_path / "secret.raw")
    refused = {"up.nhdr": "data file: ../secret.raw", "absolute.nhdr": f"data file: {tmp_path / 'secret.raw'}",
               "link.nhdr": "data file: link.raw", "spelt.nhdr": "datafile: ../secret.raw"}
    for name, line in refused.items():
        (case / name).write_text(header.replace("data file: ct.raw", line))
        with pytest.raises(DataError, match="lies outside the header's folder") as exc:
            read_volume(case / name)
        assert str(exc.value).startswith(f"{case / name}: ")
    (case / "attached.nrrd").write_text(header.replace("data file: ct.raw", "data file: ../secret.raw"))
    with pytest.raises(DataError, match="lies outside the header's folder"):
        read_volume(case / "attached.nrrd")
    for value in ("LIST", "ct%03d.raw 1 3 1"):
        (case / "many.nhdr").write_text(header.replace("data file: ct.raw", f"data file: {value}"))
        with pytest.raises(DataError, match="a list of files or a file-name pattern is not read"):
            read_volume(case / "many.nhdr")
    (case / "gone.nhdr").write_text(header.replace("data file: ct.raw", "data file: gone.raw"))
    with pytest.raises(DataError, match=r"gone\.raw .* is missing"):
        read_volume(case / "gone.nhdr")


def test_volumes_above_the_voxel_limit_are_refused_from_their_header(tmp_path: Path):
    """Issue 26: a 4 MB 1024^3 .nii.gz decompressed to 3.58 GB. Headers stating 1024^3 voxels (and no data at all)
    are refused before any data is read."""
    from gmiseg_edge.data.images import MAX_VOXELS

    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((1024, 1024, 1024))
    nifti = tmp_path / "huge.nii"
    nifti.write_bytes(header.binaryblock + b"\0" * 4)  # the header, then no voxels
    nhdr = tmp_path / "huge.nhdr"
    nhdr.write_text("NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1024 1024 1024\nencoding: raw\ndata file: huge.raw\n")
    (tmp_path / "huge.raw").write_bytes(b"")
    mha = tmp_path / "huge.mha"
    mha.write_text("ObjectType = Image\nNDims = 3\nDimSize = 1024 1024 1024\nElementType = MET_UCHAR\n"
                   "ElementDataFile = LOCAL\n")
    for path in (nifti, nhdr, mha):
        with pytest.raises(DataError, match=rf"{re.escape(str(path))}: 1024 x 1024 x 1024 voxels \(1074 M\) is "
                                            rf"above the limit of {MAX_VOXELS} voxels"):
            read_volume(path)
    small = tmp_path / "small.nii.gz"  # the limit leaves ordinary volumes alone
    nib.save(nib.Nifti1Image(np.zeros((512, 512, 4), np.int16), np.eye(4)), str(small))
    assert read_volume(small).array.shape == (512, 512, 4)
