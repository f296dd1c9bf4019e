"""The sample data shipped in ``gmiseg_edge/sample_data`` as ready-to-segment 2D cases.

``cases.json`` there lists each case (files, modality, labels of interest, window, crop, source,
licence); ``sample_data/README.md`` tells where the data come from and what was kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gmiseg_edge.core.errors import DataError, MissingFileError
from gmiseg_edge.data.dataset import read_pair
from gmiseg_edge.data.images import Image2D, Volume
from gmiseg_edge.data.intensity import Window, apply_window
from gmiseg_edge.data.labels import instance_masks, select_label
from gmiseg_edge.data.slicing import Slice2D, SliceMode, extract_slices, slice_2d, slice_spacing

SampleSlices = Literal["largest", "all", "middle"]
REFERENCE_CASE, REFERENCE_AXIS, REFERENCE_SLICE = "lung2", 2, 22


@dataclass(frozen=True, eq=False)
class SampleCase:
    """One 2D case: ``image`` uint8 HxW (mapped by ``window``), ``mask`` bool HxW (one label or one instance).

    ``spacing`` is (row, col) in mm (1.0 for microscopy, whose pixel size is unknown). ``slice_index``
    counts in the shipped file, ``source_slice_index`` in the original volume of the source package
    (they differ for cropped volumes); both are None for 2D images.
    """

    name: str
    modality: str
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float]
    source: str
    case: str
    label: str
    label_value: int | None
    window: Window
    axis: int | None = None
    slice_index: int | None = None
    source_slice_index: int | None = None


def sample_data_dir() -> Path:
    """The folder holding the shipped sample data and its ``cases.json``."""
    folder = Path(__file__).resolve().parents[1] / "sample_data"
    if not (folder / "cases.json").is_file():
        raise MissingFileError(folder / "cases.json", "sample data index")
    return folder


def sample_index() -> list[dict[str, Any]]:
    """The entries of ``sample_data/cases.json``, one per case."""
    path = sample_data_dir() / "cases.json"
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["cases"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"invalid sample data index ({exc})", path) from exc


def sample_case_names() -> list[str]:
    """Names of the shipped cases (e.g. ``lung2``, ``totalseg_abdomen``, ``dsb_nuclei``)."""
    return [entry["name"] for entry in sample_index()]


def _entry(name: str) -> dict[str, Any]:
    for entry in sample_index():
        if entry["name"] == name:
            return entry
    raise ValueError(f"unknown sample case {name!r}; available: {', '.join(sample_case_names())}")


def load_sample_pair(name: str) -> tuple[Image2D | Volume, Image2D | Volume]:
    """The shipped image and label map of case ``name``, as read from their files (raw intensities)."""
    entry = _entry(name)
    folder = sample_data_dir()
    return read_pair(folder / entry["image"], folder / entry["mask"])


def _entry_window(entry: dict[str, Any]) -> Window:
    """The case's own window (``cases.json`` ``window``: a preset name, or [low, high])."""
    window = entry["window"]
    return tuple(window) if isinstance(window, list) else window


def _source(entry: dict[str, Any]) -> str:
    return f"{entry['source']['package']} ({entry['source']['licence']})"


def _to_source_index(entry: dict[str, Any], axis: int, index: int) -> int:
    crop = entry.get("crop")
    return index + crop["start"] if crop and crop["axis"] == axis else index


def _make_case(
    entry: dict[str, Any],
    name: str,
    value: int | None,
    image: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float],
    window: Window,
    piece: Slice2D | None = None,
) -> SampleCase:
    """A case from an ``image`` already mapped to uint8 by ``window``; ``piece``: the slice position (volumes)."""
    return SampleCase(
        name=f"{entry['name']}/{name}",
        modality=entry["modality"],
        image=image,
        mask=mask.astype(bool),
        spacing=spacing,
        source=_source(entry),
        case=entry["name"],
        label=name,
        label_value=value,
        window=window,
        axis=piece.axis if piece else None,
        slice_index=piece.index if piece else None,
        source_slice_index=_to_source_index(entry, piece.axis, piece.index) if piece else None,
    )


def _labels_of_interest(entry: dict[str, Any], labels: Sequence[str] | None) -> dict[str, int | None]:
    wanted = dict(entry["labels"])
    if labels is None:
        return wanted
    unknown = [name for name in labels if name not in wanted]
    if unknown:
        raise ValueError(f"case {entry['name']!r} has no label(s) {unknown}; it has {list(wanted)}")
    return {name: wanted[name] for name in labels}


