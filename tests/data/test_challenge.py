"""The CVPR 2024 "MedSAM on laptop" case format: 2D and 3D cases read, answers written as the challenge reads them,
malformed cases refused naming the file."""

from __future__ import annotations

import numpy as np
import pytest

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.data.challenge import read_challenge_case, write_segs
from gmiseg_edge.jobs.challenge import boxes_from_labels
from tests.challenge_cases import write_2d_case, write_3d_case


def test_2d_and_3d_cases(tmp_path):
    two = read_challenge_case(write_2d_case(tmp_path / "2D_CT_case.npz"))
    assert not two.is_3d and two.image.shape == (101, 122, 3) and two.spatial_shape == (101, 122)
    assert two.boxes.shape == (2, 4) and two.spacing == (1.0, 1.0) and two.gts.shape == (101, 122)
    x0, y0, x1, y1 = two.boxes[0]
    rows, cols = np.nonzero(two.gts == 1)
    assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max(), rows.max())  # x = column, y = row

    path = tmp_path / "3D_CT_case.npz"
    write_3d_case(path)
    with np.load(path) as data:
        saved = dict(data)
    saved["spacing"] = np.array([0.8, 0.7, 2.5])  # SimpleITK order (x, y, z)
    np.savez(path, **saved)
    three = read_challenge_case(path)
    assert three.is_3d and three.image.shape == (12, 101, 122) and three.boxes.shape == (2, 6)
    assert three.spacing == (2.5, 0.7, 0.8)  # per array axis (z, y, x)
    z = np.nonzero((three.gts == 2).any(axis=(1, 2)))[0]
    assert (three.boxes[1][2], three.boxes[1][5]) == (z.min(), z.max())


def test_answer_file(tmp_path):
    segs = np.zeros((5, 6), np.int64)
    segs[1:3, 2:4] = 2
    path = write_segs(tmp_path / "2D_x.npz", segs)
    with np.load(path) as data:
        assert data.files == ["segs"] and data["segs"].dtype == np.uint8 and np.array_equal(data["segs"], segs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2D_x.npz"]  # no temporary left
    assert boxes_from_labels(segs).tolist() == [[2, 1, 3, 2]]  # label 1 absent: no box; label 2's


@pytest.mark.parametrize("content, message", [
    ({"gts": np.zeros((4, 4), np.uint8)}, "has no 'imgs' array"),
    ({"imgs": np.zeros((8, 8, 3), np.uint8), "boxes": np.zeros((1, 6))}, r"a 2D case needs \(N, 4\) boxes"),
    ({"imgs": np.zeros((8, 8, 3), np.uint8), "boxes": np.array([[1.0, 1, 9, 5]])}, "box 1 .* outside the image"),
    ({"imgs": np.zeros((3, 8, 8), np.uint8), "boxes": np.array([[1.0, 1, 2, 5, 5, 1]])}, "box 1 .* is empty"),
    ({"imgs": np.zeros((8, 8, 3), np.uint8), "gts": np.zeros((8, 7), np.uint8)}, "'gts' has shape"),
    ({"imgs": np.full((8, 8, 3), 300.0)}, "the challenge format is 0..255"),
    ({"imgs": np.array([object()], dtype=object)}, "cannot read as a challenge .npz case"),  # pickles refused
])
def test_bad_cases_name_the_file(tmp_path, content, message):
    path = tmp_path / "3D_bad.npz" if content.get("imgs", np.zeros(1)).shape[:1] == (3,) else tmp_path / "bad.npz"
    np.savez(path, **content)
    with pytest.raises(DataError, match=message) as error:
        read_challenge_case(path)
    assert str(path) in str(error.value)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="cannot read as a challenge"):
        read_challenge_case(tmp_path / "junk.npz")
