"""gmiseg_edge.data works in a process where importing torch fails."""

from tests.no_torch import run_without_torch


def test_data_package_needs_no_torch():
    proc = run_without_torch(
        """
        import sys
        import numpy as np
        from gmiseg_edge.data import (
            apply_window, load_sample_cases, load_sample_pair, percentile_to_uint8, read_volume,
            sample_data_dir, volume_slices,
        )
        from gmiseg_edge.data.support_sets import read_support_set  # the one support-set reader

        image = read_volume(sample_data_dir() / "pyradiomics" / "lung2_image.nrrd")
        labels = read_volume(sample_data_dir() / "pyradiomics" / "lung2_label.nrrd")
        slices = volume_slices(image, labels, 1, mode="labelled")
        windowed = apply_window(slices[0].image, "lung")
        assert windowed.dtype == np.uint8 and windowed.shape == (512, 512)
        nuclei, _ = load_sample_pair("dsb_nuclei")
        assert percentile_to_uint8(nuclei.array).max() == 255
        cases = load_sample_cases(["totalseg_abdomen", "brain1"])
        assert len(cases) == 5
        bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")]
        assert not bad, bad
        print("ok", len(slices), len(cases))
        """
    )
    assert "ok 11 5" in proc.stdout
