"""Read 2D images and 3D volumes (every row of :data:`gmiseg_edge.data.formats.FORMATS`, and DICOM series) and
their masks.

Arrays keep the file's dtype (DICOM: the Modality LUT applied, see :mod:`gmiseg_edge.data.dicom`). 2D images
are rows x columns (HxW) or HxWx3 in RGB order. Volumes keep the file's voxel index order (i, j, k) with the
voxel spacing in mm along each index, and the affine and header needed to write a result back with
:func:`gmiseg_edge.data.writers.save_like`. An image and its mask together: :func:`gmiseg_edge.data.read_pair`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np

from gmiseg_edge.core.errors import DataError, MissingFileError
from gmiseg_edge.data.formats import SUFFIXES_2D, SUFFIXES_3D, file_stem, file_suffix, find_format, format_of
from gmiseg_edge.data.images import Image2D, Volume, check_spacing

NanPolicy = Literal["error", "zero", "keep"]

__all__ = [  # the names re-exported here keep working (Image2D and Volume live in gmiseg_edge.data.images)
    "SUFFIXES_2D",
    "SUFFIXES_3D",
    "Image2D",
    "NanPolicy",
    "Volume",
    "as_label_array",
    "check_spacing",
    "file_stem",
    "file_suffix",
    "is_dicom",
    "read_image",
    "read_image_2d",
    "read_mask",
    "read_volume",
]


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MissingFileError(path)
    if path.is_dir():
        raise DataError("is a folder, expected a file", path)


def _check_finite(array: np.ndarray, path: Path, nan: NanPolicy, unit: str) -> np.ndarray:
    if nan not in ("error", "zero", "keep"):
        raise ValueError(f"nan must be 'error', 'zero' or 'keep', got {nan!r}")
    if not np.issubdtype(array.dtype, np.floating) or nan == "keep":
        return array
    bad = ~np.isfinite(array)
    if not bad.any():
        return array
    if nan == "zero":
        return np.where(bad, 0, array).astype(array.dtype)
    n_nan = int(np.isnan(array).sum())
    raise DataError(
        f"{n_nan} NaN and {int(bad.sum()) - n_nan} infinite {unit} value(s) of {array.size}; "
        "pass nan='zero' to replace them with 0 or nan='keep' to keep them",
        path,
    )


# ---------------------------------------------------------------- 2D


def _as_2d_layout(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3):
        return np.ascontiguousarray(array)
    raise DataError(f"has shape {array.shape}; expected a 2D image (HxW or HxWx3)", path)


def read_image_2d(path: str | Path, *, nan: NanPolicy = "error") -> Image2D:
    """Read a 2D image (a 2D row of the format table: PNG, JPEG, TIFF), keeping its dtype: HxW (grayscale) or
    HxWx3 (RGB; alpha dropped)."""
    path = Path(path)
    _check_file(path)
    found = format_of(path)
    if found.ndim != 2:
        raise DataError("is a 3D volume; expected a 2D image (use read_volume)", path)
    array = _check_finite(_as_2d_layout(found.read(path), path), path, nan, "pixel")
    return Image2D(array=array, path=path)


# ---------------------------------------------------------------- 3D


def is_dicom(path: str | Path) -> bool:
    """True for a DICOM series folder, a DICOMDIR or a DICOM file (see :func:`gmiseg_edge.data.dicom.is_dicom_path`)."""
    path = Path(path)
    if find_format(path) is not None:
        return False
    return _dicom().is_dicom_path(path)


def _dicom():
    """The DICOM reader, imported when first needed (pydicom comes with the ``dicom`` extra)."""
    try:
        from gmiseg_edge.data import dicom
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise DataError(f"reading DICOM needs pydicom ({exc}); install gmiseg-edge[dicom]") from exc
    return dicom


def read_volume(path: str | Path, *, nan: NanPolicy = "error", series: str | None = None) -> Volume:
    """Read a volume (a 3D row of the format table: NIfTI ``.nii``/``.nii.gz``, NRRD ``.nrrd``/``.nhdr``, ...)
    or a DICOM series (a folder, DICOMDIR or ``.dcm`` file; ``series`` picks one when there are several), in
    voxel order (i, j, k)."""
    path = Path(path)
    if path.is_dir() or is_dicom(path):
        if not path.exists():
            raise MissingFileError(path)
        volume = _dicom().read_dicom_series(path, series)
    else:
        _check_file(path)
        found = format_of(path)
        if found.ndim != 3:
            raise DataError("is a 2D image; expected a 3D volume (use read_image_2d)", path)
        volume = found.read(path)
    checked = _check_finite(volume.array, path, nan, "voxel")
    return volume if checked is volume.array else replace(volume, array=checked)


def read_image(path: str | Path, *, nan: NanPolicy = "error", series: str | None = None) -> Image2D | Volume:
    """Read a 2D image or a 3D volume, chosen by the file's extension; a folder, DICOMDIR or DICOM file is read
    as a DICOM series (``series`` picks one when there are several)."""
    path = Path(path)
    found = find_format(path)
    if (found is not None and found.ndim == 3) or path.is_dir() or is_dicom(path):
        return read_volume(path, nan=nan, series=series)
    return read_image_2d(path, nan=nan)  # an unknown suffix: a DataError listing the known ones


# ---------------------------------------------------------------- masks


def as_label_array(array: np.ndarray, path: Path) -> np.ndarray:
    """``array`` as integer labels: bool to uint8, integral floats cast; a DataError naming ``path`` otherwise."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    if not np.all(np.isfinite(array)):
        raise DataError("mask has NaN or infinite values; expected a label map", path)
    rounded = np.rint(array)
    if not np.array_equal(rounded, array):
        example = float(array[rounded != array].flat[0])
        raise DataError(f"mask has non-integer values (e.g. {example}); expected a label map", path)
    return rounded.astype(np.int32)


def read_mask(path: str | Path) -> Image2D | Volume:
    """Read a label map (2D or 3D): integer values, one channel. Float files with integer values are cast."""
    image = read_image(path)
    array = image.array
    if isinstance(image, Image2D) and array.ndim == 3:
        if not (array == array[:, :, :1]).all():
            raise DataError(f"mask is a colour image ({array.shape}) with differing channels", image.path)
        array = array[:, :, 0]
    return replace(image, array=np.ascontiguousarray(as_label_array(array, image.path)))
