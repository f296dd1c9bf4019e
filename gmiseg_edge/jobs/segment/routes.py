"""One input through ``segment``, by what it is and the prompt: a challenge case (its own boxes,
:mod:`gmiseg_edge.jobs.challenge`), a 2D image, a volume slice by slice (the prompted slice, or each labelled
slice), a volume through a support set (every slice, then the connected run), or propagation through a volume.

Volumes are segmented along the last axis (k); slices not segmented stay empty. When the input has a label map,
Dice against it is reported. Errors are raised (one line naming the file), not recorded: the batch records them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    slice_spacing,
)
from gmiseg_edge.data.challenge import CHALLENGE_SUFFIX
from gmiseg_edge.data.intensity import Window, to_uint8
from gmiseg_edge.jobs.challenge import segment_challenge_file
from gmiseg_edge.jobs.overlays import image_view
from gmiseg_edge.jobs.segment.inputs import InputFile, read_truth
from gmiseg_edge.jobs.segment.naming import output_path, overlay_path, prior_path, uncertainty_path
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
from gmiseg_edge.jobs.segment.writing import structure_name, write_mask, write_overlay_png, write_slice_overlays
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime.support.segment3d import segment_volume_from_supports, volumetric
from gmiseg_edge.runtime.support_volume import segment_volume

Progress = Callable[[str, int, int], None]  # (file name, slices done, slices in this file)


@dataclass(frozen=True)
class Scope:
    """What a volume's Dice is computed on: ``what`` in words (reported), ``slices`` along the last axis (None:
    the whole volume)."""

    what: str
    slices: Sequence[int] | None


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
    check_window_applies(item.image, image.array, options.window, isinstance(image, Image2D) and image.array.ndim == 3)
    if output.suffix == ".dcm" and not (isinstance(image, Volume) and image.format == "dicom"):
        raise InputError(f"{item.image}: --format dicom-seg needs a DICOM source series (a DICOM-SEG references "
                         "the series it segments); write nifti or nrrd")
    if output.suffix == ".dcm":  # a series no SEG can reference fails now, not after the segmentation
        from gmiseg_edge.data.seg_sources import check_seg_sources  # pydicom: DICOM-SEG outputs only

        check_seg_sources(image.header)
    if isinstance(image, Image2D):
        return _image_2d(item, image, output, name, options, segmenter, report, start)
    truth = read_truth(item, options.prompt, image.array.shape, image)
    if propagates(options.prompt):
        return _propagate(item, image, truth, output, name, options, segmenter, report, start)
    if isinstance(options.prompt, SupportSetPrompt):
        return _support_volume(item, image, truth, output, name, options, segmenter, report, start)
    return _volume_slices(item, image, truth, output, name, options, segmenter, report, start)


#: windows that adapt to any intensities (the others are scanner values: a CT preset or low,high)
ADAPTIVE_WINDOWS = ("percentile", "minmax")


def check_window_applies(path: Path, pixels: np.ndarray, window: Window, colour: bool = False) -> None:
    """Refuse a scanner window (a CT preset or low,high) on 8-bit pixels (a photo, a screenshot): they are used
    as they are, so the window would be silently ignored; an InputError naming the file and the window."""
    if pixels.dtype != np.uint8 or (isinstance(window, str) and window in ADAPTIVE_WINDOWS):
        return
    kind = "a colour image" if colour else "an image"
    shown = window if isinstance(window, str) else f"{window[0]:g},{window[1]:g}"
    raise InputError(f"{path}: {kind} with 8-bit pixels (0..255) is segmented as it is: --window {shown} maps "
                     "scanner intensities (CT in HU, MR) and cannot apply to it; refused: give no --window (or "
                     "percentile/minmax), or the scan itself")


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
    mask = segmenter(pixels, truth, tuple(image.spacing))
    report(item.image.name, 1, 1)
    _save_mask_2d(image, mask, output)
    if isinstance(options.prompt, SupportSetPrompt) and options.prompt.uncertainty:
        save_like(image, segmenter.uncertainty, uncertainty_path(output))
    score = dice(mask != 0, truth) if truth is not None else None
    overlays = [write_overlay_png(overlay_path(output.parent, name), pixels, mask, structure_name(options), score,
                                  "the image", image_view(image.spacing))] if options.overlay else []
    return FileResult(item.image, output, 1, score, overlays, time.perf_counter() - start,
                      dice_on="the image" if truth is not None else "")


def _save_mask_2d(image: Image2D, mask: np.ndarray, output: Path) -> None:
    """:func:`save_like` of a 2D mask; a bool mask is written as 0/255 in its own memory (a uint8 view, put back to
    0/1 after), the same file as save_like's own conversion without a second full-size copy (issue 26: a 20000²
    image's mask is 381 MiB)."""
    if mask.dtype != bool or not mask.flags.writeable:
        save_like(image, mask, output)
        return
    scaled = mask.view(np.uint8)
    scaled *= 255
    try:
        save_like(image, scaled, output)
    finally:
        np.minimum(scaled, 1, out=scaled)


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
        mask3d[:, :, k] = segmenter(pixels, slice_truth, slice_spacing(image.spacing, AXIS)).T
    report(item.image.name, len(indices), len(indices))
    if isinstance(prompt, ON_A_SLICE):  # one prompted slice is scored on that slice, not on the whole label map
        scope = Scope(f"the prompted slice {indices[0]}", indices)
    else:  # the segmented slices are the labelled ones: elsewhere both are empty, so this is the volume's Dice
        scope = Scope(f"the {len(indices)} labelled slice(s)", None)
    return _volume_written(item, image, truth, mask3d, output, name, options, segmenter, indices, len(indices), start,
                           scope=scope)


