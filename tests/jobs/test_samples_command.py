"""``gmiseg-edge samples``: lists the shipped data and copies it out with a DICOM series and a support set that
the readers take (issue 27)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from gmiseg_edge.cli import app
from gmiseg_edge.core.errors import InputError
from gmiseg_edge.data import find_pairs, read_image, sample_data_dir
from gmiseg_edge.data.images import lps_affine
from gmiseg_edge.jobs.samples import DICOM_SERIES, SUPPORT_SET, copy_samples, sample_files

runner = CliRunner()


def test_samples_lists_and_copies_the_sample_data(tmp_path):
    listed = runner.invoke(app, ["samples"])
    assert listed.exit_code == 0, listed.output
    assert "totalsegmentator/example_ct_sm.nii.gz" in listed.output and "dicom/ct_series/" in listed.output

    result = runner.invoke(app, ["samples", "--copy", str(tmp_path / "samples")])
    assert result.exit_code == 0, result.output
    root = tmp_path / "samples"
    for f in sample_files():
        assert (root / f.path).exists(), f.path
    assert (root / "pyradiomics" / "lung2_image.nrrd").read_bytes() == (
        sample_data_dir() / "pyradiomics" / "lung2_image.nrrd").read_bytes()
    series = read_image(root / DICOM_SERIES)  # a real series, its label map on its grid with the liver
    labels = read_image(root / "dicom" / "ct_series_labels.nii.gz")
    assert series.format == "dicom" and series.array.shape == labels.array.shape and (labels.array == 5).any()
    assert np.allclose(lps_affine(series), lps_affine(labels), atol=1e-3)  # the same grid in patient space
    (pair,) = find_pairs(root / SUPPORT_SET)  # the documented dataset layout
    assert pair.name == "lung2"

    with pytest.raises(InputError, match="not an empty folder"):  # never over another folder
        copy_samples(root)
    again = runner.invoke(app, ["samples", "--copy", str(root)])
    assert again.exit_code == 1 and "not an empty folder" in again.output
