"""The one table of file formats: per format its name, suffixes, 2D or 3D, reader, writer and mask suffix.

:func:`~gmiseg_edge.data.read_image` and friends, :func:`~gmiseg_edge.data.save_like`, the dataset folder scanner
(:func:`~gmiseg_edge.data.find_pairs`), output naming (:func:`output_suffix`) and the command-line help
(:func:`describe_formats`) all read :data:`FORMATS`; adding a format is one row here plus its reader (and
writer) functions, in a module of their own.

Two inputs are not rows, on purpose, because a row would have to lie about them:

- **DICOM** is recognised by content, not by suffix (a series folder, a ``DICOMDIR`` without a suffix, a file
  with the ``DICM`` preamble); one input is many files, read with a series selector
  (:mod:`gmiseg_edge.data.dicom`, through :func:`~gmiseg_edge.data.read_volume`). Its mask is a DICOM-SEG that
  needs segment names and the algorithm's identity (:func:`gmiseg_edge.data.dicom_seg.write_dicom_seg`), or a
  file of any 3D row with a writer, with the series' geometry.
- A **challenge case** (``.npz``, :mod:`gmiseg_edge.data.challenge`) is a bundle of an image, its boxes and its
  ground truth, not an image file; its answer keeps the case's own name.

Both are named by :func:`describe_formats` and :func:`output_suffix`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.data.challenge import CHALLENGE_SUFFIX
from gmiseg_edge.data.image_files import read_jpeg, read_png, read_tiff, write_png_mask
from gmiseg_edge.data.metaimage import read_metaimage, write_metaimage
from gmiseg_edge.data.volume_files import read_nifti, read_nrrd, write_nifti, write_nrrd

DICOM_SEG = "dicom-seg"  # the mask format of a DICOM series (not a row: see the module docstring)
DICOM_SEG_SUFFIX = ".dcm"

#: A reader: a 2D row's returns the file's pixels as stored, a 3D row's a Volume.
Reader = Callable[[Path], Any]
#: A writer: ``write(reference, labels, path)`` writes label map ``labels`` (bool cast to integers, see
#: :func:`gmiseg_edge.data.save_like`) with the geometry of ``reference`` (its Image2D or Volume), atomically.
Writer = Callable[[Any, np.ndarray, Path], None]


@dataclass(frozen=True)
class Format:
    """One file format. ``name`` is what a 3D row's volumes carry as ``Volume.format`` and what ``--format``
    names; ``suffixes`` are lower case, the first one is given to masks written in this format by name;
    ``mask_suffix`` is the suffix of the mask written for an input of this format (None: the input's own);
    ``side_suffixes`` are data files that sit beside a detached header and are no input of their own."""

    name: str
    title: str
    suffixes: tuple[str, ...]
    ndim: Literal[2, 3]
    read: Reader
    write: Writer | None = None
    mask_suffix: str | None = None
    side_suffixes: tuple[str, ...] = ()

    @property
    def write_suffixes(self) -> tuple[str, ...]:
        """The suffixes its writer writes (none without a writer)."""
        if self.write is None:
            return ()
        return self.suffixes if self.mask_suffix is None else (self.mask_suffix,)


FORMATS: tuple[Format, ...] = (
    Format("png", "PNG", (".png",), 2, read_png, write_png_mask),
    Format("jpeg", "JPEG", (".jpg", ".jpeg"), 2, read_jpeg, mask_suffix=".png"),
    Format("tiff", "TIFF", (".tif", ".tiff"), 2, read_tiff, mask_suffix=".png"),
    Format("nifti", "NIfTI", (".nii.gz", ".nii"), 3, read_nifti, write_nifti),
    Format("nrrd", "NRRD", (".nrrd", ".nhdr"), 3, read_nrrd, write_nrrd, mask_suffix=".nrrd",
           side_suffixes=(".raw", ".raw.gz")),
    Format("metaimage", "MetaImage", (".mha", ".mhd"), 3, read_metaimage, write_metaimage, mask_suffix=".mha",
           side_suffixes=(".raw", ".zraw")),
)

SUFFIXES_2D = tuple(s for f in FORMATS if f.ndim == 2 for s in f.suffixes)
SUFFIXES_3D = tuple(s for f in FORMATS if f.ndim == 3 for s in f.suffixes)

_BY_SUFFIX = {s: f for f in FORMATS for s in f.suffixes}
_BY_NAME = {f.name: f for f in FORMATS}
_LONGEST_FIRST = sorted(_BY_SUFFIX, key=len, reverse=True)  # ".nii.gz" before any ".gz"


def file_suffix(path: str | Path) -> str:
    """The lower-case extension of ``path``, with double extensions such as ``.nii.gz`` kept whole; ``""`` for
    an existing folder (a DICOM series folder named ``1.2.840...`` has no extension)."""
    if Path(path).is_dir():
        return ""
    name = Path(path).name.lower()
    for suffix in _LONGEST_FIRST:
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def file_stem(path: str | Path) -> str:
    """The file name without its extension (``case_01.nii.gz`` gives ``case_01``)."""
    name = Path(path).name
    suffix = file_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def is_side_file(path: str | Path) -> bool:
    """True for the data file of a detached header beside it (``x.raw`` beside ``x.nhdr``): no input of its own."""
    path = Path(path)
    for found in FORMATS:
        for side in found.side_suffixes:
            if path.name.lower().endswith(side):
                stem = path.name[: len(path.name) - len(side)]
                if any((path.parent / f"{stem}{suffix}").is_file() for suffix in found.suffixes):
                    return True
    return False


def find_format(path: str | Path) -> Format | None:
    """The row of ``path``'s suffix, or None (a DICOM input, a challenge case, an unknown file)."""
    return _BY_SUFFIX.get(file_suffix(path))


def format_of(path: str | Path) -> Format:
    """The row of ``path``'s suffix; a DataError naming ``path`` and the known suffixes if there is none."""
    found = find_format(path)
    if found is None:
        supported = ", ".join(SUFFIXES_2D + SUFFIXES_3D)
        raise DataError(f"unsupported file type {file_suffix(path) or '(none)'!r}; supported: {supported}", path)
    return found


def format_named(name: str) -> Format:
    """The row called ``name`` (``"nifti"``, ...); a ValueError listing the names if there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown file format {name!r}; known: {', '.join(_BY_NAME)}") from None


def volume_mask_formats() -> tuple[str, ...]:
    """The formats a volume's mask may be asked in by name: every 3D row with a writer, and DICOM-SEG."""
    return (*(f.name for f in FORMATS if f.ndim == 3 and f.write is not None), DICOM_SEG)


def output_suffix(image: str | Path, fmt: str = "auto") -> str:
    """The suffix of the mask written for input ``image``: a 2D image's mask is its row's mask format (PNG);
    a volume's is its own format (``.nhdr`` gives ``.nrrd``), or with ``fmt`` a name of
    :func:`volume_mask_formats`; a DICOM series gives a DICOM-SEG (``.dcm``); a challenge case its ``.npz``."""
    suffix = file_suffix(image)
    if suffix == CHALLENGE_SUFFIX:
        return suffix
    found = _BY_SUFFIX.get(suffix)
    if found is not None and found.ndim == 2:
        return found.mask_suffix or suffix
    if fmt != "auto":
        if fmt == DICOM_SEG:
            return DICOM_SEG_SUFFIX
        chosen = format_named(fmt)
        if chosen.ndim != 3 or not chosen.write_suffixes:
            raise ValueError(f"a volume's mask cannot be written as {fmt!r}; "
                             f"choose {', '.join(volume_mask_formats())}")
        return chosen.write_suffixes[0]
    if found is not None:
        return found.mask_suffix or suffix
    return DICOM_SEG_SUFFIX  # a DICOM series


def mask_formats_for(reference_format: str | None) -> tuple[Format, ...]:
    """The rows a mask may be written in for an image of ``reference_format`` (None: a 2D image): a 2D image's
    mask in a 2D row with a writer; a volume's in its own format; a DICOM series' in any 3D row with a writer."""
    if reference_format is None:
        return tuple(f for f in FORMATS if f.ndim == 2 and f.write is not None)
    if reference_format == "dicom":
        return tuple(f for f in FORMATS if f.ndim == 3 and f.write is not None)
    own = _BY_NAME.get(reference_format)
    return (own,) if own is not None and own.write is not None else ()


def describe_formats() -> str:
    """One line naming every input the readers take, for command-line help."""
    def group(ndim: int) -> str:
        return ", ".join(f"{f.title} ({', '.join(f.suffixes)})" for f in FORMATS if f.ndim == ndim)

    return (f"2D images: {group(2)}; volumes: {group(3)}, DICOM series (a folder, DICOMDIR or {DICOM_SEG_SUFFIX} "
            f"file); challenge cases ({CHALLENGE_SUFFIX})")
