"""The format table: every row found by its suffixes and read by its reader, output naming, the help line, and
the dataset scanner driven by it."""

from __future__ import annotations

import shutil
from pathlib import Path

import nrrd
import numpy as np
import pytest

from gmiseg_edge.data import (
    FORMATS,
    DataError,
    Image2D,
    Volume,
    describe_formats,
    find_pairs,
    format_of,
    output_suffix,
    read_image,
    read_volume,
    sample_data_dir,
    save_like,
)
from gmiseg_edge.data.formats import SUFFIXES_2D, SUFFIXES_3D, format_named, mask_formats_for, volume_mask_formats

SAMPLES = sample_data_dir()
CT = SAMPLES / "totalsegmentator" / "example_ct_sm.nii.gz"
BREAST = SAMPLES / "pyradiomics" / "breast1_image.nrrd"
BREAST_SEG = SAMPLES / "pyradiomics" / "breast1_label.nrrd"
NUCLEI = SAMPLES / "stardist" / "img2d.tif"


def test_suffix_constants_and_lookups_come_from_the_table():
    assert tuple(s for f in FORMATS if f.ndim == 2 for s in f.suffixes) == SUFFIXES_2D
    assert tuple(s for f in FORMATS if f.ndim == 3 for s in f.suffixes) == SUFFIXES_3D
    assert len(set(SUFFIXES_2D + SUFFIXES_3D)) == len(SUFFIXES_2D + SUFFIXES_3D)  # one row per suffix
    for row in FORMATS:
        assert format_named(row.name) is row
        for suffix in row.suffixes:
            assert format_of(f"dir/Case_01{suffix.upper()}") is row


@pytest.mark.parametrize(("path", "name", "kind"), [(CT, "nifti", Volume), (BREAST, "nrrd", Volume),
                                                    (NUCLEI, "tiff", Image2D)])
def test_each_sample_is_read_by_its_row(path: Path, name: str, kind: type):
    assert format_of(path).name == name
    image = read_image(path)
    assert isinstance(image, kind)
    if isinstance(image, Volume):
        assert image.format == name


def test_an_unknown_suffix_names_the_file_and_every_known_suffix(tmp_path: Path):
    with pytest.raises(DataError, match=r"unsupported file type '\.xyz'") as exc:
        format_of(tmp_path / "scan.xyz")
    assert str(tmp_path / "scan.xyz") in str(exc.value)
    assert all(suffix in str(exc.value) for row in FORMATS for suffix in row.suffixes)
    with pytest.raises(ValueError, match="unknown file format 'jpg'"):
        format_named("jpg")


@pytest.mark.parametrize(
    ("name", "fmt", "suffix"),
    [
        ("a.png", "auto", ".png"),
        ("a.JPG", "auto", ".png"),
        ("a.tiff", "nifti", ".png"),  # a 2D image's mask is PNG whatever the volume format asked
        ("a.nii", "auto", ".nii"),
        ("a.nii.gz", "auto", ".nii.gz"),
        ("a.nhdr", "auto", ".nrrd"),  # a detached header's mask is one attached file
        ("a.nrrd", "nifti", ".nii.gz"),
        ("a.nii.gz", "nrrd", ".nrrd"),
        ("a.nii.gz", "dicom-seg", ".dcm"),
        ("series_1", "auto", ".dcm"),  # a DICOM series: a DICOM-SEG
        ("series_1", "nifti", ".nii.gz"),
        ("case.npz", "nifti", ".npz"),  # a challenge case answers in its own format
    ],
)
def test_output_suffix(name: str, fmt: str, suffix: str):
    assert output_suffix(name, fmt) == suffix


def test_output_suffix_refuses_a_format_that_cannot_hold_a_volume_mask():
    assert "nifti" in volume_mask_formats() and volume_mask_formats()[-1] == "dicom-seg"
    with pytest.raises(ValueError, match=r"cannot be written as 'png'.*nifti"):
        output_suffix("a.nii.gz", "png")
    with pytest.raises(ValueError, match="unknown file format"):
        output_suffix("a.nii.gz", "vtk")


def test_mask_formats_follow_the_reference():
    assert [f.name for f in mask_formats_for(None)] == ["png"]
    assert [f.name for f in mask_formats_for("nifti")] == ["nifti"]
    assert [f.name for f in mask_formats_for("dicom")] == [f.name for f in FORMATS if f.ndim == 3 and f.write]
    assert mask_formats_for("unknown") == ()


def test_describe_formats_is_one_line_naming_every_input():
    text = describe_formats()
    assert "\n" not in text
    for row in FORMATS:
        assert row.title in text and all(suffix in text for suffix in row.suffixes)
    assert "DICOM" in text and ".npz" in text


def test_detached_nrrd_headers_in_a_dataset_folder(tmp_path: Path):
    """The scanner skips the data file beside a detached header, but not a stray one."""
    volume = read_volume(BREAST)
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    header = {**{k: volume.header[k] for k in ("space", "space directions", "space origin")}, "encoding": "raw"}
    nrrd.write(str(root / "images" / "breast.nhdr"), volume.array, header, detached_header=True, index_order="F")
    shutil.copyfile(BREAST_SEG, root / "masks" / "breast.nrrd")
    assert sorted(p.name for p in (root / "images").iterdir()) == ["breast.nhdr", "breast.raw"]
    (pair,) = find_pairs(root)
    image, mask = pair.read()
    assert pair.image.name == "breast.nhdr" and np.array_equal(image.array, volume.array)
    out = save_like(image, mask.array > 0, tmp_path / f"breast_mask{output_suffix(pair.image)}")
    assert out.name == "breast_mask.nrrd" and np.allclose(read_volume(out).affine, image.affine)
    (root / "images" / "stray.raw").write_bytes(b"\0" * 8)
    with pytest.raises(DataError, match=r"unsupported file type '\.raw'") as exc:
        find_pairs(root)
    assert "stray.raw" in str(exc.value)
