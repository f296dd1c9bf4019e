"""Read a DICOM image series (a folder, a DICOMDIR or one file) into a :class:`~gmiseg_edge.data.images.Volume`.

pydicom does all the parsing and pixel decoding (compressed transfer syntaxes through its installed plugins).
The volume is indexed (i, j, k) = (column, row, slice), like the NIfTI reader, so ``slice_2d(array, 2, k)``
shows slice k as the scanner does. Slices are ordered by their position along the slice normal
(``ImageOrientationPatient`` row x column direction, dotted with ``ImagePositionPatient``), never by file name
or ``InstanceNumber``. ``affine`` maps (i, j, k, 1) to patient coordinates in mm in DICOM's LPS space; the
Modality LUT (``RescaleSlope``/``RescaleIntercept``) is applied, so CT is in HU.

A folder may hold several series (searched recursively, hidden files and common side files such as
``.txt``/``.json`` ignored); ``series`` picks one by SeriesInstanceUID, SeriesNumber or a unique part of the
SeriesDescription. Series without image geometry (SR, SEG, RT structures, presentation states) are never
picked on their own; picking one is an error. A series of one slice is read as a volume of depth 1 (slice
spacing from SpacingBetweenSlices, else SliceThickness, else 1 mm). Multi-frame (enhanced) objects are refused.

Every problem is a :class:`DataError` naming the file: an unreadable or truncated file, two series and no
selector, mixed orientations or sizes, two slices at one position, a gap in the positions, a compressed
transfer syntax whose decoder is not installed (naming the plugins that would decode it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from gmiseg_edge.core.errors import DataError, MissingFileError
from gmiseg_edge.data.images import Volume, check_spacing, check_voxels

DICOMDIR = "DICOMDIR"
SUFFIXES = (".dcm", ".dicom", ".ima")
#: side files found beside DICOM exports; skipped when scanning a folder
SIDE_FILE_SUFFIXES = (".txt", ".md", ".json", ".xml", ".csv", ".html", ".htm", ".pdf", ".ini", ".log", ".exe",
                      ".inf", ".png", ".jpg", ".jpeg", ".nii", ".gz", ".nrrd")
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
ORIENTATION_TOLERANCE = 1e-4  # direction cosines
GAP_TOLERANCE = 0.05  # relative deviation of one slice step from the median step


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a folder: its identity and its files (headers only, in scan order)."""

    uid: str
    number: int | None
    description: str
    modality: str
    files: tuple[Path, ...]
    headers: tuple[Dataset, ...]

    @property
    def is_image(self) -> bool:
        """Every instance has image geometry (rows, columns, position, orientation) and is not a SEG."""
        return all(_image_problem(h) is None for h in self.headers)

    def describe(self) -> str:
        number = "-" if self.number is None else str(self.number)
        kind = "" if self.is_image else f", not an image series ({_sop_name(self.headers[0])})"
        return (f"#{number} {self.description or '(no description)'!r} {self.modality or '?'}, "
                f"{len(self.files)} file(s){kind}, SeriesInstanceUID {self.uid}")


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """The header side of a volume read from DICOM: the series and its instances in slice order (k).

    ``datasets`` are the instances' headers without pixel data (what a DICOM-SEG references), ``files``
    the file of each slice."""

    uid: str
    number: int | None
    description: str
    modality: str
    datasets: tuple[Dataset, ...]
    files: tuple[Path, ...]

    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        return tuple(str(ds.SOPInstanceUID) for ds in self.datasets)


# ---------------------------------------------------------------- finding files and series


