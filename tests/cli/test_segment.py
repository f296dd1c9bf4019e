"""``gmiseg-edge segment`` end to end on shipped sample data: a 2D PNG and a NIfTI volume with --label."""

from __future__ import annotations

import re

import cv2
import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from gmiseg_edge.cli import app
from gmiseg_edge.data import read_image, sample_data_dir

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(exported_models):
    return exported_models("lite_medsam").folder


def test_segment_a_16_bit_png_with_a_label(model_dir, tmp_path):
    folder = sample_data_dir() / "stardist"
    image, labels = read_image(folder / "img2d.tif").array, read_image(folder / "mask2d.tif").array
    assert image.dtype == np.uint16  # normalised by the command (percentile by default)
    cv2.imwrite(str(tmp_path / "nuclei.png"), image)
    cv2.imwrite(str(tmp_path / "nuclei_labels.png"), labels)
    result = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--image", str(tmp_path / "nuclei.png"),
                                 "--mask", str(tmp_path / "nuclei_labels.png"), "--label", "7",
                                 "--out", str(tmp_path / "out"), "--overlay", "--backend", "ort"])
    assert result.exit_code == 0, result.output
    written = cv2.imread(str(tmp_path / "out" / "nuclei_mask.png"), cv2.IMREAD_UNCHANGED)
    assert written.shape == image.shape and set(np.unique(written)) <= {0, 255}
    assert float(re.search(r"Dice (\d\.\d+)", result.output).group(1)) > 0.7  # one nucleus, box from its extent
    overlay = cv2.imread(str(tmp_path / "out" / "nuclei_overlay.png"))
    assert overlay.shape == (*image.shape, 3)


def test_segment_a_nifti_volume_keeps_its_header_and_affine(model_dir, tmp_path):
    folder = sample_data_dir() / "totalsegmentator"
    source = folder / "example_ct_sm.nii.gz"
    result = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--image", str(source),
                                 "--mask", str(folder / "example_seg.nii.gz"), "--label", "33",  # on 3 slices
                                 "--window", "abdomen", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "3 slice(s)" in result.output and "encoder runs 3" in result.output
    assert "on the 3 labelled slice(s)" in result.output  # what its Dice was computed on
    original, written = nib.load(source), nib.load(tmp_path / "out" / "example_ct_sm_mask.nii.gz")
    assert np.array_equal(written.affine, original.affine)
    for field in ("dim", "pixdim", "qform_code", "sform_code", "srow_x", "srow_y", "srow_z", "quatern_b",
                  "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z", "xyzt_units"):
        assert np.array_equal(written.header[field], original.header[field]), field
    mask = np.asarray(written.dataobj)
    assert mask.shape == original.shape and set(np.unique(mask)) == {0, 1}
    assert np.flatnonzero(mask.any(axis=(0, 1))).tolist() == [27, 28, 29]  # only the labelled slices


def test_segment_refuses_unclear_requests(model_dir, tmp_path):
    volume = sample_data_dir() / "totalsegmentator" / "example_ct_sm.nii.gz"
    cases = [
        (["--image", str(volume), "--box", "1,2,30,40"], "needs --slice K"),
        (["--image", str(volume)], "no prompt"),
        (["--image", str(volume), "--label", "5"], "--label needs its label map"),
        (["--image", str(volume), "--box", "1,2,30", "--slice", "3"], "expected four numbers"),
        (["--image", str(volume), "--box", "1,2,30,40", "--label", "5"], "give one prompt source"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--out", str(tmp_path), *args])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output


def test_segment_an_nrrd_volume_from_another_patients_support_set(model_dir, tmp_path):
    """lung1 from lung2's labelled slices: registration carries lung2's lesion to where lung1 has none, so no
    slice is found that way; the appearance search finds lung1's lesion, and the note says so."""
    import nrrd

    folder = sample_data_dir() / "pyradiomics"
    support = tmp_path / "support"
    for sub, name in (("images", "lung2_image.nrrd"), ("masks", "lung2_label.nrrd")):
        (support / sub).mkdir(parents=True)
        (support / sub / "lung2.nrrd").symlink_to(folder / name)
    source = folder / "lung1_image.nrrd"
    result = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--image", str(source),
                                 "--mask", str(folder / "lung1_label.nrrd"), "--support", str(support),
                                 "--window", "lung", "--out", str(tmp_path / "out"), "--backend", "ort",
                                 "--uncertainty"])
    assert result.exit_code == 0, result.output
    # 3 support slices of lung2 + the 3 slices of lung1, each encoded once
    assert "3 slice(s)" in result.output and "encoder runs 6" in result.output, result.output
    assert re.search(r"support set: \d slice\(s\) marked, \d kept connected to slice \d; found by appearance "
                     r"alone", result.output), result.output
    assert float(re.search(r"Dice (\d\.\d+)", result.output).group(1)) > 0.5  # measured 0.594
    written, header = nrrd.read(str(tmp_path / "out" / "lung1_image_mask.nrrd"))
    _, original = nrrd.read(str(source))
    assert written.shape == (512, 512, 3)
    assert header["space"] == original["space"]
    assert np.array_equal(header["space directions"], original["space directions"])
    assert np.array_equal(header["space origin"], original["space origin"])
    spread, spread_header = nrrd.read(str(tmp_path / "out" / "lung1_image_uncertainty.nrrd"))
    assert spread.shape == written.shape and spread.dtype == np.uint8
    assert np.array_equal(spread_header["space origin"], original["space origin"])
    assert spread.max() > 0  # three supports never agree on every pixel of a lesion's edge