def _support_volume(item: InputFile, image: Volume, truth: np.ndarray | None, output: Path, name: str,
                    options: SegmentOptions, segmenter: SliceSegmenter, report: Progress, start: float) -> FileResult:
    """A volume through a support set (:mod:`gmiseg_edge.runtime.support_volume`): every slice with the presence
    decision (a slice where no support finds the structure stays empty), then only the run of slices connected to
    the most confident one (when none is found that way, the slices found by appearance alone, noted)."""
    assert isinstance(options.prompt, SupportSetPrompt) and segmenter.supports is not None
    if segmenter.volumes is not None and volumetric(image, *(v for v, _ in segmenter.volumes)):
        return _support_volume_3d(item, image, truth, output, name, options, segmenter, report, start)
    depth = image.array.shape[AXIS]
    found = segment_volume(segmenter.supports, lambda k: to_uint8(slice_2d(image.array, AXIS, k), options.window),
                           depth, lambda done, total: report(item.image.name, done, total),
                           spacing=slice_spacing(image.spacing, AXIS))
    # slice k's (rows j, columns i) back to the volume's (i, j, k)
    mask3d = np.ascontiguousarray(found.mask.transpose(2, 1, 0))
    spread3d = np.ascontiguousarray(found.uncertainty.transpose(2, 1, 0)) if options.prompt.uncertainty else None
    return _volume_written(item, image, truth, mask3d, output, name, options, segmenter, range(depth), depth, start,
                           note="support set, 2D path (slice by slice): " + support_note(found), uncertainty=spread3d,
                           scope=Scope(f"the whole volume ({depth} slices)", None))


#: ``--support-option`` on the 3D path: the 2D path's names, with the same meaning (``locate=affine``: no
#: deformable stage; ``locate=appearance``: the appearance search alone; ``fusion``: the same three rules)
VOLUME_PATH_STEPS = ("locate", "fusion")