def _volume_cases(
    entry: dict[str, Any],
    image: Volume,
    label_map: Volume,
    label: str,
    value: int | None,
    window: Window,
    mode: SliceMode,
    axis: int,
) -> list[SampleCase]:
    mask = select_label(label_map.array, value, path=label_map.path)
    cases = []
    for piece in extract_slices(image.array, mask, image.spacing, mode=mode, axis=axis):
        pixels = apply_window(piece.image, window)
        cases.append(_make_case(entry, label, value, pixels, piece.mask, piece.spacing, window, piece))
    return cases


def _image_cases(
    entry: dict[str, Any],
    image: Image2D,
    label_map: Image2D,
    label: str,
    value: int | None,
    window: Window,
    instances: bool,
) -> list[SampleCase]:
    pixels = apply_window(image.array, window)
    if instances and entry["mask_type"] == "instances":
        masks = instance_masks(label_map.array, path=label_map.path)
        return [
            _make_case(entry, f"instance_{i:03d}", i, pixels, mask, image.spacing, window)
            for i, mask in masks.items()
        ]
    mask = select_label(label_map.array, value, path=label_map.path)
    return [_make_case(entry, label, value, pixels, mask, image.spacing, window)]


def load_sample_cases(
    names: Sequence[str] | None = None,
    *,
    slices: SampleSlices = "largest",
    axis: int = 2,
    labels: Sequence[str] | None = None,
    instances: bool = False,
    window: Window | None = None,
) -> list[SampleCase]:
    """2D cases from the sample data, one per (case, label of interest, slice).

    ``slices`` (volumes): ``"largest"`` the slice with the largest label area along ``axis``; ``"all"``
    every slice along ``axis`` that holds the label; ``"middle"`` the paper's protocol, the middle slice
    of the label's extent along each of the three axes. ``labels`` keeps only the named labels of
    interest (e.g. ``["liver"]``). ``instances``: for instance label maps (nuclei), one case per instance
    instead of one case for their union. ``window`` overrides each case's own (a CT preset name, a
    (low, high), ``"percentile"`` or ``"minmax"``).
    """
    entries = [_entry(n) for n in names] if names is not None else sample_index()
    modes: dict[str, SliceMode] = {"largest": "largest", "all": "labelled", "middle": "middle"}
    mode = modes.get(slices)
    if mode is None:
        raise ValueError(f"slices must be 'largest', 'all' or 'middle', got {slices!r}")
    cases: list[SampleCase] = []
    for entry in entries:
        case_window = window if window is not None else _entry_window(entry)
        image, label_map = load_sample_pair(entry["name"])
        for label, value in _labels_of_interest(entry, labels).items():
            if isinstance(image, Volume):
                cases += _volume_cases(entry, image, label_map, label, value, case_window, mode, axis)
            else:
                cases += _image_cases(entry, image, label_map, label, value, case_window, instances)
    return cases


def load_sample_slice(
    name: str,
    source_index: int,
    *,
    axis: int = 2,
    label: str | None = None,
    window: Window | None = None,
) -> SampleCase:
    """One slice of a volume case, by its index in the source package's original volume.

    ``label`` names a label of interest (default: the case's first). The slice must lie in the shipped
    slab for cropped cases; an empty mask is allowed.
    """
    entry = _entry(name)
    image, label_map = load_sample_pair(name)
    if not isinstance(image, Volume):
        raise ValueError(f"sample case {name!r} is a 2D image, not a volume")
    label_name = label if label is not None else next(iter(entry["labels"]))
    value = _labels_of_interest(entry, [label_name])[label_name]
    crop = entry.get("crop")
    index = source_index - crop["start"] if crop and crop["axis"] == axis else source_index
    if not 0 <= index < image.array.shape[axis]:
        kept = f"{source_index - index}..{source_index - index + image.array.shape[axis] - 1}"
        raise ValueError(f"slice {source_index} along axis {axis} is not shipped for {name!r} (kept: {kept})")
    mask = label_map.array == value if value is not None else label_map.array != 0
    piece = Slice2D(
        image=slice_2d(image.array, axis, index),
        mask=slice_2d(mask, axis, index),
        spacing=slice_spacing(image.spacing, axis),
        axis=axis,
        index=index,
    )
    case_window = window if window is not None else _entry_window(entry)
    pixels = apply_window(piece.image, case_window)
    return _make_case(entry, label_name, value, pixels, piece.mask, piece.spacing, case_window, piece)


def load_reference_slice() -> SampleCase:
    """The slice of ``shared/fixtures/reference``: lung2, slice 22 along the last axis, lung window."""
    return load_sample_slice(REFERENCE_CASE, REFERENCE_SLICE, axis=REFERENCE_AXIS, window="lung")
