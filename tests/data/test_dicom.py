"""DICOM series in (pydicom): a real CT series written from the shipped NIfTI, read back voxel for voxel with the
same geometry; selection among series; every bad folder a DataError naming the file; outputs keep the geometry."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLosslessSV1, RLELossless

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.data import find_pairs, read_image, read_pair, save_like
from gmiseg_edge.data.dicom import list_series
from gmiseg_edge.data.dicom_seg import SegAlgorithm, read_dicom_seg, write_dicom_seg
from tests.dicom_series import RAS_TO_LPS, sample_ct, write_series


@pytest.fixture(scope="module")
def ct():
    return sample_ct()


@pytest.fixture(scope="module")
def series(ct, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dicom") / "ct"
    write_series(folder, ct[0], ct[1])
    return folder


def _copy(series: Path, target: Path) -> Path:
    shutil.copytree(series, target)
    return target


def test_series_reads_as_the_nifti_voxel_for_voxel(ct, series):
    hu, affine, _ = ct
    volume = read_image(series)
    assert volume.format == "dicom" and volume.space == "LPS"
    assert volume.array.dtype == np.int16 and np.array_equal(volume.array, hu)  # rescale applied: HU
    assert volume.array.min() < -1024  # below the intercept: the signed stored values were rescaled
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)  # the NIfTI's RAS affine in LPS
    assert volume.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert volume.header.description == "CT abdomen" and len(volume.header.files) == hu.shape[2]


def test_slice_order_comes_from_positions_not_names_or_instance_numbers(ct, series, tmp_path):
    files = sorted(series.iterdir())
    rng = np.random.default_rng(0)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for n, index in enumerate(rng.permutation(len(files))):
        shutil.copy(files[index], shuffled / f"IM{n:04d}")  # no extension, names in a random order
    volume = read_image(shuffled)
    assert np.array_equal(volume.array, ct[0])
    np.testing.assert_allclose(volume.affine, ct[1], atol=1e-6)


def test_dicomdir_and_one_file(ct, series, tmp_path):
    from pydicom.fileset import FileSet

    file_set = FileSet()
    for path in sorted(series.iterdir()):
        file_set.add(pydicom.dcmread(path))
    file_set.write(tmp_path / "cd")
    assert np.array_equal(read_image(tmp_path / "cd" / "DICOMDIR").array, ct[0])
    assert np.array_equal(read_image(tmp_path / "cd").array, ct[0])  # a folder holding a DICOMDIR
    one = read_image(sorted(series.iterdir())[0])  # a series of one slice: a volume of depth 1 (stated)
    assert one.array.shape == (*ct[0].shape[:2], 1) and one.spacing[2] == pytest.approx(3.0)


def test_several_series_need_a_selector(ct, series, tmp_path):
    folder = _copy(series, tmp_path / "two")
    write_series(folder / "sub", ct[0][:, :, :4] + 10, ct[1], series_number=7, description="CT bone recon",
                 names="bone")
    with pytest.raises(DataError, match="holds 2 image series; choose one with --series") as error:
        read_image(folder)
    assert "'CT bone recon'" in str(error.value) and str(folder) in str(error.value)
    bone = read_image(folder, series="7")
    assert bone.array.shape[2] == 4 and np.array_equal(bone.array, ct[0][:, :, :4] + 10)
    assert read_image(folder, series="abdomen").array.shape == ct[0].shape
    assert read_image(folder, series=bone.header.uid).header.description == "CT bone recon"
    with pytest.raises(DataError, match="no series matches --series 'pelvis'"):
        read_image(folder, series="pelvis")
    with pytest.raises(DataError, match="matches 2 series"):
        read_image(folder, series="ct")


def test_non_image_objects_are_skipped_unless_chosen(ct, series, tmp_path):
    folder = _copy(series, tmp_path / "with_sr_and_seg")
    sr = Path(pydicom.data.get_testdata_file("reportsi.dcm"))
    shutil.copy(sr, folder / "report.dcm")
    volume = read_image(series)
    write_dicom_seg(volume, ct[2] == 5, folder / "liver_seg.dcm", {1: "liver"}, SegAlgorithm("test", "1"))
    assert np.array_equal(read_image(folder).array, ct[0])  # the one image series is taken; SR and SEG skipped
    kinds = {s.modality: s.is_image for s in list_series(folder)}
    assert kinds == {"CT": True, "SR": False, "SEG": False}
    with pytest.raises(DataError, match="without image geometry") as error:
        read_image(folder, series="image report")  # the SR, chosen by a part of its description
    assert "report.dcm" in str(error.value)


@pytest.mark.parametrize("damage, message", [
    ("gap", r"gap in slice positions: 6\.000 mm .* 3\.000 mm between the others \(about 1 slice\(s\) missing\)"),
    ("duplicate", "two slices at one position"),
    ("orientation", "mixed orientations in one series"),
    ("truncated_header", "has no SeriesInstanceUID: the file is truncated or corrupt"),
    ("truncated_pixels", "cannot read its pixel data"),
    ("not_dicom", r"is not a DICOM file \(no 'DICM' preamble\)"),
    ("size", "mixed image sizes in one series"),
])
def test_bad_series_name_the_file(ct, series, tmp_path, damage, message):
    folder = _copy(series, tmp_path / damage)
    files = sorted(folder.iterdir(), key=lambda p: p.name.split("_")[-1])  # k order (the last number)
    culprit = files[5]
    if damage == "gap":
        culprit.unlink()
        culprit = files[6]  # the error names the file after the gap
    elif damage in ("duplicate", "orientation", "size"):
        ds = pydicom.dcmread(culprit)
        if damage == "duplicate":
            ds.ImagePositionPatient = pydicom.dcmread(files[4]).ImagePositionPatient
        elif damage == "orientation":
            ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # a sagittal slice in an axial series
        else:
            ds.Rows, ds.PixelData = ds.Rows - 1, ds.PixelData[: (ds.Rows - 1) * ds.Columns * 2]
        ds.save_as(culprit)
    elif damage.startswith("truncated"):
        data = culprit.read_bytes()
        culprit.write_bytes(data[:700] if damage == "truncated_header" else data[:-1000])
    else:
        culprit = folder / "notes.dat"
        culprit.write_bytes(b"not an image")
    with pytest.raises(DataError, match=message) as error:
        read_image(folder)
    assert culprit.name in str(error.value)


def test_compressed_series_decode_or_name_the_missing_plugin(ct, series, tmp_path):
    folder = _copy(series, tmp_path / "rle")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)  # pydicom's own RLE encoder; decoded by its own RLE handler
        ds.save_as(path)
    assert np.array_equal(read_image(folder).array, ct[0])

    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here: no missing plugin to report")
    culprit = sorted(folder.iterdir())[3]
    ds = pydicom.dcmread(culprit)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1  # a syntax no installed plugin decodes
    ds.save_as(culprit)
    with pytest.raises(DataError, match=r"cannot decode its JPEG Lossless.*pylibjpeg.*install one") as error:
        read_image(folder)
    assert culprit.name in str(error.value)


def test_masks_of_a_series_in_any_grid_order_or_as_seg(ct, series, tmp_path):
    _hu, affine, labels = ct
    volume = read_image(series)
    # the same label grid, axes swapped and one flipped, as a converter may write it
    permuted = np.ascontiguousarray(labels[::-1].transpose(1, 0, 2))
    to_original = np.array([[0, -1, 0, labels.shape[0] - 1], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(permuted, RAS_TO_LPS @ affine @ to_original), tmp_path / "labels.nii.gz")
    _image, mask = read_pair(series, tmp_path / "labels.nii.gz")
    assert np.array_equal(mask.array, labels)
    write_dicom_seg(volume, labels == 5, tmp_path / "liver.dcm", {1: "liver"}, SegAlgorithm("test", "1"))
    _, seg_mask = read_pair(series, tmp_path / "liver.dcm")
    assert np.array_equal(seg_mask.array.astype(bool), labels == 5)
    nib.save(nib.Nifti1Image(labels[:, :, 1:], RAS_TO_LPS @ affine), tmp_path / "short.nii.gz")
    with pytest.raises(DataError, match="is not the voxel grid of") as error:
        read_pair(series, tmp_path / "short.nii.gz")
    assert "short.nii.gz" in str(error.value)
    # a dataset folder: images/<case>/ is the series, masks/<case>.nii.gz its labels
    (tmp_path / "data" / "masks").mkdir(parents=True)
    shutil.copytree(series, tmp_path / "data" / "images" / "case1")
    shutil.copy(tmp_path / "labels.nii.gz", tmp_path / "data" / "masks" / "case1.nii.gz")
    (pair,) = find_pairs(tmp_path / "data")
    assert pair.name == "case1" and np.array_equal(pair.read()[1].array, labels)


def test_nifti_and_nrrd_outputs_keep_the_series_geometry(ct, series, tmp_path):
    _hu, affine, labels = ct
    volume = read_image(series)
    save_like(volume, labels == 5, tmp_path / "liver.nii.gz")
    written = nib.load(tmp_path / "liver.nii.gz")
    np.testing.assert_allclose(written.affine, RAS_TO_LPS @ affine, atol=1e-5)  # back to RAS
    assert np.array_equal(np.asarray(written.dataobj), labels == 5)
    save_like(volume, labels == 5, tmp_path / "liver.nrrd")
    again = read_image(tmp_path / "liver.nrrd")
    np.testing.assert_allclose(again.affine, affine, atol=1e-5)  # LPS, as the series
    assert np.array_equal(again.array, labels == 5)


def test_seg_round_trip_frames_on_their_source_slices(ct, series, tmp_path):
    hu, affine, labels = ct
    volume = read_image(series)
    segments = (labels == 5).astype(np.uint8) + 2 * (labels == 1)
    path = write_dicom_seg(volume, segments, tmp_path / "seg.dcm", {1: "liver", 2: "spleen"},
                           SegAlgorithm("gmiseg-edge lite_medsam", "0.1.0", "AUTOMATIC"))
    assert np.array_equal(read_dicom_seg(path, volume), segments)
    seg = pydicom.dcmread(path)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.header.uid
    assert seg.StudyInstanceUID == volume.header.datasets[0].StudyInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "spleen"]
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"AUTOMATIC"}
    assert seg.SegmentSequence[0].SegmentAlgorithmName == "gmiseg-edge lite_medsam"
    by_uid = dict(zip(volume.header.sop_instance_uids, range(hu.shape[2]), strict=True))
    frames = seg.pixel_array.reshape(-1, *seg.pixel_array.shape[-2:])
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        k = by_uid[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        number = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        assert np.array_equal(frame.astype(bool), number == segments[:, :, k].T)  # rows = j, columns = i
        position = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        np.testing.assert_allclose(position, affine[:3, :3] @ [0, 0, k] + affine[:3, 3], atol=1e-4)
    with pytest.raises(DataError, match="label value"):
        write_dicom_seg(volume, segments, tmp_path / "bad.dcm", {1: "liver"}, SegAlgorithm("t", "1"))
    assert not (tmp_path / "bad.dcm").exists() and len(list(tmp_path.iterdir())) == 1  # nothing half-written
    nib.save(nib.Nifti1Image(segments.astype(np.uint8), np.eye(4)), tmp_path / "plain.nii.gz")
    with pytest.raises(DataError, match="needs a DICOM source series"):
        write_dicom_seg(read_image(tmp_path / "plain.nii.gz"), segments, tmp_path / "x.dcm", {1: "a", 2: "b"},
                        SegAlgorithm("t", "1"))


def test_training_reads_a_dicom_dataset_folder(ct, series, tmp_path):
    pytest.importorskip("torch")
    from gmiseg_edge.train.samples import load_samples

    _, _affine, labels = ct
    (tmp_path / "data" / "masks").mkdir(parents=True)
    shutil.copytree(series, tmp_path / "data" / "images" / "ct1")
    write_dicom_seg(read_image(series), labels == 5, tmp_path / "data" / "masks" / "ct1.dcm", {1: "liver"},
                    SegAlgorithm("reference", "1", "MANUAL"))  # the label map as a DICOM-SEG
    samples = load_samples(tmp_path / "data", window="abdomen")
    assert len(samples) == int((labels == 5).any(axis=(0, 1)).sum())  # one per labelled slice
    assert all(s.image.dtype == np.uint8 for s in samples)


def test_dicom_and_challenge_io_without_torch(tmp_path):
    from tests.no_torch import run_without_torch

    proc = run_without_torch(f"""
        import sys
        from pathlib import Path
        import numpy as np
        from tests.dicom_series import sample_ct, write_series
        from tests.challenge_cases import write_3d_case
        from gmiseg_edge.data import read_image
        from gmiseg_edge.data.dicom_seg import SegAlgorithm, read_dicom_seg, write_dicom_seg
        from gmiseg_edge.data.challenge import read_challenge_case
        hu, affine, labels = sample_ct()
        root = Path({str(tmp_path)!r})
        write_series(root / "ct", hu, affine)
        volume = read_image(root / "ct")
        write_dicom_seg(volume, labels == 5, root / "seg.dcm", {{1: "liver"}}, SegAlgorithm("t", "1"))
        assert np.array_equal(read_dicom_seg(root / "seg.dcm", volume), labels == 5)
        assert read_challenge_case(write_3d_case(root / "3D_x.npz")).is_3d
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "segment_anything")))
    """)
    assert proc.stdout.strip().endswith("[]")


def test_a_series_above_the_voxel_limit_is_refused_from_its_headers(ct, series, tmp_path):
    """Issue 26 (voxel budget): the slices' headers state 12 x 8192 x 8192 voxels; no pixel is decoded."""
    from gmiseg_edge.data.images import MAX_VOXELS

    huge = _copy(series, tmp_path / "huge")
    for path in huge.iterdir():
        ds = pydicom.dcmread(path)
        ds.Rows = ds.Columns = 8192  # the pixel data stays 64 x 64: never read
        ds.save_as(path)
    with pytest.raises(DataError, match=rf"huge: 8192 x 8192 x {ct[0].shape[2]} voxels .* above the limit of "
                                        rf"{MAX_VOXELS} voxels"):
        read_image(huge)