def test_uncertainty_needs_a_support_set(model_dir, tmp_path):
    result = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--image", "x.png", "--box", "1,1,5,5",
                                 "--uncertainty", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "needs --support" in result.output


def test_segment_disk_cache_is_reused_and_bounded(model_dir, tmp_path):
    folder = sample_data_dir() / "totalsegmentator"
    args = ["segment", "--model-dir", str(model_dir), "--image", str(folder / "example_ct_sm.nii.gz"),
            "--mask", str(folder / "example_seg.nii.gz"), "--label", "33", "--window", "abdomen",
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    bound = 2.5 * 4 * 2**20 / 2**30  # room for two 4 MiB lite_medsam embeddings of the three slices
    first = runner.invoke(app, [*args, "--cache-max-gb", str(bound)])
    assert first.exit_code == 0, first.output
    assert "encoder runs 3" in first.output
    entries = list((tmp_path / "cache").rglob("*.emb"))
    assert len(entries) == 2 and sum(p.stat().st_size for p in entries) <= bound * 2**30
    second = runner.invoke(app, args)  # default bound (4 GiB): the two kept entries are read, one is encoded
    assert second.exit_code == 0, second.output
    assert "encoder runs 1, cache hits 2 (2 from disk)" in second.output
    assert len(list((tmp_path / "cache").rglob("*.emb"))) == 3
    refused = runner.invoke(app, [*args, "--cache-max-gb", "0"])
    assert refused.exit_code == 1 and "disk cache bound must be a positive number" in refused.output


def test_segment_propagates_through_a_volume_from_its_largest_labelled_slice(model_dir, tmp_path,
                                                                           sample_embedding_cache):
    """--propagate --label: seeded by the label's largest slice, carried through the CT, volume Dice printed."""
    folder = sample_data_dir() / "totalsegmentator"
    ct, labels = folder / "example_ct_sm.nii.gz", folder / "example_seg.nii.gz"
    result = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--image", str(ct), "--mask", str(labels),
                                 "--label", "2", "--window", "abdomen", "--propagate", "--out", str(tmp_path / "out"),
                                 "--backend", "ort", "--cache-dir", str(sample_embedding_cache)])
    assert result.exit_code == 0, result.output
    assert "propagation: seed" in result.output and "down:" in result.output
    assert float(re.search(r"Dice (\d\.\d+)", result.output).group(1)) > 0.75  # right kidney, 3D
    written = nib.load(tmp_path / "out" / "example_ct_sm_mask.nii.gz")
    source = nib.load(folder / "example_ct_sm.nii.gz")
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)


def test_propagate_refuses_a_support_set_and_2d_images(model_dir, tmp_path):
    support = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--image", "x.nii.gz", "--support",
                                  str(tmp_path), "--propagate", "--out", str(tmp_path / "out")])
    assert support.exit_code == 1 and "--propagate starts from" in support.output
    png = tmp_path / "slice.png"
    cv2.imwrite(str(png), np.full((32, 32), 100, np.uint8))
    flat = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--image", str(png), "--box", "2,2,20,20",
                               "--propagate", "--out", str(tmp_path / "out")])
    assert flat.exit_code == 1 and "apply to volumes only" in flat.output


