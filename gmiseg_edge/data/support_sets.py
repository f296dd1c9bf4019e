"""Support-set folders: the one reader behind ``segment --support``, ``adapt``, ``serve --support`` and
``evaluate`` on a dataset folder.

A support set is a dataset folder (:func:`gmiseg_edge.data.dataset.find_pairs`: ``images/`` + ``masks/``, or a
``dataset.json``) of examples: a 2D image or a volume, and its label map. Two rules, the same for every caller:

- **Which label counts.** The label value named for the example (a ``dataset.json`` entry's ``"label"``) or for
  the whole set (``label=``: the command line's ``--label``). Named both ways with different values is a
  :class:`DataError` naming the entry: a per-file value and a set-wide one that disagree cannot both be meant.
  Named nowhere: every non-zero value counts (a binary mask, or a label map's labels taken as one structure).
- **An empty mask is refused.** An example whose label map holds no voxel of the label that counts is a
  :class:`DataError` naming the mask file and listing the labels it does hold. Nothing that consumes a support
  set can use an example without the structure: the runtime's supports need structure cells for the appearance
  model and a structure to warp (:class:`gmiseg_edge.runtime.SupportSetSegmenter` refuses an empty mask), and the
  adapter trains on prompts drawn from the mask. Skipping such an example would hide a wrong label value (every
  example of a set labelled with another value would vanish but one). A volume's slices without the structure
  are not examples: of a volume only its labelled slices are taken (:meth:`SupportExample.slices`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.data.dataset import DATASET_JSON, Pair, find_pairs
from gmiseg_edge.data.images import Image2D, Volume
from gmiseg_edge.data.labels import label_values
from gmiseg_edge.data.slicing import Slice2D, SliceMode, extract_slices, labelled_indices


@dataclass(frozen=True, eq=False)
class SupportExample:
    """One example of a support set: the image as read (intensities, spacing, geometry) and the bool mask of the
    label that counts, on the image's grid."""

    name: str  # the pair's name: the file stem, or the dataset.json entry's "name"
    image: Image2D | Volume
    mask: np.ndarray  # bool, the image's spatial shape
    label: int | None  # the value that counted; None: every non-zero value
    source: Path  # the image's file (or DICOM series folder)
    mask_path: Path

    @property
    def is_volume(self) -> bool:
        return isinstance(self.image, Volume)

    def labelled_indices(self, axis: int) -> list[int]:
        """A volume's slices along ``axis`` holding the structure, in order."""
        if not self.is_volume:
            raise ValueError(f"{self.image.path}: a 2D example has no slices")
        return labelled_indices(self.mask, axis)

    def slices(self, axis: int = 2, mode: SliceMode = "labelled") -> list[Slice2D]:
        """The example as 2D pieces (original intensities, bool mask, (row, col) spacing in mm): a 2D image as it
        is (axis and index -1); a volume's slices along ``axis`` by ``mode`` (every labelled slice, the
        largest one, or the paper's middle slices, :func:`gmiseg_edge.data.slicing.extract_slices`)."""
        image = self.image
        if isinstance(image, Volume):
            return extract_slices(image.array, self.mask, image.spacing, mode=mode, axis=axis)
        return [Slice2D(image.array, self.mask, tuple(image.spacing), -1, -1)]


def counted_label(pair: Pair, label: int | None, where: str | Path) -> int | None:
    """The label value that counts for ``pair`` (module docstring): its own, the set's ``label``, or None."""
    if label is not None and (isinstance(label, bool) or int(label) != label or label == 0):
        raise ValueError(f"label must be a non-zero integer or None, got {label!r}")
    if pair.label is not None and label is not None and pair.label != label:
        raise DataError(f"example {pair.name!r}: its dataset.json entry names label {pair.label} but label {label} "
                        "was asked for the whole set; give one", where)
    return pair.label if pair.label is not None else label


def structure_mask(labels: np.ndarray, label: int | None, path: Path) -> np.ndarray:
    """bool mask of ``label`` (None: every non-zero value) in a label map; an empty one is a DataError naming
    ``path`` and the labels present."""
    mask = labels != 0 if label is None else labels == label
    if not mask.any():
        what = "no non-zero label" if label is None else f"no voxel of label {label}"
        present = label_values(labels)
        raise DataError(f"support example's mask is empty ({what}; labels present: {present or 'none'}): every "
                        "example must show the structure", path)
    return mask


def read_example(pair: Pair, label: int | None = None, where: str | Path | None = None) -> SupportExample:
    """Read one example of a support set (both rules of the module docstring)."""
    value = counted_label(pair, label, where if where is not None else pair.image)
    image, labels = pair.read()
    mask = structure_mask(np.asarray(labels.array), value, labels.path)
    return SupportExample(pair.name, image, mask, value, pair.image, labels.path)


def read_support_set(folder: str | Path, label: int | None = None) -> list[SupportExample]:
    """Every example of the support-set folder (or ``dataset.json``) ``folder``; ``label``: the label value that
    counts for the whole set (module docstring). A missing, empty or malformed folder, an example whose mask is
    empty or does not match its image, is a :class:`DataError` naming the file."""
    folder = Path(folder)
    where = folder / DATASET_JSON if (folder / DATASET_JSON).is_file() else folder  # where a pair's label is named
    return [read_example(pair, label, where) for pair in find_pairs(folder)]
