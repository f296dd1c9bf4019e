"""A DICOM-SEG of a half-anonymised series (issue 27, item 10): slices whose SOPClassUID / SOPInstanceUID are blank
while the file meta keeps them get a valid SEG referencing the file meta's UIDs (the files untouched, a warning
naming the attribute and the series); an attribute nothing can fill is an error naming it and the file."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.data import read_image
from gmiseg_edge.data.dicom import SEG_SOP_CLASS
from gmiseg_edge.data.dicom_seg import SegAlgorithm, read_dicom_seg, write_dicom_seg
from gmiseg_edge.data.seg_sources import source_instance_uids
from tests.dicom_series import sample_ct, write_series

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def ct():
    return sample_ct()  # 64 x 64 x 12, the liver (5) on every slice


def _blanked_series(folder: Path, ct, blank: dict[str, str], meta_blank: tuple[str, ...] = ()) -> list[Path]:
    """The sample series with the dataset attributes ``blank`` set to '' and the file meta's ``meta_blank``
    removed, as a half-anonymising archive leaves them."""
    paths = write_series(folder, ct[0], ct[1])
    for path in paths:
        ds = pydicom.dcmread(path)
        for key in blank:
            setattr(ds, key, "")
        for key in meta_blank:
            delattr(ds.file_meta, key)
        ds.save_as(path, enforce_file_format=not meta_blank)
    return paths


def _digest(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


@pytest.mark.parametrize("blank", [("SOPClassUID",), ("SOPClassUID", "SOPInstanceUID")])
def test_blank_uids_are_taken_from_the_file_meta(ct, tmp_path, caplog, blank):
    hu, affine, labels = ct
    paths = _blanked_series(tmp_path / "ct", ct, dict.fromkeys(blank, ""))
    before = _digest(paths)
    meta_uids = {str(pydicom.dcmread(p).file_meta.MediaStorageSOPInstanceUID) for p in paths}
    volume = read_image(tmp_path / "ct")
    assert {str(ds.SOPClassUID) for ds in volume.header.datasets} == {""}
    liver = labels == 5
    with caplog.at_level(logging.WARNING):
        path = write_dicom_seg(volume, liver, tmp_path / "liver.dcm", {1: "liver"}, SegAlgorithm("test", "1"))
    assert _digest(paths) == before  # the user's files are not changed, nor the volume's headers
    assert {str(ds.SOPClassUID) for ds in volume.header.datasets} == {""}
    for key in blank:  # one warning per attribute, naming it, the file meta's stand-in and the series
        (message,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith(key + " ")]
        assert f"in {len(paths)} of {len(paths)} slice(s)" in message and "'CT abdomen'" in message
        assert str(tmp_path / "ct") in message and f"MediaStorage{key}" in message

    seg = hd.seg.segread(path)  # highdicom and pydicom read it back: a SEG referencing the file meta's UIDs
    assert seg.SOPClassUID == SEG_SOP_CLASS and seg.StudyInstanceUID == volume.header.datasets[0].StudyInstanceUID
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == volume.header.uid
    assert {str(item.ReferencedSOPClassUID) for item in referenced.ReferencedInstanceSequence} == {CTImageStorage}
    assert {str(item.ReferencedSOPInstanceUID) for item in referenced.ReferencedInstanceSequence} == meta_uids
    frames = pydicom.dcmread(path).pixel_array.reshape(-1, hu.shape[1], hu.shape[0])
    assert len(frames) == hu.shape[2]  # the liver is on every slice: one frame each
    slice_positions = [affine[:3, :3] @ [0, 0, k] + affine[:3, 3] for k in range(hu.shape[2])]
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        position = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        (k,) = [k for k, p in enumerate(slice_positions) if np.allclose(p, position, atol=1e-3)]
        assert np.array_equal(frame.astype(bool), liver[:, :, k].T)  # rows = j, columns = i
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert source == str(pydicom.dcmread(volume.header.files[k]).file_meta.MediaStorageSOPInstanceUID)
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    np.testing.assert_allclose(np.asarray(orientation, dtype=float), volume.header.datasets[0].ImageOrientationPatient)
    assert np.array_equal(read_dicom_seg(path, volume), liver)  # and back, each frame on its source slice


@pytest.mark.parametrize(("blank", "meta_blank", "expected"), [
    ({"StudyInstanceUID": ""}, (), "StudyInstanceUID is empty (the file meta has no stand-in)"),
    ({"SOPInstanceUID": ""}, ("MediaStorageSOPInstanceUID",),
     "SOPInstanceUID is empty and its file meta has no MediaStorageSOPInstanceUID"),
])
def test_an_attribute_nothing_can_fill_is_an_error_naming_it_and_the_file(ct, tmp_path, blank, meta_blank, expected):
    _blanked_series(tmp_path / "ct", ct, blank, meta_blank)
    volume = read_image(tmp_path / "ct")
    with pytest.raises(DataError) as error:
        write_dicom_seg(volume, ct[2] == 5, tmp_path / "liver.dcm", {1: "liver"}, SegAlgorithm("test", "1"))
    assert expected in str(error.value) and str(error.value).startswith(str(volume.header.files[0]))
    assert not (tmp_path / "liver.dcm").exists()  # nothing half-written


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent (the second CT patient, a real series)")
def test_the_real_half_anonymised_series_names_what_it_lacks(tmp_path):
    """The JPEG 2000 scanner series of ../shared/data blanks SOPClassUID and SOPInstanceUID (the file meta keeps
    them) but also StudyInstanceUID and SeriesInstanceUID, which nothing can stand in for."""
    volume = read_image(SHARED / "totalseg_ct_b" / "ct_dicom")
    assert {str(ds.SOPClassUID) for ds in volume.header.datasets} == {""}
    uids = source_instance_uids(volume.header)  # the file meta's, one per slice
    assert len(set(uids)) == volume.array.shape[2] and "" not in uids
    with pytest.raises(DataError, match="StudyInstanceUID is empty") as error:
        write_dicom_seg(volume, np.zeros(volume.array.shape, np.uint8), tmp_path / "seg.dcm", {1: "liver"},
                        SegAlgorithm("test", "1"))
    assert str(error.value).startswith(str(volume.header.files[0])) and not (tmp_path / "seg.dcm").exists()