def test_segment_a_volume_from_example_volumes_takes_the_3d_path(model_dir, tmp_path):
    """A support set of example volumes on a volume: registered as volumes (the 3D path), the note says so, and
    --prior / --uncertainty are written with the input's geometry. The example is the scan itself (a stand-in for
    another patient that keeps CI small, cut to 12 of its 30 slices: CI time): the liver must come back.
    ``--support-option locate=affine`` reaches the 3D path (no B-spline stage: the stage that costs most here,
    registering a volume onto itself), and a 2D-only step is refused naming the ones the 3D path takes."""
    folder = sample_data_dir() / "totalsegmentator"
    support = tmp_path / "support"
    for sub, name in (("images", "example_ct_sm.nii.gz"), ("masks", "example_seg.nii.gz")):
        (support / sub).mkdir(parents=True)
        nib.save(nib.load(str(folder / name)).slicer[:, :, 12:24], str(support / sub / "ct.nii.gz"))
    source = support / "images" / "ct.nii.gz"
    result = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--image", str(source),
                                 "--mask", str(support / "masks" / "ct.nii.gz"), "--support", str(support),
                                 "--label", "5", "--window", "abdomen", "--out", str(tmp_path / "out"),
                                 "--backend", "ort", "--uncertainty", "--prior", "--support-option", "locate=affine"])
    assert result.exit_code == 0, result.output
    assert "3D path (volumes registered as volumes, locate=affine): located by anatomy" in result.output, \
        result.output
    assert "b-spline" not in result.output  # the stage did not run (it says so when it runs and does not help)
    assert float(re.search(r"Dice (\d\.\d+)", result.output).group(1)) > 0.8
    original = nib.load(str(source))
    for kind in ("mask", "prior", "uncertainty"):
        written = nib.load(str(tmp_path / "out" / f"ct_{kind}.nii.gz"))
        assert written.shape == original.shape and np.allclose(written.affine, original.affine)
    refused = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--image", str(source), "--support",
                                  str(support), "--label", "5", "--window", "abdomen", "--out", str(tmp_path / "o2"),
                                  "--backend", "ort", "--support-option", "choice=local"])
    assert refused.exit_code == 1 and "choice= is a 2D path step" in refused.output, refused.output
    assert "takes locate=, fusion=" in refused.output and "Traceback" not in refused.output


def test_a_prompted_slice_of_a_volume_is_scored_on_that_slice(model_dir, tmp_path):
    """Issue 27: one prompted slice scored against the whole 3D label read 0.24; on its slice it is ~0.93, and
    the terminal and segment_report.json say what Dice was computed on."""
    import json

    folder = sample_data_dir() / "pyradiomics"
    result = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--image", str(folder / "lung2_image.nrrd"),
                                 "--mask", str(folder / "lung2_label.nrrd"), "--box", "321,334,392,398", "--slice",
                                 "7", "--window", "lung", "--out", str(tmp_path / "out"), "--backend", "ort"])
    assert result.exit_code == 0, result.output
    score = float(re.search(r"Dice (\d\.\d+) on the prompted slice 7", result.output).group(1))
    assert score > 0.9, result.output
    entry = json.loads((tmp_path / "out" / "segment_report.json").read_text())["files"][0]
    assert entry["dice_on"] == "the prompted slice 7" and abs(entry["dice"] - score) < 1e-4


def test_support_options_and_pixel_sizes_reach_the_segmenter(model_dir, tmp_path):
    """``--support-option`` pairs (parsed into the prompt) choose the 2D path segmenter's strategies, and each
    example slice carries its header's in-plane pixel size (rows j, columns i of a slice along k); a served set
    (``physical=False``: its queries come without one) keeps both at 1 mm per pixel."""
    from gmiseg_edge.jobs.segment import SupportSetPrompt, load_supports
    from gmiseg_edge.runtime import load

    image = (np.random.default_rng(0).random((48, 64, 2)) * 255).astype(np.uint8)
    mask = np.zeros((48, 64, 2), np.uint8)
    mask[16:40, 20:44, 1] = 1
    affine = np.diag([0.7, 0.9, 3.0, 1.0])
    for sub, array in (("images", image), ("masks", mask)):
        (tmp_path / sub).mkdir()
        nib.save(nib.Nifti1Image(array, affine), str(tmp_path / sub / "a.nii.gz"))
    prompt = SupportSetPrompt(tmp_path, strategies=(("locate", "affine"), ("fusion", "prior"), ("select", 1)))
    predictor = load(model_dir, backend="ort")
    segmenter = load_supports(predictor, prompt)
    assert (segmenter.locate_method, segmenter.fusion, segmenter.select) == ("affine", "prior", 1)
    assert [s.spacing for s in segmenter.supports] == [pytest.approx((0.9, 0.7))]
    served = load_supports(predictor, SupportSetPrompt(tmp_path), physical=False)
    assert [s.spacing for s in served.supports] == [(1.0, 1.0)]
