"""Which files ``segment`` reads: one file (with an optional label map), or a folder: a dataset folder
(``images/`` + ``masks/`` or ``dataset.json``, so each image has its label map) or a plain folder of images, DICOM
series subfolders and challenge cases (``.npz``). And each input's label map, as its prompt source reads it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gmiseg_edge.core.errors import InputError, MissingFileError
from gmiseg_edge.data import Image2D, Volume, file_suffix, find_pairs, is_dicom, read_mask, select_label
from gmiseg_edge.data.align import read_labels_on
from gmiseg_edge.data.challenge import CHALLENGE_SUFFIX
from gmiseg_edge.data.readers import SUFFIXES_2D, SUFFIXES_3D
from gmiseg_edge.jobs.segment.prompts import InstancesPrompt, LabelPrompt, Prompt, structure_label

IMAGE_SUFFIXES = SUFFIXES_2D + SUFFIXES_3D  # the image files a plain folder contributes (and challenge cases)


@dataclass(frozen=True)
class InputFile:
    """An image to segment, with its label map when it has one."""

    image: Path
    mask: Path | None = None
    label: int | None = None


def collect_inputs(image: Path | None = None, folder: Path | None = None, mask: Path | None = None,
                   ) -> list[InputFile]:
    """One file (with an optional label map), or every image of a dataset folder or plain folder."""
    if (image is None) == (folder is None):
        raise InputError("give exactly one of --image FILE or --input DIR")
    if image is not None:
        return [InputFile(Path(image), Path(mask) if mask else None)]
    if mask is not None:
        raise InputError("--mask goes with --image; a dataset folder (images/ + masks/) brings its own label maps")
    folder = Path(folder)  # type: ignore[arg-type]
    if not folder.exists():
        raise MissingFileError(folder, "input folder")
    if not folder.is_dir():
        raise InputError(f"{folder}: is a file; --input takes a folder (--image takes one file)")
    if (folder / "images").is_dir() or (folder / "dataset.json").is_file():
        return [InputFile(p.image, p.mask, p.label) for p in find_pairs(folder)]
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (
        (p.is_file() and file_suffix(p) in (*IMAGE_SUFFIXES, CHALLENGE_SUFFIX)) or (p.is_dir() and is_dicom(p))))
    if not files and is_dicom(folder):
        raise InputError(f"{folder}: is a DICOM series folder: give it with --image (--input takes a folder of "
                         "images, series subfolders or a dataset)")
    if not files:
        raise InputError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}, challenge .npz) "
                         "and no DICOM series subfolders")
    return [InputFile(p) for p in files]


def inputs_bring_prompts(inputs: Sequence[InputFile]) -> bool:
    """True when every input is a challenge case (``.npz``), which holds its own boxes."""
    return bool(inputs) and all(file_suffix(i.image) == CHALLENGE_SUFFIX for i in inputs)


def read_truth(item: InputFile, prompt: Prompt | None, shape: tuple[int, ...],
               image: Image2D | Volume | None = None) -> np.ndarray | None:
    """The input's label map as the prompt reads it: the bool mask of the prompt's label (or of the entry's own,
    or of every non-zero label), or for :class:`InstancesPrompt` without a label the instance ids themselves.
    None when the input has no label map (an error for prompts that need one). A DICOM ``image`` has its label
    map resampled onto its grid."""
    label = structure_label(prompt)
    if item.mask is None:
        if isinstance(prompt, LabelPrompt) or (isinstance(prompt, InstancesPrompt) and label is not None):
            raise InputError(f"{item.image}: --label needs its label map (--mask FILE, or a dataset folder)")
        if isinstance(prompt, InstancesPrompt):
            raise InputError(f"{item.image}: --instances needs its label map (--mask FILE, or a dataset folder)")
        return None
    if isinstance(image, Volume) and image.format == "dicom":
        labels = replace(image, array=read_labels_on(image, item.mask), path=item.mask)
    else:
        labels = read_mask(item.mask)
    if labels.array.shape[: len(shape)] != shape:
        raise InputError(f"{item.mask}: label map shape {labels.array.shape} differs from image shape {shape}")
    label = label if label is not None else item.label
    if isinstance(prompt, InstancesPrompt) and label is None:  # the instance ids themselves
        if not np.issubdtype(labels.array.dtype, np.integer) or (labels.array < 0).any():
            raise InputError(f"{item.mask}: --instances needs a label map of non-negative integer instance ids")
        return labels.array
    return select_label(labels.array, label, path=item.mask)
