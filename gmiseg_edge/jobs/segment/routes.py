"""One input through ``segment``, by what it is and the prompt: a challenge case (its own boxes,
:mod:`gmiseg_edge.jobs.challenge`), a 2D image, a volume slice by slice (the prompted slice, or each labelled
slice), a volume through a support set (every slice, then the connected run), or propagation through a volume.

Volumes are segmented along the last axis (k); slices not segmented stay empty. When the input has a label map,
Dice against it is reported. Errors are raised (one line naming the file), not recorded: the batch records them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.data import (
    Image2D,
    Volume,
    file_stem,
    file_suffix,
    labelled_indices,
    largest_index,
    read_image,
    save_like,
    slice_2d,
)
from gmiseg_edge.data.challenge import CHALLENGE_SUFFIX
from gmiseg_edge.data.intensity import to_uint8
from gmiseg_edge.jobs.challenge import segment_challenge_file
from gmiseg_edge.jobs.segment.inputs import InputFile, read_truth
from gmiseg_edge.jobs.segment.naming import output_path, overlay_path, uncertainty_path
from gmiseg_edge.jobs.segment.options import SegmentOptions
from gmiseg_edge.jobs.segment.prompts import (
    ON_A_SLICE,
    ONE_OBJECT,
    LabelPrompt,
    SupportSetPrompt,
    gives_label_map,
    propagates,
    seed_slice,
)
from gmiseg_edge.jobs.segment.report import FileResult
from gmiseg_edge.jobs.segment.sources import AXIS, SliceSegmenter, support_note
from gmiseg_edge.jobs.segment.writing import write_mask, write_overlay_png, write_slice_overlays
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime.support_volume import segment_volume

Progress = Callable[[str, int, int], None]  # (file name, slices done, slices in this file)


def segment_file(item: InputFile, out: Path, options: SegmentOptions, segmenter: SliceSegmenter,
                 progress: Progress | None = None, name: str | None = None) -> FileResult:
    """Segment one input file and write its mask (and overlays) into ``out`` as ``<name>_mask.<ext>`` (``name``:
    the file's stem by default, see :func:`~gmiseg_edge.jobs.segment.naming.output_names`)."""
    start = time.perf_counter()
    name = name or file_stem(item.image)
    output = output_path(out, item.image, name, options.format)
    report = progress or (lambda name, done, total: None)
    if file_suffix(item.image) == CHALLENGE_SUFFIX:
        report(item.image.name, 0, 1)
        case = segment_challenge_file(segmenter.predictor, item.image, output)
        report(item.image.name, 1, 1)
        return FileResult(item.image, output, case.image.shape[0] if case.is_3d else 1,
                          seconds=time.perf_counter() - start)
    image = read_image(item.image, series=options.series)
    if output.suffix == ".dcm" and not (isinstance(image, Volume) and image.format == "dicom"):
        raise InputError(f"{item.image}: --format dicom-seg needs a DICOM source series (a DICOM-SEG references "
                         "the series it segments); write nifti or nrrd")
    if isinstance(image, Image2D):
        return _image_2d(item, image, output, name, options, segmenter, report, start)
    truth = read_truth(item, options.prompt, image.array.shape, image)
    if propagates(options.prompt):
        return _propagate(item, image, truth, output, name, options, segmenter, report, start)
    if isinstance(options.prompt, SupportSetPrompt):
        return _support_volume(item, image, truth, output, name, options, segmenter, report, start)
    return _volume_slices(item, image, truth, output, name, options, segmenter, report, start)


def _image_2d(item: InputFile, image: Image2D, output: Path, name: str, options: SegmentOptions,
              segmenter: SliceSegmenter, report: Progress, start: float) -> FileResult:
    """A 2D image: one mask (PNG), the support set's disagreement beside it when asked."""
    truth = read_truth(item, options.prompt, image.array.shape[:2])
    if options.format != "auto":
        raise InputError(f"{item.image}: --format applies to volumes; 2D masks are written as PNG")
    if seed_slice(options.prompt) is not None or propagates(options.prompt):
        raise InputError(f"{item.image}: --slice and --propagate apply to volumes only")
    pixels = to_uint8(image.array, options.window)
    report(item.image.name, 0, 1)
    mask = segmenter(pixels, truth)
    report(item.image.name, 1, 1)
    save_like(image, mask, output)
    if isinstance(options.prompt, SupportSetPrompt) and options.prompt.uncertainty:
        save_like(image, segmenter.uncertainty, uncertainty_path(output))
    overlays = [write_overlay_png(overlay_path(output.parent, name), pixels, mask)] if options.overlay else []
    return FileResult(item.image, output, 1, dice(mask != 0, truth) if truth is not None else None, overlays,
                      time.perf_counter() - start)


def _volume_slices(item: InputFile, image: Volume, truth: np.ndarray | None, output: Path, name: str,
                   options: SegmentOptions, segmenter: SliceSegmenter, report: Progress, start: float) -> FileResult:
    """A volume slice by slice: the prompt's slice (box/points), or each slice where the label map has the
    structure (label and instance prompts)."""
    depth = image.array.shape[AXIS]
    prompt = options.prompt
    if isinstance(prompt, ON_A_SLICE):
        if prompt.slice is None:
            raise InputError(f"{item.image}: a volume with --box/--point needs --slice K (0..{depth - 1}, along "
                             "the last axis): the prompt's coordinates belong to one slice")
        if not 0 <= prompt.slice < depth:
            raise InputError(f"{item.image}: --slice {prompt.slice} is outside 0..{depth - 1}")
        indices = [prompt.slice]
    else:
        indices = labelled_indices(truth, AXIS)  # type: ignore[arg-type]
    # a label map of several objects: up to 65535 objects a slice
    mask3d = np.zeros(image.array.shape, np.uint16 if gives_label_map(prompt) else bool)
    for done, k in enumerate(indices):
        report(item.image.name, done, len(indices))
        pixels = to_uint8(slice_2d(image.array, AXIS, k), options.window)
        slice_truth = slice_2d(truth, AXIS, k) if truth is not None else None
        mask3d[:, :, k] = segmenter(pixels, slice_truth).T
    report(item.image.name, len(indices), len(indices))
    return _volume_written(item, image, truth, mask3d, output, name, options, segmenter, indices, len(indices), start)


def _support_volume(item: InputFile, image: Volume, truth: np.ndarray | None, output: Path, name: str,
                    options: SegmentOptions, segmenter: SliceSegmenter, report: Progress, start: float) -> FileResult:
    """A volume through a support set (:mod:`gmiseg_edge.runtime.support_volume`): every slice with the presence
    decision (a slice where no support finds the structure stays empty), then only the run of slices connected to
    the most confident one (when none is found that way, the slices found by appearance alone, noted)."""
    assert isinstance(options.prompt, SupportSetPrompt) and segmenter.supports is not None
    depth = image.array.shape[AXIS]
    found = segment_volume(segmenter.supports, lambda k: to_uint8(slice_2d(image.array, AXIS, k), options.window),
                           depth, lambda done, total: report(item.image.name, done, total))
    # slice k's (rows j, columns i) back to the volume's (i, j, k)
    mask3d = np.ascontiguousarray(found.mask.transpose(2, 1, 0))
    spread3d = np.ascontiguousarray(found.uncertainty.transpose(2, 1, 0)) if options.prompt.uncertainty else None
    return _volume_written(item, image, truth, mask3d, output, name, options, segmenter, range(depth), depth, start,
                           note=support_note(found), uncertainty=spread3d)


def _propagate(item: InputFile, image: Volume, truth: np.ndarray | None, output: Path, name: str,
               options: SegmentOptions, segmenter: SliceSegmenter, report: Progress, start: float) -> FileResult:
    """Propagation (DESIGN §10) from the box/points prompt on its slice, or from the labelled slice of largest area
    of the prompt's label; the volume's intensities are mapped once with ``window``."""
    depth = image.array.shape[AXIS]
    prompt = options.prompt
    if isinstance(prompt, ONE_OBJECT):
        if prompt.slice is None:
            raise InputError(f"{item.image}: --propagate with --box/--point needs --slice K (0..{depth - 1}, the "
                             "seed slice along the last axis)")
        seed, keywords = prompt.slice, prompt.keywords()
    else:
        assert isinstance(prompt, LabelPrompt) and truth is not None
        if not truth.any():
            raise InputError(f"{item.mask}: label {prompt.label} is absent: nothing to seed --propagate with")
        seed, keywords = largest_index(truth, AXIS), {"mask": truth}
    result = segmenter.predictor.propagate(image.array, seed, axis=AXIS, window=options.window, spacing=image.spacing,
                                           progress=lambda done, total: report(item.image.name, done, total),
                                           **keywords)
    kept = [int(k) for k in np.flatnonzero(result.kept)]
    return _volume_written(item, image, truth, result.mask, output, name, options, segmenter, kept,
                           result.slices_visited, start, note=f"propagation: {result.summary()}", skip_empty=False)


def _volume_written(item: InputFile, image: Volume, truth: np.ndarray | None, mask3d: np.ndarray, output: Path,
                    name: str, options: SegmentOptions, segmenter: SliceSegmenter, indices: Sequence[int],
                    slices: int, start: float, note: str = "", uncertainty: np.ndarray | None = None,
                    skip_empty: bool = True) -> FileResult:
    """Write a volume's mask (then its disagreement map and overlays of ``indices``) and its result."""
    write_mask(image, mask3d, output, options, segmenter.predictor.model_name)
    if uncertainty is not None:
        save_like(image, uncertainty, uncertainty_path(output))
    overlays = []
    if options.overlay:  # after the mask: a volume whose mask fails leaves no overlays
        overlays = write_slice_overlays(output.parent, name, image.array, mask3d, indices, options.window,
                                        skip_empty=skip_empty)
    return FileResult(item.image, output, slices, dice(mask3d != 0, truth) if truth is not None else None,
                      overlays, time.perf_counter() - start, note=note)
