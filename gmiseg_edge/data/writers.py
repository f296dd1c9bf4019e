"""Write a mask with the geometry of the image it was computed from, in a format of the format table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.data.formats import file_suffix, mask_formats_for
from gmiseg_edge.data.image_files import write_png
from gmiseg_edge.data.images import Image2D, Volume

__all__ = ["save_like", "write_png"]  # write_png (gmiseg_edge.data.image_files) re-exported: callers use it here


def _label_dtype(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"cannot write a {array.dtype} array as a mask; give bool or integer labels", path)
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for dtype in (np.uint8, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return array.astype(dtype, copy=False)  # no copy of labels already in that type (a large mask)
    raise DataError(f"label values {low}..{high} do not fit in int32", path)


def save_like(reference: Image2D | Volume, array: np.ndarray, path: str | Path) -> Path:
    """Write mask ``array`` to ``path`` with the geometry of ``reference`` (the image it belongs to).

    The format is the one ``path``'s suffix names, among those :func:`~gmiseg_edge.data.formats.mask_formats_for`
    allows: a volume's mask in its own format (NIfTI ``.nii``/``.nii.gz``: the reference's header and affine,
    intent "label"; NRRD ``.nrrd``: the reference's space, directions, origin and kinds); a DICOM series' in any
    3D format with a writer (its LPS geometry converted; its DICOM-SEG is
    :func:`gmiseg_edge.data.dicom_seg.write_dicom_seg`). 2D (``.png``): a bool mask is written as 0/255, integer
    labels as they are (8 or 16 bit). The write is atomic. Returns the path written.
    """
    path = Path(path)
    array = np.asarray(array)
    suffix = file_suffix(path)
    if isinstance(reference, Volume):
        shape, allowed = reference.array.shape, mask_formats_for(reference.format)
    elif isinstance(reference, Image2D):
        shape, allowed = reference.array.shape[:2], mask_formats_for(None)
    else:
        raise TypeError(f"reference must be an Image2D or a Volume, got {type(reference).__name__}")
    if array.shape != shape:
        raise DataError(f"array shape {array.shape} does not match the reference {reference.path} shape {shape}",
                        path)
    target = next((f for f in allowed if suffix in f.write_suffixes), None)
    if target is None or target.write is None:
        wanted = " or ".join(s for f in allowed for s in f.write_suffixes)
        if isinstance(reference, Image2D):
            raise DataError(f"2D masks are written as {wanted}, got {suffix or '(none)'!r}", path)
        raise DataError(f"reference {reference.path} is {reference.format.upper()}: write to {wanted}", path)
    if isinstance(reference, Image2D):
        labels = np.where(array, np.uint8(255), np.uint8(0)) if array.dtype == bool else _label_dtype(array, path)
    else:
        labels = _label_dtype(array, path)
    target.write(reference, labels, path)
    return path