def is_dicom_file(path: Path) -> bool:
    """True if ``path`` is a file with the DICOM preamble ('DICM' at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_path(path: str | Path) -> bool:
    """True for a DICOMDIR, a file with a DICOM suffix or preamble, or a folder holding a DICOM file or DICOMDIR
    (looked for in the folder and its subfolders, stopping at the first found)."""
    path = Path(path)
    if path.is_file():
        return path.name.upper() == DICOMDIR or path.suffix.lower() in SUFFIXES or is_dicom_file(path)
    if not path.is_dir():
        return path.suffix.lower() in SUFFIXES or path.name.upper() == DICOMDIR
    return any(p.name.upper() == DICOMDIR or is_dicom_file(p) for p in _walk(path, ordered=False))


def _walk(folder: Path, ordered: bool = True) -> Iterable[Path]:
    """The files under ``folder`` (hidden ones and those in hidden folders left out), sorted if ``ordered``."""
    paths = folder.rglob("*")
    for path in sorted(paths) if ordered else paths:
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            yield path


def _files_of_dicomdir(dicomdir: Path) -> list[Path]:
    # pydicom's FileSet resolves the DICOMDIR's records to the files it references
    from pydicom.fileset import FileSet

    try:
        file_set = FileSet(pydicom.dcmread(dicomdir))
    except Exception as exc:
        raise DataError(f"cannot read the DICOMDIR ({type(exc).__name__}: {exc})", dicomdir) from exc
    files = []
    for instance in file_set:
        path = Path(instance.path)
        if not path.is_file():
            raise DataError(f"the DICOMDIR lists {path}, which does not exist", dicomdir)
        files.append(path)
    return files


def _candidate_files(path: Path) -> list[Path]:
    if path.is_file():
        return _files_of_dicomdir(path) if path.name.upper() == DICOMDIR else [path]
    for name in (DICOMDIR, DICOMDIR.lower()):
        if (path / name).is_file():
            return _files_of_dicomdir(path / name)
    return [p for p in _walk(path) if p.suffix.lower() not in SIDE_FILE_SUFFIXES]


def _read_header(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        raise DataError("is not a DICOM file (no 'DICM' preamble); remove it from the series folder", path) from None
    except Exception as exc:
        raise DataError(f"cannot read DICOM file, it may be truncated or corrupt ({type(exc).__name__}: {exc})",
                        path) from exc


def _sop_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    return getattr(uid, "name", None) or str(uid or "no SOPClassUID")


def _image_problem(ds: Dataset) -> str | None:
    """Why ``ds`` is not a single-frame image slice with geometry, or None."""
    if str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS:
        return "is a segmentation (SEG), not an image"
    missing = [k for k in ("Rows", "Columns", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
               if ds.get(k) in (None, "")]
    if missing:
        return f"is a {_sop_name(ds)} object without image geometry ({', '.join(missing)} missing)"
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return f"is a multi-frame object ({ds.NumberOfFrames} frames); multi-frame (enhanced) DICOM is not supported"
    return None


def list_series(path: str | Path) -> list[SeriesInfo]:
    """Every series in a folder, DICOMDIR or file (headers only), in SeriesNumber order."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, "DICOM folder or file")
    files = _candidate_files(path)
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for file in files:
        header = _read_header(file)
        if "SeriesInstanceUID" not in header:
            raise DataError("has no SeriesInstanceUID: the file is truncated or corrupt, or not an image instance",
                            file)
        groups.setdefault(str(header.SeriesInstanceUID), []).append((file, header))
    if not groups:
        raise DataError("is a folder holding no DICOM file; expected a volume file or a DICOM series folder", path)
    series = []
    for uid, members in groups.items():
        first = members[0][1]
        number = first.get("SeriesNumber")
        series.append(SeriesInfo(uid=uid, number=int(number) if number not in (None, "") else None,
                                 description=str(first.get("SeriesDescription", "")),
                                 modality=str(first.get("Modality", "")),
                                 files=tuple(f for f, _ in members), headers=tuple(h for _, h in members)))
    return sorted(series, key=lambda s: (s.number is None, s.number or 0, s.uid))


