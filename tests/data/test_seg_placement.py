"""DICOM-SEGs written the way other tools write them (issue 27, item 9): frames that do not state that spatial
locations are preserved (dcmqi / 3D Slicer), or that name no source frame at all, load as labels placed by their
plane positions on the series; a frame between slices or shifted in-plane is an error saying which and by how
much."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.data import read_image, read_pair
from gmiseg_edge.data.dicom_seg import SegAlgorithm, read_dicom_seg, write_dicom_seg
from gmiseg_edge.data.seg_placement import POSITION_TOLERANCE
from tests.dicom_series import sample_ct, write_series


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(series folder, volume, label map, a SEG of it as highdicom writes it: source frames, locations kept)."""
    hu, affine, labels = sample_ct()
    root = tmp_path_factory.mktemp("placement")
    write_series(root / "ct", hu, affine)
    volume = read_image(root / "ct")
    segments = (labels == 5).astype(np.uint8) + 2 * (labels == 1)  # liver on all 12 slices, spleen on 3
    path = write_dicom_seg(volume, segments, root / "seg.dcm", {1: "liver", 2: "spleen"}, SegAlgorithm("t", "1"))
    return root / "ct", volume, segments, path


def _as_other_tools_write_it(source: Path, target: Path, how: str) -> Path:
    """The SEG with its per-frame derivation references stripped of SpatialLocationsPreserved (as dcmqi leaves
    it: the attribute is optional) or removed altogether."""
    ds = pydicom.dcmread(source)
    for item in ds.PerFrameFunctionalGroupsSequence:
        if how == "no-derivation-references":
            del item.DerivationImageSequence
            continue
        for derivation in item.DerivationImageSequence:
            for reference in derivation.SourceImageSequence:
                del reference.SpatialLocationsPreserved
    ds.save_as(target, enforce_file_format=True)
    return target


def _moved(source: Path, target: Path, frame: int, shift_mm: np.ndarray) -> Path:
    ds = pydicom.dcmread(source)
    item = ds.PerFrameFunctionalGroupsSequence[frame - 1].PlanePositionSequence[0]
    item.ImagePositionPatient = [float(v) for v in np.asarray(item.ImagePositionPatient, dtype=float) + shift_mm]
    ds.save_as(target, enforce_file_format=True)
    return target


@pytest.mark.parametrize("how", ["spatial-locations-not-stated", "no-derivation-references"])
def test_frames_without_preserved_locations_are_placed_by_position(written, tmp_path, how):
    folder, volume, segments, path = written
    foreign = _as_other_tools_write_it(path, tmp_path / "foreign.dcm", how)
    with pytest.raises(RuntimeError, match="Indexing via source frames is not"):  # what highdicom refuses
        hd.seg.segread(foreign).get_pixels_by_source_instance(list(volume.header.sop_instance_uids),
                                                              combine_segments=True, skip_overlap_checks=True)
    assert np.array_equal(read_dicom_seg(foreign, volume), segments)
    _, mask = read_pair(folder, foreign)  # what --mask reads
    assert np.array_equal(mask.array, segments)


def test_a_frame_within_the_tolerance_is_placed(written, tmp_path):
    _, volume, segments, path = written
    foreign = _as_other_tools_write_it(path, tmp_path / "foreign.dcm", "spatial-locations-not-stated")
    normal, row = volume.affine[:3, 2], volume.affine[:3, 0]  # one slice spacing, one pixel
    nudged = _moved(foreign, tmp_path / "nudged.dcm", 3, 0.6 * POSITION_TOLERANCE * (normal + row))
    assert np.array_equal(read_dicom_seg(nudged, volume), segments)


@pytest.mark.parametrize(("axis", "expected"), [
    (2, r"frame 4 \(segment \d\) at ImagePositionPatient .* lies 0\.50 of the slice spacing \(1\.50 mm\) from slice"),
    (0, r"frame 4 \(segment \d\) at ImagePositionPatient .* is shifted in-plane by \(0\.50, 0\.00\) pixels"),
])
def test_a_frame_off_the_series_grid_is_an_error_saying_by_how_much(written, tmp_path, axis, expected):
    _, volume, _, path = written
    foreign = _as_other_tools_write_it(path, tmp_path / "foreign.dcm", "spatial-locations-not-stated")
    off = _moved(foreign, tmp_path / "off.dcm", 4, 0.5 * volume.affine[:3, axis])  # half a slice / half a pixel
    with pytest.raises(DataError, match=expected) as error:
        read_dicom_seg(off, volume)
    assert str(error.value).startswith(str(off))
