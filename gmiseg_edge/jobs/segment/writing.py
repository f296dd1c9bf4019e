"""What ``segment`` writes for one input, each file atomically: the mask in the input's format and geometry
(:func:`gmiseg_edge.data.save_like`), a DICOM-SEG referencing a DICOM source series
(:mod:`gmiseg_edge.data.dicom_seg`), overlay PNGs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from gmiseg_edge import __version__
from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.files import folder_problem
from gmiseg_edge.data import Image2D, Volume, save_like, slice_2d
from gmiseg_edge.data.intensity import Window, to_uint8
from gmiseg_edge.jobs.overlays import View, volume_view, write_label_overlay, write_overlay
from gmiseg_edge.jobs.segment.naming import overlay_path
from gmiseg_edge.jobs.segment.options import SegmentOptions
from gmiseg_edge.jobs.segment.prompts import SupportSetPrompt, structure_label
from gmiseg_edge.jobs.segment.sources import AXIS
from gmiseg_edge.metrics import dice


def prepare_output_folder(out: str | Path) -> Path:
    """Create ``out`` if needed and check that files can be written there (InputError naming it if not)."""
    problem = folder_problem(out)
    if problem is not None:
        raise InputError(f"output folder {problem}")
    return Path(out)


def structure_name(options: SegmentOptions) -> str:
    """The structure's name in a DICOM-SEG: ``structure``, else ``label K``, the support set's folder name, or
    ``prompted structure``."""
    if options.structure:
        return options.structure
    label = structure_label(options.prompt)
    if label is not None:
        return f"label {label}"
    return options.prompt.folder.name if isinstance(options.prompt, SupportSetPrompt) else "prompted structure"


def write_mask(image: Image2D | Volume, mask: np.ndarray, output: Path, options: SegmentOptions, model: str,
               ) -> Path:
    """Write ``mask`` for ``image``: a DICOM-SEG for ``.dcm`` outputs (one segment named after the structure, or
    for a label map of several objects one segment per object, ``"<structure> <k>"``; the algorithm is the
    model ``model``, AUTOMATIC for support sets, else SEMIAUTOMATIC), else :func:`save_like`."""
    if output.suffix != ".dcm":
        return save_like(image, mask, output)
    assert isinstance(image, Volume)
    from gmiseg_edge.data.dicom_seg import SegAlgorithm, write_dicom_seg  # highdicom: DICOM-SEG outputs only

    automatic = isinstance(options.prompt, SupportSetPrompt)
    algorithm = SegAlgorithm(f"gmiseg-edge {model}", __version__, "AUTOMATIC" if automatic else "SEMIAUTOMATIC")
    structure = structure_name(options)
    mask = np.asarray(mask)
    if mask.dtype == bool:
        segments = {1: structure}
    else:  # objects 1..K (several boxes, instances)
        segments = {k: f"{structure} {k}" for k in range(1, max(1, int(mask.max())) + 1)}
    return write_dicom_seg(image, mask, output, segments, algorithm)


def write_overlay_png(path: Path, pixels: np.ndarray, mask: np.ndarray, name: str, score: float | None = None,
                      dice_on: str | None = None, view: View | None = None) -> Path:
    """A bool mask tinted red; a label map (several objects) with a colour per object; ``name`` (the structure)
    and the Dice ``score`` (on ``dice_on``) in its legend; ``view``: a volume slice's (default: a 2D image's)."""
    if mask.dtype == bool:
        return write_overlay(path, pixels, mask, view, name, score, dice_on)
    return write_label_overlay(path, pixels, mask, view, name, score, dice_on)


def write_slice_overlays(out: Path, name: str, volume: Volume, mask3d: np.ndarray, indices: Iterable[int],
                         window: Window, structure: str, truth: np.ndarray | None = None,
                         skip_empty: bool = True) -> list[Path]:
    """An overlay PNG per slice of ``indices`` (whose mask is not empty, with ``skip_empty``) in
    ``out/<name>_overlay/``, in the radiological view from ``volume``'s affine
    (:func:`gmiseg_edge.jobs.overlays.volume_view`), the legend naming ``structure`` and each slice's Dice against
    ``truth`` when given (written after the volume's mask: a volume whose mask fails leaves no overlays)."""
    overlays = []
    overlay_path(out, name, 0).parent.mkdir(exist_ok=True)
    view = volume_view(volume, AXIS)
    for k in indices:
        mask = slice_2d(mask3d, AXIS, k)
        if mask.any() or not skip_empty:
            pixels = to_uint8(slice_2d(volume.array, AXIS, k), window)
            score = dice(mask != 0, slice_2d(truth, AXIS, k)) if truth is not None else None
            overlays.append(write_overlay_png(overlay_path(out, name, k), pixels, mask, structure, score,
                                              "this slice", view))
    return overlays