def select_series(series: list[SeriesInfo], selector: str | None, path: Path) -> SeriesInfo:
    """The series ``selector`` names (SeriesInstanceUID, SeriesNumber, or a unique part of the description,
    case-insensitive); without one, the only image series."""
    listing = "; ".join(s.describe() for s in series)
    if selector is None:
        images = [s for s in series if s.is_image]
        if len(images) == 1:
            return images[0]
        if not images:
            problem = next(_image_problem(h) for s in series for h in s.headers if _image_problem(h))
            raise DataError(f"holds no image series: {listing} (e.g. {problem})", path)
        raise DataError(f"holds {len(images)} image series; choose one with --series (SeriesInstanceUID, number "
                        f"or description): {listing}", path)
    selector = selector.strip()
    for test in (lambda s: s.uid == selector,
                 lambda s: selector.lstrip("#").isdigit() and s.number == int(selector.lstrip("#")),
                 lambda s: selector.lower() in s.description.lower()):
        found = [s for s in series if test(s)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataError(f"--series {selector!r} matches {len(found)} series: "
                            f"{'; '.join(s.describe() for s in found)}", path)
    raise DataError(f"no series matches --series {selector!r}; found: {listing}", path)


# ---------------------------------------------------------------- geometry and pixels


def _vector(ds: Dataset, key: str, size: int, file: Path) -> np.ndarray:
    try:
        value = np.asarray([float(v) for v in ds[key].value], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{key} is missing or not {size} numbers", file) from None
    if value.shape != (size,) or not np.isfinite(value).all():
        raise DataError(f"{key} {value.tolist()} is not {size} finite numbers", file)
    return value


def _check_same(headers: list[Dataset], files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """One orientation, size, pixel spacing and frame of reference for every slice; (orientation, spacing)."""
    orientation = _vector(headers[0], "ImageOrientationPatient", 6, files[0])
    spacing = _vector(headers[0], "PixelSpacing", 2, files[0])
    if not (spacing > 0).all():
        raise DataError(f"PixelSpacing {spacing.tolist()} is not positive", files[0])
    size = (int(headers[0].Rows), int(headers[0].Columns))
    frame = headers[0].get("FrameOfReferenceUID")
    for ds, file in zip(headers[1:], files[1:], strict=True):
        other = _vector(ds, "ImageOrientationPatient", 6, file)
        if np.abs(other - orientation).max() > ORIENTATION_TOLERANCE:
            raise DataError(f"mixed orientations in one series: ImageOrientationPatient {other.round(4).tolist()} "
                            f"here, {orientation.round(4).tolist()} in {files[0]}", file)
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise DataError(f"mixed image sizes in one series: {ds.Rows}x{ds.Columns} here, "
                            f"{size[0]}x{size[1]} in {files[0]}", file)
        if np.abs(_vector(ds, "PixelSpacing", 2, file) - spacing).max() > 1e-4 * spacing.max():
            raise DataError(f"mixed pixel spacings in one series: {list(ds.PixelSpacing)} here, "
                            f"{spacing.tolist()} in {files[0]}", file)
        if ds.get("FrameOfReferenceUID") != frame:
            raise DataError(f"FrameOfReferenceUID {ds.get('FrameOfReferenceUID')} differs from {frame} "
                            f"in {files[0]}", file)
    return orientation, spacing


def _order(headers: list[Dataset], files: list[Path], normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slice order along ``normal`` and the sorted positions; checks duplicates, gaps and a straight line."""
    positions = np.stack([_vector(ds, "ImagePositionPatient", 3, f) for ds, f in zip(headers, files, strict=True)])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    if len(order) < 2:
        return order, positions[order]
    steps = np.diff(along)
    step = float(np.median(steps))
    for n, d in enumerate(steps):
        if d <= max(1e-3, 1e-3 * abs(step)):
            raise DataError(f"two slices at one position ({along[n]:.3f} mm along the slice normal): this file and "
                            f"{files[order[n]]}", files[order[n + 1]])
    worst = int(np.argmax(np.abs(steps - step)))
    if abs(steps[worst] - step) > GAP_TOLERANCE * step:
        missing = steps[worst] / step - 1
        what = f"about {missing:.0f} slice(s) missing" if missing >= 0.5 else "uneven slice spacing"
        raise DataError(f"gap in slice positions: {steps[worst]:.3f} mm from {files[order[worst]]} to this file, "
                        f"{step:.3f} mm between the others ({what})", files[order[worst + 1]])
    line = positions[order]
    expected = line[0] + np.outer((along - along[0]) / (along[-1] - along[0]), line[-1] - line[0])
    off = np.linalg.norm(line - expected, axis=1)
    if off.max() > GAP_TOLERANCE * step:
        raise DataError(f"slice positions do not lie on one line ({off.max():.3f} mm off it)",
                        files[order[off.argmax()]])
    return order, line


def _slice_step(ds: Dataset) -> float:
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(key)
        try:
            if value not in (None, "") and float(value) > 0:
                return float(value)
        except (TypeError, ValueError):
            continue
    return 1.0


def _pixels(file: Path) -> tuple[np.ndarray, Dataset]:
    """The slice's stored values through the Modality LUT (HU for CT), and its header without pixel data."""
    try:
        ds = pydicom.dcmread(file)
    except Exception as exc:
        raise DataError(f"cannot read DICOM file, it may be truncated or corrupt ({type(exc).__name__}: {exc})",
                        file) from exc
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DataError(f"has {ds.SamplesPerPixel} samples per pixel ({ds.get('PhotometricInterpretation')}); "
                        "only greyscale series are read", file)
    try:
        stored = ds.pixel_array
    except Exception as exc:
        name = getattr(syntax, "name", str(syntax))
        detail = " ".join(str(exc).split())
        if syntax is not None and syntax.is_compressed:
            raise DataError(f"cannot decode its {name} pixel data: {detail} (pydicom decodes compressed transfer "
                            "syntaxes through plugins: install one it names)", file) from exc
        raise DataError(f"cannot read its pixel data ({type(exc).__name__}: {detail})", file) from exc
    if stored.shape != (int(ds.Rows), int(ds.Columns)):
        raise DataError(f"pixel data has shape {stored.shape}, the header says {ds.Rows}x{ds.Columns}", file)
    values = apply_modality_lut(stored, ds)
    del ds.PixelData
    return values, ds


def _compact(array: np.ndarray) -> np.ndarray:
    """Integer values in the smallest of int16/int32 that holds them; others as float32."""
    if array.dtype.kind not in "iu" and not np.array_equal(array, np.round(array)):
        return array.astype(np.float32)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    for dtype in (np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return array.astype(dtype)
    return array.astype(np.float32)


def read_dicom_series(path: str | Path, series: str | None = None) -> Volume:
    """Read one series of a DICOM folder, DICOMDIR or file as a Volume (module docstring)."""
    path = Path(path)
    chosen = select_series(list_series(path), series, path)
    files, headers = list(chosen.files), list(chosen.headers)
    for ds, file in zip(headers, files, strict=True):
        problem = _image_problem(ds)
        if problem is not None:
            raise DataError(f"{problem} (series {chosen.describe()})", file)
    orientation, pixel_spacing = _check_same(headers, files)
    check_voxels((int(headers[0].Columns), int(headers[0].Rows), len(files)), path)  # before any pixel is decoded
    row_dir, col_dir = orientation[:3], orientation[3:]  # directions of increasing column (i) and row (j) index
    normal = np.cross(row_dir, col_dir)
    order, positions = _order(headers, files, normal)
    files = [files[n] for n in order]
    planes, datasets = zip(*(_pixels(f) for f in files), strict=True)
    stack = _compact(np.stack(planes))  # (k, rows, columns)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * pixel_spacing[1]
    affine[:3, 1] = col_dir * pixel_spacing[0]
    affine[:3, 2] = ((positions[-1] - positions[0]) / (len(files) - 1) if len(files) > 1
                     else normal * _slice_step(datasets[0]))
    affine[:3, 3] = positions[0]
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    header = DicomSeries(uid=chosen.uid, number=chosen.number, description=chosen.description,
                         modality=chosen.modality, datasets=tuple(datasets), files=tuple(files))
    return Volume(array=np.transpose(stack, (2, 1, 0)), spacing=check_spacing(spacing, path), affine=affine,
                  path=path, format="dicom", space="LPS", header=header)
