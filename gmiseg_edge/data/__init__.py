"""Data I/O for gmiseg-edge (numpy, OpenCV, Pillow, nibabel, pynrrd, tifffile; pydicom and highdicom for
DICOM, imported when a DICOM input or output is met; never torch).

Readers and writers for the 2D and 3D formats of one table (:mod:`gmiseg_edge.data.formats`), 3D to 2D slicing,
windows (intensities to uint8, :mod:`gmiseg_edge.data.intensity`), dataset folders and the shipped sample data.
Every error on bad input is a :class:`DataError` naming the file.
"""

from gmiseg_edge.core.errors import DataError, MissingFileError
from gmiseg_edge.data.dataset import Pair, find_pairs, read_pair
from gmiseg_edge.data.formats import FORMATS, Format, describe_formats, file_stem, file_suffix, format_of, output_suffix
from gmiseg_edge.data.images import Image2D, Volume
from gmiseg_edge.data.intensity import (
    WINDOWS,
    Window,
    WindowRange,
    apply_window,
    parse_window,
    percentile_to_uint8,
    rescale_to_uint8,
    to_uint8,
    window_from_width_level,
    window_range,
)
from gmiseg_edge.data.labels import instance_masks, label_values, require_nonempty, select_label
from gmiseg_edge.data.readers import is_dicom, read_image, read_image_2d, read_mask, read_volume
from gmiseg_edge.data.samples import (
    SampleCase,
    load_reference_slice,
    load_sample_cases,
    load_sample_pair,
    load_sample_slice,
    sample_case_names,
    sample_data_dir,
    sample_index,
)
from gmiseg_edge.data.slicing import (
    Slice2D,
    extract_slices,
    labelled_indices,
    largest_index,
    middle_indices,
    slice_2d,
    slice_spacing,
    volume_slices,
)
from gmiseg_edge.data.writers import save_like

__all__ = [
    "FORMATS",
    "WINDOWS",
    "DataError",
    "Format",
    "Image2D",
    "MissingFileError",
    "Pair",
    "SampleCase",
    "Slice2D",
    "Volume",
    "Window",
    "WindowRange",
    "apply_window",
    "describe_formats",
    "extract_slices",
    "file_stem",
    "file_suffix",
    "find_pairs",
    "format_of",
    "instance_masks",
    "is_dicom",
    "label_values",
    "labelled_indices",
    "largest_index",
    "load_reference_slice",
    "load_sample_cases",
    "load_sample_pair",
    "load_sample_slice",
    "middle_indices",
    "output_suffix",
    "parse_window",
    "percentile_to_uint8",
    "read_image",
    "read_image_2d",
    "read_mask",
    "read_pair",
    "read_volume",
    "require_nonempty",
    "rescale_to_uint8",
    "sample_case_names",
    "sample_data_dir",
    "sample_index",
    "save_like",
    "select_label",
    "slice_2d",
    "slice_spacing",
    "to_uint8",
    "volume_slices",
    "window_from_width_level",
    "window_range",
]