def volume_path_options(strategies: Sequence[tuple[str, str | int]], image: Path) -> dict[str, Any]:
    """``segment_volume_from_supports`` keywords from ``--support-option`` pairs (validated names); the steps the
    3D path has no counterpart for (choice, appearance, select) are refused naming the ones it takes."""
    keywords: dict[str, Any] = {}
    for step, name in strategies:
        if step not in VOLUME_PATH_STEPS:
            raise InputError(f"{image}: --support-option {step}= is a 2D path step (2D examples, or a volume "
                             "segmented slice by slice); example volumes on a volume take the 3D path, which takes "
                             f"{', '.join(f'{s}=' for s in VOLUME_PATH_STEPS)}")
        if step == "fusion":
            keywords["fusion"] = name
        elif name == "appearance":
            keywords["locate"] = "appearance"
        else:
            keywords["deformable"] = name == "deformable"
    return keywords


def _support_volume_3d(item: InputFile, image: Volume, truth: np.ndarray | None, output: Path, name: str,
                       options: SegmentOptions, segmenter: SliceSegmenter, report: Progress, start: float,
                       ) -> FileResult:
    """A volume from example volumes (:mod:`gmiseg_edge.runtime.support.segment3d`): each registered onto it in
    3D, the structure located by anatomy or appearance, SAM on the slices it holds; the prior when asked."""
    assert isinstance(options.prompt, SupportSetPrompt) and segmenter.volumes is not None
    result = segment_volume_from_supports(segmenter.predictor, image, segmenter.volumes, options.window,
                                          **volume_path_options(options.prompt.strategies, item.image),
                                          progress=lambda step, done, total: report(f"{item.image.name} ({step})",
                                                                                    done, total))
    if options.prompt.prior:
        save_like(image, np.round(np.clip(result.prior, 0, 1) * 255).astype(np.uint8), prior_path(output))
    spread3d = np.round(np.clip(result.uncertainty, 0, 0.5) * 510).astype(np.uint8) \
        if options.prompt.uncertainty else None
    located = f"located by {result.located}" + (f" (confidence {result.confidence:.2f})"
                                                 if result.confidence is not None else "")
    chosen = "".join(f", {step}={name}" for step, name in options.prompt.strategies)
    note = (f"support set, 3D path (volumes registered as volumes{chosen}): {located}, {len(result.slices)} "
            f"slice(s) decoded" + "".join(f"; {m}" for m in result.messages))
    return _volume_written(item, image, truth, result.mask, output, name, options, segmenter, list(result.slices),
                           len(result.slices), start, note=note, uncertainty=spread3d,
                           scope=Scope(f"the whole volume ({image.array.shape[AXIS]} slices)", None))


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
                           result.slices_visited, start, note=f"propagation: {result.summary()}", skip_empty=False,
                           scope=Scope(f"the propagated volume ({len(kept)} slice(s) kept, all {depth} scored)", None))


def _volume_written(item: InputFile, image: Volume, truth: np.ndarray | None, mask3d: np.ndarray, output: Path,
                    name: str, options: SegmentOptions, segmenter: SliceSegmenter, indices: Sequence[int],
                    slices: int, start: float, scope: Scope, note: str = "", uncertainty: np.ndarray | None = None,
                    skip_empty: bool = True) -> FileResult:
    """Write a volume's mask (then its disagreement map and overlays of ``indices``) and its result, Dice on
    ``scope``."""
    write_mask(image, mask3d, output, options, segmenter.predictor.model_name)
    if uncertainty is not None:
        save_like(image, uncertainty, uncertainty_path(output))
    overlays = []
    if options.overlay:  # after the mask: a volume whose mask fails leaves no overlays
        overlays = write_slice_overlays(output.parent, name, image, mask3d, indices, options.window,
                                        structure_name(options), truth, skip_empty=skip_empty)
    score = None
    if truth is not None:
        picked = list(scope.slices) if scope.slices is not None else slice(None)
        score = dice(mask3d[:, :, picked] != 0, truth[:, :, picked])
    return FileResult(item.image, output, slices, score, overlays, time.perf_counter() - start, note=note,
                      dice_on=scope.what if truth is not None else "")
