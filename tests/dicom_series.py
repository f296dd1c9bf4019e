"""The tests' DICOM CT series: written by the library's :mod:`gmiseg_edge.data.sample_dicom` (also what
``gmiseg-edge samples --copy`` writes)."""

from gmiseg_edge.data.sample_dicom import INTERCEPT, RAS_TO_LPS, sample_ct, slice_dataset, write_series

__all__ = ["INTERCEPT", "RAS_TO_LPS", "sample_ct", "slice_dataset", "write_series"]
