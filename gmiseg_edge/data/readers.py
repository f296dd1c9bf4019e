"""Read 2D images (PNG, JPEG, TIFF) and 3D volumes (NIfTI, NRRD, DICOM series) with their masks.

Arrays keep the file's dtype (DICOM: the Modality LUT applied, see :mod:`gmiseg_edge.data.dicom`). 2D images
are rows x columns (HxW) or HxWx3 in RGB order. Volumes keep the file's voxel index order (i, j, k) with the
voxel spacing in mm along each index, and the affine and header needed to write a result back with
:func:`gmiseg_edge.data.writers.save_like`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import nibabel as nib
import nrrd
import numpy as np
import tifffile
from PIL import JpegImagePlugin

from gmiseg_edge.core.errors import DataError, InputError, MissingFileError
from gmiseg_edge.core.transforms import MAX_PIXELS, check_pixels

SUFFIXES_2D = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SUFFIXES_3D = (".nii.gz", ".nii", ".nrrd", ".nhdr")
NanPolicy = Literal["error", "zero", "keep"]


@dataclass(frozen=True, eq=False)
class Image2D:
    """A 2D image or mask: ``array`` HxW or HxWx3 (RGB); ``spacing`` (row, col) in mm, 1.0 if unknown."""

    array: np.ndarray
    path: Path
    spacing: tuple[float, float] = (1.0, 1.0)


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D volume or label map in the file's voxel order (i, j, k).

    ``spacing`` is the voxel size in mm along i, j, k; ``affine`` maps (i, j, k, 1) to world coordinates
    in ``space`` (RAS for NIfTI, the header's space for NRRD, LPS for DICOM); ``header`` is the file's own
    header (DICOM: a :class:`~gmiseg_edge.data.dicom.DicomSeries`, the series' instances in slice order).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    path: Path
    format: Literal["nifti", "nrrd", "dicom"]
    space: str
    header: Any = field(repr=False)


def file_suffix(path: str | Path) -> str:
    """The lower-case extension of ``path``, with double extensions such as ``.nii.gz`` kept whole; ``""`` for
    an existing folder (a DICOM series folder named ``1.2.840...`` has no extension)."""
    if Path(path).is_dir():
        return ""
    name = Path(path).name.lower()
    for suffix in SUFFIXES_3D + SUFFIXES_2D:
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def file_stem(path: str | Path) -> str:
    """The file name without its extension (``case_01.nii.gz`` gives ``case_01``)."""
    name = Path(path).name
    suffix = file_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MissingFileError(path)
    if path.is_dir():
        raise DataError("is a folder, expected a file", path)


def _unsupported(path: Path) -> DataError:
    supported = ", ".join(SUFFIXES_2D + SUFFIXES_3D)
    return DataError(f"unsupported file type {file_suffix(path) or '(none)'!r}; supported: {supported}", path)


def _corrupt(path: Path, kind: str, exc: BaseException) -> DataError:
    detail = f"{type(exc).__name__}: {exc}".strip()
    return DataError(f"cannot read {kind} file, it may be truncated or corrupt ({detail})", path)


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


def _png_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from a PNG's IHDR chunk, None if the file does not start like a PNG."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def _jpeg_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from a JPEG's first start-of-frame marker, None if none is found."""
    with open(path, "rb") as handle:
        if handle.read(2) != b"\xff\xd8":
            return None
        while True:
            byte = handle.read(1)
            while byte and byte != b"\xff":
                byte = handle.read(1)
            while byte == b"\xff":
                byte = handle.read(1)
            if not byte:
                return None
            marker = byte[0]
            if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
                continue
            length = int.from_bytes(handle.read(2), "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                frame = handle.read(5)
                return (int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")) if len(frame) == 5 \
                    else None
            if length < 2:
                return None
            handle.seek(length - 2, 1)


def _check_size(size: tuple[int, ...] | None, path: Path) -> None:
    """Refuse an image above :data:`MAX_PIXELS` from its header, before decoding it."""
    if size is not None and len(size) >= 2:
        try:
            check_pixels(size[0], size[1], name=str(path))
        except InputError as exc:
            raise DataError(str(exc).removeprefix(f"{path}: "), path) from None


def _read_png(path: Path) -> np.ndarray:
    _check_size(_png_size(path), path)
    data = np.fromfile(path, dtype=np.uint8)
    try:
        array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as exc:
        raise _corrupt(path, "PNG", exc) from None
    if array is None:
        reason = "is empty (0 bytes)" if not data.size else "cannot decode PNG file, it may be truncated or corrupt"
        raise DataError(reason, path)
    if array.ndim == 3:
        code = cv2.COLOR_BGRA2RGB if array.shape[2] == 4 else cv2.COLOR_BGR2RGB
        array = cv2.cvtColor(array, code)
    return array


def _read_jpeg(path: Path) -> np.ndarray:
    _check_size(_jpeg_size(path), path)
    try:
        # the JPEG plugin itself, not Image.open: Pillow's own (lower) decompression-bomb limit would refuse
        # sizes up to MAX_PIXELS, already checked above from the header
        with JpegImagePlugin.JpegImageFile(str(path)) as im:
            im.load()
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            return np.asarray(im).copy()
    except (OSError, SyntaxError, ValueError) as exc:
        raise _corrupt(path, "JPEG", exc) from exc


def _read_tiff(path: Path) -> np.ndarray:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            sizes = [n for n, axis in zip(series.shape, series.axes, strict=False) if axis in "YX"]
            if len(sizes) == 2 and sizes[0] * sizes[1] > MAX_PIXELS:
                raise InputError(f"{sizes[1]} x {sizes[0]} pixels is above the limit of {MAX_PIXELS} pixels; "
                                 "downscale or crop it first")
            array = series.asarray()
            axes = series.axes
    except InputError as exc:
        raise DataError(str(exc), path) from None
    except Exception as exc:
        raise _corrupt(path, "TIFF", exc) from exc
    # drop singleton axes, then put samples (colour channels) last
    keep = [i for i, n in enumerate(array.shape) if n != 1 or axes[i] in "YX"]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if array.ndim == 3 and axes[0] == "S":
        array = np.moveaxis(array, 0, -1)
    return array


def _as_2d_layout(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3):
        return np.ascontiguousarray(array)
    raise DataError(f"has shape {array.shape}; expected a 2D image (HxW or HxWx3)", path)


def read_image_2d(path: str | Path, *, nan: NanPolicy = "error") -> Image2D:
    """Read a PNG, JPEG or TIFF image, keeping its dtype: HxW (grayscale) or HxWx3 (RGB; alpha dropped)."""
    path = Path(path)
    _check_file(path)
    suffix = file_suffix(path)
    if suffix == ".png":
        array = _read_png(path)
    elif suffix in (".jpg", ".jpeg"):
        array = _read_jpeg(path)
    elif suffix in (".tif", ".tiff"):
        array = _read_tiff(path)
    elif suffix in SUFFIXES_3D:
        raise DataError("is a 3D volume; expected a 2D image (use read_volume)", path)
    else:
        raise _unsupported(path)
    array = _check_finite(_as_2d_layout(array, path), path, nan, "pixel")
    return Image2D(array=array, path=path)


# ---------------------------------------------------------------- 3D


def _to_3d(array: np.ndarray, path: Path) -> np.ndarray:
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3:
        raise DataError(f"has shape {array.shape}; expected a 3D volume", path)
    return array


def check_spacing(spacing: tuple[float, ...], path: Path) -> tuple[float, float, float]:
    """Three positive finite voxel sizes in mm, or a DataError naming ``path``."""
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise DataError(f"voxel spacing {spacing} in the header is not three positive numbers", path)
    return (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def _read_nifti(path: Path) -> Volume:
    try:
        img = nib.load(str(path))
        array = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise _corrupt(path, "NIfTI", exc) from exc
    array = _to_3d(array, path)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    zooms += (1.0,) * (3 - len(zooms))
    return Volume(
        array=array,
        spacing=check_spacing(zooms, path),
        affine=np.asarray(img.affine, dtype=np.float64),
        path=path,
        format="nifti",
        space="RAS",
        header=img.header,
    )


def _nrrd_geometry(header: dict, path: Path) -> tuple[tuple[float, ...], np.ndarray]:
    """Spacing and 4x4 affine (index to the header's space) from an NRRD header."""
    affine = np.eye(4)
    if "space directions" in header:
        directions = np.asarray(header["space directions"], dtype=np.float64)
        if directions.shape != (3, 3) or not np.isfinite(directions).all():
            raise DataError(f"'space directions' {directions.tolist()} is not three spatial vectors", path)
        affine[:3, :3] = directions.T
        spacing = tuple(float(s) for s in np.linalg.norm(directions, axis=1))
    else:
        spacing = tuple(float(s) for s in header.get("spacings", (1.0, 1.0, 1.0)))
        affine[:3, :3] = np.diag(spacing) if len(spacing) == 3 else np.eye(3)
    if "space origin" in header:
        origin = np.asarray(header["space origin"], dtype=np.float64)
        if origin.shape != (3,) or not np.isfinite(origin).all():
            raise DataError(f"'space origin' {origin.tolist()} is not a 3D point (three finite numbers)", path)
        affine[:3, 3] = origin
    return spacing, affine


def _read_nrrd(path: Path) -> Volume:
    try:
        array, header = nrrd.read(str(path), index_order="F")
    except Exception as exc:
        raise _corrupt(path, "NRRD", exc) from exc
    if array.ndim != 3:
        raise DataError(f"has shape {array.shape}; expected a 3D volume", path)
    spacing, affine = _nrrd_geometry(header, path)
    return Volume(
        array=array,
        spacing=check_spacing(spacing, path),
        affine=affine,
        path=path,
        format="nrrd",
        space=str(header.get("space", "")),
        header=header,
    )


def is_dicom(path: str | Path) -> bool:
    """True for a DICOM series folder, a DICOMDIR or a DICOM file (see :func:`gmiseg_edge.data.dicom.is_dicom_path`)."""
    path = Path(path)
    if file_suffix(path) in SUFFIXES_2D + SUFFIXES_3D:
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
    """Read a NIfTI (``.nii``, ``.nii.gz``) or NRRD (``.nrrd``, ``.nhdr``) volume, or a DICOM series (a folder,
    DICOMDIR or ``.dcm`` file; ``series`` picks one when there are several), in voxel order (i, j, k)."""
    path = Path(path)
    if path.is_dir() or is_dicom(path):
        if not path.exists():
            raise MissingFileError(path)
        volume = _dicom().read_dicom_series(path, series)
        checked = _check_finite(volume.array, path, nan, "voxel")
        return volume if checked is volume.array else replace(volume, array=checked)
    _check_file(path)
    suffix = file_suffix(path)
    if suffix in (".nii", ".nii.gz"):
        volume = _read_nifti(path)
    elif suffix in (".nrrd", ".nhdr"):
        volume = _read_nrrd(path)
    elif suffix in SUFFIXES_2D:
        raise DataError("is a 2D image; expected a 3D volume (use read_image_2d)", path)
    else:
        raise _unsupported(path)
    checked = _check_finite(volume.array, path, nan, "voxel")
    return volume if checked is volume.array else replace(volume, array=checked)


def read_image(path: str | Path, *, nan: NanPolicy = "error", series: str | None = None) -> Image2D | Volume:
    """Read a 2D image or a 3D volume, chosen by the file's extension; a folder, DICOMDIR or DICOM file is read
    as a DICOM series (``series`` picks one when there are several)."""
    path = Path(path)
    if file_suffix(path) in SUFFIXES_3D or path.is_dir() or is_dicom(path):
        return read_volume(path, nan=nan, series=series)
    if file_suffix(path) in SUFFIXES_2D:
        return read_image_2d(path, nan=nan)
    _check_file(path)
    raise _unsupported(path)


# ---------------------------------------------------------------- masks


def _as_label_array(array: np.ndarray, path: Path) -> np.ndarray:
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
    return replace(image, array=np.ascontiguousarray(_as_label_array(array, image.path)))


def read_pair(
    image_path: str | Path, mask_path: str | Path, *, nan: NanPolicy = "error"
) -> tuple[Image2D | Volume, Image2D | Volume]:
    """Read an image and its mask; both 2D or both 3D, with the same (spatial) shape and spacing. A DICOM series'
    label map may be a NIfTI/NRRD in another axis order (put on the series' grid from the affines) or a DICOM-SEG."""
    image = read_image(image_path, nan=nan)
    if isinstance(image, Volume) and image.format == "dicom":
        from gmiseg_edge.data.align import read_labels_on  # a label map in another format or a DICOM-SEG

        labels = _as_label_array(read_labels_on(image, mask_path), Path(mask_path))
        return image, replace(image, array=np.ascontiguousarray(labels), path=Path(mask_path))
    mask = read_mask(mask_path)
    if isinstance(image, Volume) != isinstance(mask, Volume):
        kinds = ("3D volume", "2D image") if isinstance(image, Volume) else ("2D image", "3D volume")
        raise DataError(f"is a {kinds[0]} but its mask {mask.path} is a {kinds[1]}", image.path)
    shape = image.array.shape if isinstance(image, Volume) else image.array.shape[:2]
    if shape != mask.array.shape:
        raise DataError(
            f"image shape {tuple(shape)} does not match mask {mask.path} shape {tuple(mask.array.shape)}",
            image.path,
        )
    if not np.allclose(image.spacing, mask.spacing, rtol=1e-3, atol=1e-5):
        raise DataError(
            f"image spacing {image.spacing} mm does not match mask {mask.path} spacing {mask.spacing} mm",
            image.path,
        )
    return image, mask
