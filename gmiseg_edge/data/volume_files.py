"""NIfTI and NRRD files: two 3D rows of :data:`gmiseg_edge.data.formats.FORMATS` (nibabel, pynrrd).

Readers return a :class:`~gmiseg_edge.data.images.Volume` in the file's voxel order (i, j, k). Writers write a
label map with the geometry of the volume it belongs to, atomically: the reference's own header when it is of
the same format, else a fresh one from its affine (a DICOM series' LPS geometry converted).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.core.files import atomic_path
from gmiseg_edge.data.detached import named_file
from gmiseg_edge.data.images import Volume, check_spacing, check_voxels, corrupt, lps_affine, ras_affine, to_3d

_NRRD_GEOMETRY_KEYS = ("space", "space directions", "space origin", "spacings", "kinds", "space units")


def read_nifti(path: Path) -> Volume:
    """A NIfTI volume (``.nii``, ``.nii.gz``): affine to RAS, the header kept for writing masks back."""
    try:
        img = nib.load(str(path))  # the header only: the data is read below, once its size is known
    except Exception as exc:
        raise corrupt(path, "NIfTI", exc) from exc
    check_voxels(img.shape, path)
    try:
        array = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise corrupt(path, "NIfTI", exc) from exc
    array = to_3d(array, path)
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


def check_nrrd_header(path: Path) -> None:
    """Refuse a header whose ``data file`` (a detached header's voxels) is not one file in its folder or below it
    (:func:`~gmiseg_edge.data.detached.named_file`: a header must not make the reader open an arbitrary file), or
    that states more than :data:`~gmiseg_edge.data.images.MAX_VOXELS` voxels."""
    try:
        header = nrrd.read_header(str(path))
    except Exception as exc:
        raise corrupt(path, "NRRD", exc) from exc
    check_voxels(tuple(header.get("sizes", ())), path)
    for field in ("data file", "datafile"):  # pynrrd reads either spelling
        value = header.get(field)
        if value is None:
            continue
        value = str(value).strip()
        if value.upper().startswith("LIST") or "%" in value:
            raise DataError(f"{field} {value!r}: a list of files or a file-name pattern is not read; convert the "
                            "volume to one .nrrd file", path)
        named_file(path, value, f"'{field}'")


def read_nrrd(path: Path) -> Volume:
    """An NRRD volume (``.nrrd``, or a detached ``.nhdr`` header whose data file lies in its folder or below it):
    affine to the header's ``space``."""
    check_nrrd_header(path)
    try:
        array, header = nrrd.read(str(path), index_order="F")
    except Exception as exc:
        raise corrupt(path, "NRRD", exc) from exc
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


def _nifti_suffix(path: Path) -> str:
    """The suffix nibabel needs on the temporary file to write ``path`` (compressed or not)."""
    return ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"


def write_nifti(reference: Volume, labels: np.ndarray, path: Path) -> None:
    """Write ``labels`` as NIfTI, intent "label": a NIfTI reference's header and affine, else a fresh header
    with the reference's geometry in RAS."""
    if reference.format != "nifti":
        image = nib.Nifti1Image(labels, ras_affine(reference))
        image.header.set_qform(image.affine, code=1)
        image.header.set_sform(image.affine, code=1)
        image.header.set_intent("label")
        with atomic_path(path, suffix=_nifti_suffix(path)) as tmp:
            nib.save(image, str(tmp))
        return
    header = reference.header.copy()
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    image = image_class(labels, reference.affine, header=header)
    image.set_data_dtype(labels.dtype)
    image.header.set_slope_inter(1.0, 0.0)
    image.header["cal_min"], image.header["cal_max"] = 0, 0
    image.header.set_intent("label")
    with atomic_path(path, suffix=_nifti_suffix(path)) as tmp:
        nib.save(image, str(tmp))


def write_nrrd(reference: Volume, labels: np.ndarray, path: Path) -> None:
    """Write ``labels`` as a gzip NRRD: an NRRD reference's space, directions, origin and kinds, else the
    reference's geometry in LPS (``left-posterior-superior``)."""
    if reference.format != "nrrd":
        affine = lps_affine(reference)
        header = {"space": "left-posterior-superior", "space directions": affine[:3, :3].T,
                  "space origin": affine[:3, 3], "kinds": ["domain"] * 3}
    else:
        header = {k: reference.header[k] for k in _NRRD_GEOMETRY_KEYS if k in reference.header}
    header["encoding"] = "gzip"
    with atomic_path(path, suffix=".nrrd") as tmp:
        nrrd.write(str(tmp), labels, header, index_order="F")
