"""MetaImage (.mha, .mhd + data file) through SimpleITK: the shipped CT round-trips voxel for voxel with its
geometry, masks are written in the input's format, the dataset scanner takes it from the format table, and a
header may not make the reader open a file outside its folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gmiseg_edge.data import (
    DataError,
    find_pairs,
    load_sample_pair,
    output_suffix,
    read_mask,
    read_volume,
    save_like,
)
from gmiseg_edge.data.images import lps_affine
from gmiseg_edge.data.metaimage import write_metaimage

sitk = pytest.importorskip("SimpleITK")

GEOMETRY_MM = 1e-9  # MetaIO writes 17 significant digits: the geometry comes back to rounding


@pytest.fixture(scope="module")
def ct():
    image, labels = load_sample_pair("totalseg_abdomen")  # the shipped NIfTI CT (int16 HU) and its labels
    return image, labels


@pytest.fixture(scope="module")
def mhd(ct, tmp_path_factory) -> Path:
    """The CT as a detached header and raw data file written by SimpleITK itself (not by our writer)."""
    folder = tmp_path_factory.mktemp("mhd")
    image = sitk.ReadImage(str(ct[0].path))
    sitk.WriteImage(image, str(folder / "ct.mhd"))
    assert sorted(p.name for p in folder.iterdir()) == ["ct.mhd", "ct.raw"]
    return folder / "ct.mhd"


def _oblique_nifti(ct, path: Path) -> Path:
    """The CT's voxels under a rotated, anisotropic affine with an off-grid origin."""
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.8, 2.5])
    affine[:3, 3] = [-12.345678, 7.123456, 3.333333]
    nib.save(nib.Nifti1Image(ct[0].array, affine), str(path))
    return path


@pytest.mark.parametrize("oblique", [False, True], ids=["shipped", "oblique"])
def test_nifti_to_metaimage_round_trip(ct, tmp_path: Path, oblique: bool):
    nifti = read_volume(_oblique_nifti(ct, tmp_path / "obl.nii.gz") if oblique else ct[0].path)
    out = tmp_path / "ct.mha"
    write_metaimage(nifti, nifti.array, out)
    back = read_volume(out)
    assert back.format == "metaimage" and back.space == "LPS" and back.path == out
    assert back.array.dtype == nifti.array.dtype == np.int16 and np.array_equal(back.array, nifti.array)
    np.testing.assert_allclose(lps_affine(back), lps_affine(nifti), rtol=0, atol=GEOMETRY_MM)
    np.testing.assert_allclose(back.spacing, np.linalg.norm(nifti.affine[:3, :3], axis=0), rtol=1e-12)
    np.testing.assert_allclose(back.spacing, nifti.spacing, rtol=1e-6)  # NIfTI's pixdim is float32
    # ITK's own NIfTI reader puts the same voxel at the same LPS point: the convention is ITK's, not ours
    itk = sitk.ReadImage(str(nifti.path))
    corner = np.asarray(back.array.shape) - 1
    expected = itk.TransformContinuousIndexToPhysicalPoint(corner.astype(float).tolist())
    np.testing.assert_allclose((back.affine @ [*corner, 1])[:3], expected, atol=1e-3)


def test_detached_header_and_raw_file(ct, mhd: Path):
    volume = read_volume(mhd)
    assert volume.format == "metaimage" and np.array_equal(volume.array, ct[0].array)
    np.testing.assert_allclose(lps_affine(volume), lps_affine(ct[0]), atol=1e-4)  # NIfTI's float32 geometry
    assert output_suffix(mhd) == ".mha"  # a detached header's mask is one file


def test_mask_is_written_in_the_inputs_format(ct, tmp_path: Path):
    image = tmp_path / "ct.mha"
    write_metaimage(ct[0], ct[0].array, image)
    volume = read_volume(image)
    liver = ct[1].array == 5
    out = save_like(volume, liver, tmp_path / f"ct_mask{output_suffix(image)}")
    mask = read_mask(out)
    assert out.name == "ct_mask.mha" and mask.array.dtype == np.uint8 and np.array_equal(mask.array, liver)
    np.testing.assert_allclose(mask.affine, volume.affine, rtol=0, atol=GEOMETRY_MM)
    for wrong in ("ct_mask.nii.gz", "ct_mask.mhd"):
        with pytest.raises(DataError, match=r"is METAIMAGE: write to \.mha") as exc:
            save_like(volume, liver, tmp_path / wrong)
        assert wrong in str(exc.value) and not (tmp_path / wrong).exists()


def test_dataset_folder_of_metaimages(ct, mhd: Path, tmp_path: Path):
    """The scanner takes .mha/.mhd from the format table and skips the .raw beside its header."""
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    for name in ("ct.mhd", "ct.raw"):
        shutil.copyfile(mhd.parent / name, root / "images" / name)
    save_like(read_volume(root / "images" / "ct.mhd"), ct[1].array, root / "masks" / "ct.mha")
    (pair,) = find_pairs(root)
    image, labels = pair.read()
    assert (pair.image.name, pair.mask.name) == ("ct.mhd", "ct.mha")
    assert np.array_equal(image.array, ct[0].array) and np.array_equal(labels.array, ct[1].array)


def _header(mhd: Path, data_file: str) -> str:
    lines = mhd.read_text().splitlines()
    return "\n".join(line for line in lines if not line.startswith("ElementDataFile")) + \
        f"\nElementDataFile = {data_file}\n"


def test_a_header_may_only_name_a_data_file_in_its_folder_or_below(mhd: Path, tmp_path: Path):
    case = tmp_path / "case"
    (case / "data").mkdir(parents=True)
    shutil.copyfile(mhd.with_suffix(".raw"), tmp_path / "secret.raw")  # outside the header's folder
    shutil.copyfile(mhd.with_suffix(".raw"), case / "data" / "ct.raw")
    below = case / "below.mhd"
    below.write_text(_header(mhd, "data/ct.raw"))
    assert read_volume(below).array.shape == (122, 101, 30)  # below the header's folder: read
    (case / "link.raw").symlink_to(tmp_path / "secret.raw")
    refused = {"up.mhd": "../secret.raw", "absolute.mhd": str(tmp_path / "secret.raw"),
               "link.mhd": "link.raw", "attached.mha": "../secret.raw"}
    for name, data_file in refused.items():
        (case / name).write_text(_header(mhd, data_file))
        with pytest.raises(DataError, match="lies outside the header's folder") as exc:
            read_volume(case / name)
        assert str(case / name) in str(exc.value)
    (case / "list.mhd").write_text(_header(mhd, "LIST") + "../secret.raw\n")
    with pytest.raises(DataError, match="a list of files or a file-name pattern is not read"):
        read_volume(case / "list.mhd")
    (case / "gone.mhd").write_text(_header(mhd, "gone.raw"))
    with pytest.raises(DataError, match=r"gone\.raw .* is missing"):
        read_volume(case / "gone.mhd")


def test_without_simpleitk_the_error_says_what_to_install(tmp_path: Path):
    path = tmp_path / "ct.mha"
    path.write_text("ObjectType = Image\nElementDataFile = LOCAL\n")
    code = f"""
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "SimpleITK":
                    raise ImportError("SimpleITK is blocked in this test")

        sys.meta_path.insert(0, Block())
        from gmiseg_edge.data import DataError, read_volume
        try:
            read_volume({str(path)!r})
        except DataError as exc:
            print(exc)
        """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, check=True)
    assert f"{path}: MetaImage files need SimpleITK" in proc.stdout and "gmiseg-edge[cpu]" in proc.stdout
