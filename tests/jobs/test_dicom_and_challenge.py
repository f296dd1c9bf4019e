"""End to end with a real exported model: a DICOM CT series segmented to a DICOM-SEG (the same masks as the NIfTI
of the same voxels), challenge .npz cases in and out, and NSD in the eval table."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from gmiseg_edge.cli import app
from gmiseg_edge.data import read_image
from gmiseg_edge.data.dicom_seg import read_dicom_seg
from gmiseg_edge.jobs.evaluate import EvalConfig, evaluate
from gmiseg_edge.metrics import dice
from tests.challenge_cases import write_2d_case, write_3d_case
from tests.dicom_series import RAS_TO_LPS, sample_ct, write_series

runner = CliRunner()
CROP = (slice(None), slice(None), slice(12, 16))  # the whole slice, 4 slices holding the liver (label 5)


@pytest.fixture(scope="module")
def model_dir(exported_models):
    return exported_models("lite_medsam").folder


def test_dicom_series_to_dicom_seg_matches_the_nifti_route(model_dir, tmp_path, sample_embedding_cache):
    hu, affine, labels = sample_ct(CROP)
    write_series(tmp_path / "series", hu, affine)
    write_series(tmp_path / "series" / "scout", hu[:, :, :2], affine, series_number=1, description="scout")
    nib.save(nib.Nifti1Image(hu, RAS_TO_LPS @ affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(labels, RAS_TO_LPS @ affine), tmp_path / "labels.nii.gz")
    common = ["--model-dir", str(model_dir), "--mask", str(tmp_path / "labels.nii.gz"), "--label", "5",
              "--window", "abdomen", "--backend", "ort", "--cache-dir", str(sample_embedding_cache)]  # CI time: the
    # three runs below see the same four slices (equal pixels give equal embeddings, cached or not)
    result = runner.invoke(app, ["segment", *common, "--image", str(tmp_path / "series"), "--structure", "liver",
                                 "--series", "abdomen", "--out", str(tmp_path / "out")])  # of two series
    assert result.exit_code == 0, result.output
    assert "4 slice(s)" in result.output
    seg_path = tmp_path / "out" / "series_mask.dcm"
    volume = read_image(tmp_path / "series", series="2")
    from_seg = read_dicom_seg(seg_path, volume).astype(bool)  # each frame placed by its source SOP instance

    result = runner.invoke(app, ["segment", *common, "--image", str(tmp_path / "ct.nii.gz"),
                                 "--out", str(tmp_path / "nifti")])
    assert result.exit_code == 0, result.output
    from_nifti = np.asarray(nib.load(tmp_path / "nifti" / "ct_mask.nii.gz").dataobj).astype(bool)
    assert from_seg.any() and np.array_equal(from_seg, from_nifti)  # same voxels in, same masks out
    assert dice(from_seg, labels == 5) > 0.8

    seg = pydicom.dcmread(seg_path)
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.header.uid
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "liver" and segment.SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert segment.SegmentAlgorithmName == "gmiseg-edge lite_medsam"

    # several objects (every label id of the map, one box each on each slice): one segment per object
    result = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--mask", str(tmp_path / "labels.nii.gz"),
                                 "--window", "abdomen", "--backend", "ort", "--image", str(tmp_path / "series"),
                                 "--series", "abdomen", "--instances", "--structure", "organ",
                                 "--cache-dir", str(sample_embedding_cache),
                                 "--out", str(tmp_path / "objects")])
    assert result.exit_code == 0, result.output
    objects_path = tmp_path / "objects" / "series_mask.dcm"
    objects = read_dicom_seg(objects_path, volume)
    names = [s.SegmentLabel for s in pydicom.dcmread(objects_path).SegmentSequence]
    assert len(names) >= 2 and names == [f"organ {k}" for k in range(1, len(names) + 1)], names
    assert objects.max() == len(names)
    assert dice(objects > 0, labels > 0) > 0.8  # 0.877 when written

    result = runner.invoke(app, ["segment", *common, "--image", str(tmp_path / "ct.nii.gz"),
                                 "--format", "dicom-seg", "--out", str(tmp_path / "refused")])
    assert result.exit_code == 1 and "dicom-seg needs a DICOM source series" in result.output
    assert not list((tmp_path / "refused").glob("*.dcm"))  # nothing half-written


def test_challenge_cases_in_and_out_and_nsd_in_eval(model_dir, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    write_2d_case(cases / "2D_CT_sample.npz")
    write_3d_case(cases / "3D_CT_sample.npz", depth=slice(12, 16))
    result = runner.invoke(app, ["segment", "--model-dir", str(model_dir), "--input", str(cases),
                                 "--out", str(tmp_path / "segs"), "--backend", "ort"])
    assert result.exit_code == 0, result.output
    for name in ("2D_CT_sample", "3D_CT_sample"):
        with np.load(tmp_path / "segs" / f"{name}.npz") as answer, np.load(cases / f"{name}.npz") as case:
            assert answer.files == ["segs"] and answer["segs"].dtype == np.uint8
            assert answer["segs"].shape == case["gts"].shape
            for label in (1, 2):  # box n paints label n
                assert dice(answer["segs"] == label, case["gts"] == label) > 0.8, (name, label)

    json_path = tmp_path / "eval.json"
    result = runner.invoke(app, ["eval", "--model-dir", str(model_dir), "--data", str(cases), "--backend", "ort",
                                 "--nsd-tolerance", "3", "--json", str(json_path)])
    assert result.exit_code == 0, result.output
    assert "NSD at 3 mm" in result.output
    data = json.loads(json_path.read_text())
    assert [c["case"] for c in data["cases"]] == ["2D_CT_sample/1", "2D_CT_sample/2", "3D_CT_sample/1",
                                                  "3D_CT_sample/2"]
    assert all(0.7 < c["nsd"] <= 1.0 and c["dice"] > 0.8 for c in data["cases"])
    assert data["summary"]["all"]["nsd"]["n_used"] == 4 and data["config"]["nsd_tolerance_mm"] == 3.0


def test_nsd_beside_the_other_metrics_on_samples(model_dir):
    strict, loose = (evaluate(EvalConfig(model_dir, prompt="box", cases=("lung2",), nsd_tolerance_mm=t))
                     for t in (0.0, 5.0))
    for a, b in zip(strict.cases, loose.cases, strict=True):
        assert a.scores == b.scores and 0.0 <= a.nsd <= b.nsd <= 1.0
        assert a.row()["nsd"] == a.nsd
    assert strict.summary["all"]["nsd"]["mean"] < loose.summary["all"]["nsd"]["mean"]


def test_support_set_masks_are_automatic_in_the_seg(model_dir, tmp_path):
    from pathlib import Path

    from gmiseg_edge.jobs.segment import SegmentOptions, SupportSetPrompt, write_mask
    from gmiseg_edge.runtime import load

    hu, affine, labels = sample_ct()
    write_series(tmp_path / "series", hu, affine)
    volume = read_image(tmp_path / "series")
    options = SegmentOptions(prompt=SupportSetPrompt(Path("liver_examples")))
    path = write_mask(volume, labels == 5, tmp_path / "series_mask.dcm", options,
                      load(model_dir, backend="ort").model_name)
    (segment,) = pydicom.dcmread(path).SegmentSequence
    assert segment.SegmentAlgorithmType == "AUTOMATIC" and segment.SegmentLabel == "liver_examples"
    assert np.array_equal(read_dicom_seg(path, volume).astype(bool), labels == 5)
