"""What ``segment`` names its outputs: ``<name>_mask<suffix>`` per input (a challenge case: ``<name>.npz``),
``<name>_uncertainty<suffix>``, ``<name>_overlay.png`` or ``<name>_overlay/slice_<k>.png``.

:func:`mask_suffix` is the one place that maps an input to the suffix of its mask. Outputs never collide:
inputs whose masks would share a name (``x.png`` and ``x.jpg`` both give ``x_mask.png``) are named with their
source suffix instead (``x_png_mask.png``, ``x_jpg_mask.png``), decided before anything is written; names that
still collide are refused up front.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.data import file_stem, file_suffix
from gmiseg_edge.data.challenge import CHALLENGE_SUFFIX
from gmiseg_edge.data.formats import output_suffix
from gmiseg_edge.jobs.segment.inputs import InputFile


def mask_suffix(image: Path, fmt: str = "auto") -> str:
    """The suffix of ``image``'s mask, from the format table (:func:`gmiseg_edge.data.formats.output_suffix`):
    PNG for 2D images, the volume's own format (or ``fmt``), DICOM-SEG (``.dcm``) for a DICOM series, ``.npz``
    for a challenge case."""
    return output_suffix(image, fmt)


def output_names(inputs: Sequence[InputFile], fmt: str = "auto") -> list[str]:
    """The name each input's outputs start with (``<name>_mask.<ext>``, ``<name>_overlay``, ...): its stem, or
    when two inputs' masks would share a file name, the stem and the source suffix (``x_png``, ``x_jpg``).

    Raises InputError, before anything is written, if names still collide (e.g. ``x.png``, ``x.jpg`` and
    ``x_png.png``)."""
    def mask_of(name: str, image: Path) -> str:
        return f"{name}_mask{mask_suffix(image, fmt)}".lower()  # lower: case-insensitive file systems

    stems = [file_stem(item.image) for item in inputs]
    counts: dict[str, int] = {}
    for stem, item in zip(stems, inputs, strict=True):
        counts[mask_of(stem, item.image)] = counts.get(mask_of(stem, item.image), 0) + 1
    names = [stem if counts[mask_of(stem, item.image)] == 1
             else f"{stem}_{file_suffix(item.image).lstrip('.').replace('.', '_')}"
             for stem, item in zip(stems, inputs, strict=True)]
    seen: dict[str, Path] = {}
    for name, item in zip(names, inputs, strict=True):
        other = seen.setdefault(mask_of(name, item.image), item.image)
        if other != item.image:
            raise InputError(f"{other} and {item.image} would both write {name}_mask{mask_suffix(item.image, fmt)}; "
                             "rename one of them")
    return names


def output_path(out: Path, image: Path, name: str | None = None, fmt: str = "auto") -> Path:
    """Where ``image``'s mask goes in ``out`` (``name``: from :func:`output_names`; default the file's stem)."""
    if file_suffix(image) == CHALLENGE_SUFFIX:
        return out / f"{name or file_stem(image)}{CHALLENGE_SUFFIX}"  # the challenge's own naming: same name
    return out / f"{name or file_stem(image)}_mask{mask_suffix(image, fmt)}"


def uncertainty_path(mask_path: Path) -> Path:
    """``x_mask.nii.gz`` -> ``x_uncertainty.nii.gz``: the supports' disagreement, uint8 0..255 for 0..0.5
    (beside a DICOM-SEG: ``x_uncertainty.nii.gz``)."""
    name = mask_path.name.replace("_mask.dcm", "_mask.nii.gz") if mask_path.suffix == ".dcm" else mask_path.name
    return mask_path.with_name(name.replace("_mask.", "_uncertainty.", 1))


def prior_path(mask_path: Path) -> Path:
    """``x_mask.nii.gz`` -> ``x_prior.nii.gz``: the 3D support path's located prior, uint8 0..255 for 0..1."""
    return uncertainty_path(mask_path).with_name(uncertainty_path(mask_path).name.replace("_uncertainty.", "_prior.",
                                                                                          1))


def overlay_path(out: Path, name: str, slice_index: int | None = None) -> Path:
    """A 2D input's overlay ``<name>_overlay.png``, or slice ``slice_index``'s in the folder
    ``<name>_overlay/``."""
    if slice_index is None:
        return out / f"{name}_overlay.png"
    return out / f"{name}_overlay" / f"slice_{slice_index:04d}.png"
