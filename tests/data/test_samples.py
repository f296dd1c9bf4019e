"""The shipped sample data: index, integrity, size budget, 2D cases and the reference slice."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gmiseg_edge.data import (
    apply_window,
    load_reference_slice,
    load_sample_cases,
    load_sample_pair,
    load_sample_slice,
    sample_case_names,
    sample_data_dir,
    sample_index,
)

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(__file__).resolve().parents[3] / "shared/fixtures/reference"
ARCHIVES = Path(os.environ.get("GMISEG_SAMPLE_ARCHIVES", "/tmp/pkgs"))


@pytest.fixture(scope="module")
def default_cases():
    return load_sample_cases()


def test_index_lists_every_case_with_its_metadata():
    assert sample_case_names() == [
        "brain1", "brain2", "breast1", "lung1", "lung2", "totalseg_abdomen", "dsb_nuclei",
    ]  # fmt: skip
    for entry in sample_index():
        for key in ("name", "modality", "image", "mask", "labels", "window", "source", "sha256"):
            assert key in entry, (entry["name"], key)
        assert entry["source"]["package"] and entry["source"]["licence"]
        assert all(len(d) == 64 for d in entry["source"]["files"].values())
    totalseg = next(e for e in sample_index() if e["name"] == "totalseg_abdomen")
    assert totalseg["labels"] == {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3}
    assert totalseg["window"] == "abdomen"


def test_shipped_files_match_their_sha256():
    folder = sample_data_dir()
    for entry in sample_index():
        for name, digest in entry["sha256"].items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name


def test_sample_data_fits_the_budget():
    total = sum(p.stat().st_size for p in sample_data_dir().rglob("*") if p.is_file())
    assert total <= 5_000_000, total
    listed = {name for e in sample_index() for name in e["sha256"]} | {"cases.json", "README.md"}
    shipped = {
        p.relative_to(sample_data_dir()).as_posix() for p in sample_data_dir().rglob("*") if p.is_file()
    }
    assert shipped == listed


def test_readme_states_sources_and_model_labels():
    readme = (sample_data_dir() / "README.md").read_text()
    assert "not manual ground truth" in readme
    for entry in sample_index():
        for digest in entry["source"]["files"].values():
            assert digest in readme
    for licence in ("BSD-3-Clause", "Apache-2.0", "CC0"):
        assert licence in readme


def test_default_cases_one_slice_per_label(default_cases):
    names = [c.name for c in default_cases]
    assert names == [
        "brain1/lesion", "brain2/lesion", "breast1/lesion", "lung1/lesion", "lung2/lesion",
        "totalseg_abdomen/liver", "totalseg_abdomen/spleen", "totalseg_abdomen/kidney_right",
        "totalseg_abdomen/kidney_left", "dsb_nuclei/nuclei",
    ]  # fmt: skip
    for case in default_cases:
        assert case.image.dtype == np.uint8 and case.image.ndim == 2
        assert case.mask.dtype == bool and case.mask.shape == case.image.shape and case.mask.any()
        assert len(case.spacing) == 2 and all(s > 0 for s in case.spacing)
        assert case.source and case.modality
        assert case.image.max() > case.image.min()


def test_default_is_largest_slice(default_cases):
    liver = next(c for c in default_cases if c.name == "totalseg_abdomen/liver")
    _, labels = load_sample_pair("totalseg_abdomen")
    areas = (labels.array == 5).sum(axis=(0, 1))
    assert liver.slice_index == int(np.argmax(areas)) and liver.mask.sum() == areas.max()
    assert liver.spacing == (3.0, 3.0) and liver.image.shape == (101, 122)
    lung2 = next(c for c in default_cases if c.case == "lung2")
    assert (lung2.slice_index, lung2.source_slice_index) == (7, 22)


def test_all_and_middle_slices():
    every = load_sample_cases(["lung2"], slices="all")
    assert [c.source_slice_index for c in every] == list(range(15, 26))
    middle = load_sample_cases(["totalseg_abdomen"], labels=["liver"], slices="middle")
    assert [c.axis for c in middle] == [0, 1, 2] and all(c.mask.any() for c in middle)
    assert middle[0].image.shape == (30, 101)


def test_nuclei_union_and_instances(default_cases):
    union = next(c for c in default_cases if c.case == "dsb_nuclei")
    instances = load_sample_cases(["dsb_nuclei"], instances=True)
    _, labels = load_sample_pair("dsb_nuclei")
    assert len(instances) == len(np.unique(labels.array)) - 1
    assert all(np.array_equal(c.image, union.image) for c in instances[:3])
    assert np.array_equal(np.logical_or.reduce([c.mask for c in instances]), union.mask)
    assert instances[0].name == f"dsb_nuclei/instance_{instances[0].label_value:03d}"
    assert np.array_equal(instances[0].mask, labels.array == instances[0].label_value)


def test_window_override_and_bad_arguments():
    (case,) = load_sample_cases(["lung2"], window=(-1000.0, 400.0))
    image, _ = load_sample_pair("lung2")
    assert np.array_equal(case.image, apply_window(image.array[:, :, 7].T, (-1000, 400)))
    with pytest.raises(ValueError, match=r"unknown sample case 'lung3'.*lung2"):
        load_sample_cases(["lung3"])
    with pytest.raises(ValueError, match="no label"):
        load_sample_cases(["totalseg_abdomen"], labels=["pancreas"])
    with pytest.raises(ValueError, match="slices"):
        load_sample_cases(slices="every")
    with pytest.raises(ValueError, match=r"not shipped.*15\.\.25"):
        load_sample_slice("lung2", 3)


def test_reference_slice_is_source_slice_22():
    case = load_reference_slice()
    assert (case.case, case.axis, case.source_slice_index, case.slice_index) == ("lung2", 2, 22, 7)
    assert case.image.shape == (512, 512) and case.mask.sum() == 3412
    ys, xs = np.nonzero(case.mask)
    assert [xs.min(), ys.min(), xs.max(), ys.max()] == [321, 334, 392, 398]


@pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"reference fixtures not found at {REFERENCE}")
def test_reference_slice_matches_shared_fixture(default_cases):
    reference = np.load(REFERENCE / "lung2_slice.npz")
    case = load_reference_slice()
    assert int(reference["slice_index"]) == case.source_slice_index
    assert np.array_equal(case.image, reference["image"])
    assert np.array_equal(case.mask, reference["mask"].astype(bool))
    ys, xs = np.nonzero(case.mask)
    assert np.array_equal([xs.min(), ys.min(), xs.max(), ys.max()], reference["box"])
    default = next(c for c in default_cases if c.case == "lung2")  # the default lung2 case is that slice
    assert np.array_equal(default.image, reference["image"]) and np.array_equal(default.mask, case.mask)


@pytest.mark.skipif(
    not (ARCHIVES / "pyradiomics_bhklab-3.1.4.tar.gz").is_file(),
    reason=f"source archives not found in {ARCHIVES} (set GMISEG_SAMPLE_ARCHIVES)",
)
def test_script_rebuilds_identical_sample_data():
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "make_sample_data.py"),
            "--archives",
            str(ARCHIVES),
            "--check",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout
