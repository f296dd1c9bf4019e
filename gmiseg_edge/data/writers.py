"""Write a mask with the geometry of the image it was computed from."""

from __future__ import annotations

from pathlib import Path

import cv2
import nibabel as nib
import nrrd
import numpy as np

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.core.files import atomic_path, write_bytes_atomic
from gmiseg_edge.data.readers import Image2D, Volume, file_suffix

_NRRD_GEOMETRY_KEYS = ("space", "space directions", "space origin", "spacings", "kinds", "space units")


def _label_dtype(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"cannot write a {array.dtype} array as a mask; give bool or integer labels", path)
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for dtype in (np.uint8, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return array.astype(dtype)
    raise DataError(f"label values {low}..{high} do not fit in int32", path)


_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _save_nifti(reference: Volume, array: np.ndarray, path: Path) -> None:
    if reference.format == "dicom":  # DICOM's LPS affine as NIfTI's RAS one, a fresh header
        image = nib.Nifti1Image(array, _LPS_TO_RAS @ reference.affine)
        image.header.set_qform(image.affine, code=1)
        image.header.set_sform(image.affine, code=1)
        image.header.set_intent("label")
        with atomic_path(path, suffix=file_suffix(path)) as tmp:
            nib.save(image, str(tmp))
        return
    header = reference.header.copy()
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    image = image_class(array, reference.affine, header=header)
    image.set_data_dtype(array.dtype)
    image.header.set_slope_inter(1.0, 0.0)
    image.header["cal_min"], image.header["cal_max"] = 0, 0
    image.header.set_intent("label")
    with atomic_path(path, suffix=file_suffix(path)) as tmp:
        nib.save(image, str(tmp))


def _save_nrrd(reference: Volume, array: np.ndarray, path: Path) -> None:
    if reference.format == "dicom":
        header = {"space": "left-posterior-superior", "space directions": reference.affine[:3, :3].T,
                  "space origin": reference.affine[:3, 3], "kinds": ["domain"] * 3}
    else:
        header = {k: reference.header[k] for k in _NRRD_GEOMETRY_KEYS if k in reference.header}
    header["encoding"] = "gzip"
    with atomic_path(path, suffix=file_suffix(path)) as tmp:
        nrrd.write(str(tmp), array, header, index_order="F")


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """Write a PNG atomically: (H, W) uint8/uint16 grey or labels, or (H, W, 3) uint8 RGB."""
    path = Path(path)
    if array.dtype not in (np.uint8, np.uint16):
        raise DataError(f"values {array.min()}..{array.max()} ({array.dtype}) do not fit in a 16-bit PNG", path)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise DataError("PNG encoding failed", path)
    return write_bytes_atomic(path, encoded.tobytes())


def save_like(reference: Image2D | Volume, array: np.ndarray, path: str | Path) -> Path:
    """Write mask ``array`` to ``path`` with the geometry of ``reference`` (the image it belongs to).

    NIfTI (``.nii``/``.nii.gz``): the reference's header and affine, intent "label". NRRD (``.nrrd``):
    the reference's space, directions, origin and kinds. A DICOM series reference may be written as either
    (its LPS geometry converted); its DICOM-SEG is :func:`gmiseg_edge.data.dicom_seg.write_dicom_seg`.
    2D (``.png``): a bool mask is written as 0/255, integer labels as they are (8 or 16 bit). The write is
    atomic. Returns the path written.
    """
    path = Path(path)
    array = np.asarray(array)
    suffix = file_suffix(path)
    if isinstance(reference, Volume):
        if array.shape != reference.array.shape:
            raise DataError(
                f"array shape {array.shape} does not match the reference {reference.path} "
                f"shape {reference.array.shape}",
                path,
            )
        wanted = {"nifti": (".nii", ".nii.gz"), "nrrd": (".nrrd",), "dicom": (".nii", ".nii.gz", ".nrrd")}[
            reference.format]
        if suffix not in wanted:
            raise DataError(
                f"reference {reference.path} is {reference.format.upper()}: write to {' or '.join(wanted)}",
                path,
            )
        labels = _label_dtype(array, path)
        (_save_nifti if suffix in (".nii", ".nii.gz") else _save_nrrd)(reference, labels, path)
    elif isinstance(reference, Image2D):
        if array.shape != reference.array.shape[:2]:
            raise DataError(
                f"array shape {array.shape} does not match the reference {reference.path} "
                f"shape {reference.array.shape[:2]}",
                path,
            )
        if suffix != ".png":
            raise DataError(f"2D masks are written as .png, got {suffix or '(none)'!r}", path)
        labels = array.astype(np.uint8) * 255 if array.dtype == bool else _label_dtype(array, path)
        write_png(path, labels)
    else:
        raise TypeError(f"reference must be an Image2D or a Volume, got {type(reference).__name__}")
    return path
