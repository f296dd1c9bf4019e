"""MetaImage files (``.mha``, or a detached ``.mhd`` header and its data file): a 3D row of the format table.

SimpleITK reads and writes them; it is imported inside the functions, not at module level, because it is an
optional dependency (the ``cpu`` extra) that every other format and every caller of ``gmiseg_edge.data`` does
without. A MetaImage's geometry is in LPS, as ITK's: the affine of voxel (i, j, k) is ``origin + direction @
diag(spacing) @ (i, j, k)``. Masks are written as one ``.mha`` file (a ``.mhd`` input's too), atomically.

A header names the file holding its voxels (``ElementDataFile``). It is read only when it lies in the
header's folder or below it (:func:`~gmiseg_edge.data.detached.named_file`). ``LOCAL`` data (after the header) is
read; a ``LIST`` of files or a file-name pattern is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.core.files import atomic_path
from gmiseg_edge.data.detached import named_file
from gmiseg_edge.data.images import Volume, check_spacing, check_voxels, corrupt, lps_affine

_HEADER_BYTES = 1 << 16  # a MetaImage header is a few hundred bytes of text; ElementDataFile ends it


def _sitk(path: Path):
    try:
        import SimpleITK as sitk  # noqa: N813  (lazy: see the module docstring)
    except ImportError as exc:
        raise DataError(f"MetaImage files need SimpleITK ({exc}); install gmiseg-edge[cpu]", path) from None
    return sitk


def _element_data_file(path: Path) -> str:
    """The header's ``ElementDataFile`` value."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEADER_BYTES)
    except OSError as exc:
        raise DataError(f"cannot read ({exc})", path) from exc
    for line in head.splitlines():
        key, equals, value = line.decode("latin-1").partition("=")
        if equals and key.strip().lower() == "elementdatafile":
            return value.strip()
    raise DataError(f"no ElementDataFile line in its first {_HEADER_BYTES} bytes: not a MetaImage header", path)


def check_data_file(path: Path) -> None:
    """Refuse a header whose voxels are not in it (``LOCAL``) or in one file in its folder or below it."""
    value = _element_data_file(path)
    if value.upper() == "LOCAL":
        return
    if value.upper().startswith("LIST") or "%" in value:
        raise DataError(f"ElementDataFile {value!r}: a list of files or a file-name pattern is not read; "
                        "convert the image to one .mha file", path)
    named_file(path, value, "ElementDataFile")


def read_metaimage(path: Path) -> Volume:
    """A MetaImage volume: voxel order (i, j, k) = ITK's (x, y, z), affine to LPS, the header's keys kept."""
    sitk = _sitk(path)
    check_data_file(path)
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.SetImageIO("MetaImageIO")
        reader.ReadImageInformation()  # the header: the voxels are read below, once their count is known
        check_voxels(tuple(reader.GetSize()), path)
        image = reader.Execute()
    except RuntimeError as exc:
        raise corrupt(path, "MetaImage", exc) from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"is a {image.GetDimension()}D MetaImage with {image.GetNumberOfComponentsPerPixel()} "
                        "value(s) per voxel; expected a 3D volume of one value per voxel", path)
    affine = np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    affine[:3, 3] = image.GetOrigin()
    return Volume(
        array=np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)),
        spacing=check_spacing(image.GetSpacing(), path),
        affine=affine,
        path=path,
        format="metaimage",
        space="LPS",
        header={key: image.GetMetaData(key) for key in image.GetMetaDataKeys()},
    )


def write_metaimage(reference: Volume, labels: np.ndarray, path: Path) -> None:
    """Write ``labels`` (the reference's shape) as a compressed ``.mha`` with the reference's geometry in LPS."""
    sitk = _sitk(path)
    affine = lps_affine(reference)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(labels, (2, 1, 0))))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    image.SetDirection((affine[:3, :3] / spacing).ravel().tolist())
    with atomic_path(path, suffix=".mha") as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
