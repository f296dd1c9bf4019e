"""The one support-set reader (gmiseg_edge.data.support_sets): both folder layouts, 2D images and volumes, the
rule for which label counts, the rule for empty masks, and clear errors naming the file at fault. Real files
(PNG, NIfTI) written and read back."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

from gmiseg_edge.data import DataError, MissingFileError
from gmiseg_edge.data.support_sets import read_support_set


def _label_map(shape: tuple[int, int]) -> np.ndarray:
    """Two structures: label 1 (a square) and label 3 (a disc)."""
    labels = np.zeros(shape, np.uint8)
    labels[10:20, 10:20] = 1
    cv2.circle(labels, (44, 40), 6, 3, -1)
    return labels


def _image(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def _png_folder(root: Path, labels: dict[str, np.ndarray]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (stem, label_map) in enumerate(labels.items()):
        cv2.imwrite(str(root / "images" / f"{stem}.png"), _image(label_map.shape, i))
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), label_map)
    return root


def _nifti(path: Path, array: np.ndarray, spacing=(0.8, 0.8, 3.0)) -> None:
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))


def test_folder_layout_2d_any_nonzero_label_or_the_one_named(tmp_path):
    root = _png_folder(tmp_path / "set", {"a": _label_map((64, 64)), "b": _label_map((64, 64))})
    examples = read_support_set(root)
    assert [e.name for e in examples] == ["a", "b"]
    first = examples[0]
    assert not first.is_volume and first.label is None and first.mask.dtype == bool
    assert first.source == root / "images" / "a.png" and first.mask_path == root / "masks" / "a.png"
    labels = _label_map((64, 64))
    np.testing.assert_array_equal(first.mask, labels != 0)  # named nowhere: every non-zero value
    named = read_support_set(root, label=3)
    assert all(e.label == 3 for e in named)
    np.testing.assert_array_equal(named[0].mask, labels == 3)
    (piece,) = first.slices()
    np.testing.assert_array_equal(piece.image, cv2.imread(str(root / "images" / "a.png"), cv2.IMREAD_UNCHANGED))
    np.testing.assert_array_equal(piece.mask, first.mask)


def test_dataset_json_labels_and_the_conflict_rule(tmp_path):
    root = _png_folder(tmp_path / "set", {"a": _label_map((64, 64)), "b": _label_map((64, 64))})
    entries = [{"image": "images/a.png", "mask": "masks/a.png", "label": 3, "name": "first"},
               {"image": "images/b.png", "mask": "masks/b.png"}]
    (root / "dataset.json").write_text(json.dumps(entries))
    examples = read_support_set(root)  # the json wins over the folders
    assert [(e.name, e.label) for e in examples] == [("first", 3), ("b", None)]
    np.testing.assert_array_equal(examples[0].mask, _label_map((64, 64)) == 3)
    same = read_support_set(root, label=3)  # the entry's label and the set's agree; b takes the set's
    assert [e.label for e in same] == [3, 3]
    with pytest.raises(DataError, match=r"example 'first': its dataset.json entry names label 3 but label 1 was "
                                        r"asked for the whole set") as info:
        read_support_set(root, label=1)
    assert str(root / "dataset.json") in str(info.value)
    with pytest.raises(ValueError, match="non-zero integer"):
        read_support_set(root, label=0)


def test_an_example_without_the_structure_is_refused_naming_its_mask(tmp_path):
    labels = _label_map((64, 64))
    no_disc = np.where(labels == 3, 0, labels).astype(np.uint8)
    root = _png_folder(tmp_path / "set", {"a": labels, "b": no_disc})
    assert len(read_support_set(root, label=1)) == 2
    with pytest.raises(DataError, match=r"mask is empty \(no voxel of label 3; labels present: \[1\]\)") as info:
        read_support_set(root, label=3)
    assert str(root / "masks" / "b.png") in str(info.value)
    cv2.imwrite(str(root / "masks" / "b.png"), np.zeros((64, 64), np.uint8))
    with pytest.raises(DataError, match=r"no non-zero label; labels present: none") as info:
        read_support_set(root)
    assert str(root / "masks" / "b.png") in str(info.value)


def test_volumes_keep_their_geometry_and_give_their_labelled_slices(tmp_path):
    root = tmp_path / "vols"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image = np.random.default_rng(0).normal(0, 100, (40, 48, 12)).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[10:20, 12:30, 3:6] = 2
    labels[10:14, 12:16, 5] = 2
    labels[25:30, 30:40, 8] = 7  # another structure on another slice
    _nifti(root / "images" / "p1.nii.gz", image)
    _nifti(root / "masks" / "p1.nii.gz", labels)
    (example,) = read_support_set(root, label=2)
    assert example.is_volume and example.image.spacing == pytest.approx((0.8, 0.8, 3.0))
    assert example.labelled_indices(2) == [3, 4, 5]
    pieces = example.slices(axis=2)
    assert [p.index for p in pieces] == [3, 4, 5] and pieces[0].spacing == pytest.approx((0.8, 0.8))
    np.testing.assert_array_equal(pieces[0].image, image[:, :, 3].T)
    np.testing.assert_array_equal(pieces[0].mask, labels[:, :, 3].T == 2)
    (largest,) = example.slices(mode="largest")
    assert largest.index == 3
    assert read_support_set(root)[0].labelled_indices(2) == [3, 4, 5, 8]  # every non-zero value


def test_a_bad_folder_is_a_clear_error_naming_it(tmp_path):
    with pytest.raises(MissingFileError):
        read_support_set(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="dataset folder is empty"):
        read_support_set(tmp_path / "empty")
    (tmp_path / "loose").mkdir()
    cv2.imwrite(str(tmp_path / "loose" / "a.png"), _image((16, 16), 0))
    with pytest.raises(DataError, match=r"no dataset\.json and no images/ folder"):
        read_support_set(tmp_path / "loose")
    root = _png_folder(tmp_path / "set", {"a": _label_map((64, 64))})
    cv2.imwrite(str(root / "images" / "b.png"), _image((64, 64), 1))
    with pytest.raises(DataError, match=r"image\(s\) without a mask") as info:
        read_support_set(root)
    assert "b.png" in str(info.value)
    (root / "images" / "b.png").unlink()
    cv2.imwrite(str(root / "masks" / "a.png"), _label_map((32, 32)))
    with pytest.raises(DataError, match=r"does not match mask .* shape \(32, 32\)"):
        read_support_set(root)
