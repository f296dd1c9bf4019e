"""Prompt sources at work: the support set of a :class:`SupportSetPrompt`, and the segmenter of one 2D image
(or slice) that turns each kind of prompt into a mask or label map."""

from __future__ import annotations

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.prompts import box_from_mask, boxes_from_labels, instance_labels
from gmiseg_edge.core.selection import spread
from gmiseg_edge.data import Volume, slice_2d, slice_spacing
from gmiseg_edge.data.intensity import Window, to_uint8
from gmiseg_edge.data.support_sets import read_support_set
from gmiseg_edge.jobs.segment.prompts import (
    ONE_OBJECT,
    BoxesPrompt,
    InstancesPrompt,
    LabelPrompt,
    Prompt,
    SupportSetPrompt,
)
from gmiseg_edge.runtime.predictor import Predictor
from gmiseg_edge.runtime.support.segmenter import SupportSetSegmenter
from gmiseg_edge.runtime.support_volume import SupportVolume, uncertainty_uint8

AXIS = 2  # volumes are segmented slice by slice along the last axis (k)


def load_supports(predictor: Predictor, prompt: SupportSetPrompt,
                  window: Window = "percentile", physical: bool = True) -> SupportSetSegmenter:
    """A segmenter holding every support of ``prompt.folder`` (read by :func:`gmiseg_edge.data.support_sets.
    read_support_set`, encoded through the predictor's cache): each 2D example, and up to ``prompt.slices``
    labelled slices of each example volume, spread over the label's extent, each at its pixel size from its header
    (1 mm where the format has none, such as PNG); the prompt's strategies chosen. ``physical=False``: every
    example at 1 mm per pixel, for queries that come without a pixel size (served images): both then in pixels."""
    segmenter = SupportSetSegmenter(predictor, **dict(prompt.strategies))
    for example in read_support_set(prompt.folder, prompt.label):
        image = example.image
        if isinstance(image, Volume):
            for k in spread(example.labelled_indices(AXIS), prompt.slices):
                segmenter.add_support(to_uint8(slice_2d(image.array, AXIS, k), window),
                                      slice_2d(example.mask, AXIS, k), name=f"{example.source} slice {k}",
                                      spacing=slice_spacing(image.spacing, AXIS) if physical else None)
        else:
            segmenter.add_support(to_uint8(image.array, window), example.mask, name=str(example.source),
                                  spacing=tuple(image.spacing) if physical else None)
    return segmenter


def support_volumes(prompt: SupportSetPrompt) -> list[tuple[Volume, np.ndarray]] | None:
    """The examples of ``prompt.folder`` as (volume, structure mask) pairs for the 3D path when every example is a
    volume; None when they are 2D images (2D path). Examples mixing both are refused."""
    examples = read_support_set(prompt.folder, prompt.label)
    kinds = {example.is_volume for example in examples}
    if len(kinds) > 1:
        raise InputError(f"{prompt.folder}: the support set mixes 2D images and volumes; give all examples as 2D "
                         "images or all as volumes")
    return [(example.image, example.mask) for example in examples] if kinds == {True} else None


def support_note(found: SupportVolume) -> str:
    """What ``segment`` says of a support set's volume: slices marked and kept, and whether it was searched."""
    choice = found.choice
    if not choice.keep.any():
        return "support set: structure not found in any slice"
    note = (f"support set: {int(found.marked.sum())} slice(s) marked, {int(choice.keep.sum())} kept connected to "
            f"slice {choice.anchor}")
    if choice.searched:
        note += ("; found by appearance alone, away from where the supports' anatomy puts it (another patient's "
                 "lesion, or a look-alike in a scan without it): check it")
    return note


class SliceSegmenter:
    """Segments one 2D image (or one slice) by the prompt: a bool mask, or a label map for several objects.

    ``supports``: the loaded support set of a :class:`SupportSetPrompt` (a 2D image; volumes go through
    :func:`gmiseg_edge.runtime.support_volume.segment_volume`); ``volumes``: the example volumes when every
    example is one (a volume input then takes the 3D path)."""

    def __init__(self, predictor: Predictor, prompt: Prompt | None, supports: SupportSetSegmenter | None = None,
                 volumes: list[tuple[Volume, np.ndarray]] | None = None) -> None:
        self.predictor = predictor
        self.prompt = prompt
        self.supports = supports
        self.volumes = volumes
        self.uncertainty: np.ndarray | None = None  # the last support-set query's, as uint8 (0..255 for 0..0.5)

    def __call__(self, pixels: np.ndarray, truth: np.ndarray | None,
                 spacing: tuple[float, float] | None = None) -> np.ndarray:
        """The mask of ``pixels`` (uint8); ``truth``: the slice's label map, read by label and instance prompts;
        ``spacing``: its (row, col) pixel size in mm, read by a support set (its examples carry theirs)."""
        prompt = self.prompt
        if isinstance(prompt, SupportSetPrompt):
            assert self.supports is not None
            prediction = self.supports.segment(pixels, spacing=spacing)
            self.uncertainty = uncertainty_uint8(prediction)
            return prediction.mask
        if isinstance(prompt, BoxesPrompt):
            return self.predictor.predict(pixels, boxes=prompt.boxes).label_map()
        if isinstance(prompt, InstancesPrompt):
            assert truth is not None
            _, boxes = boxes_from_labels(instance_labels(truth) if truth.dtype == bool else truth)
            if not len(boxes):
                return np.zeros(truth.shape, np.uint8)
            return self.predictor.predict(pixels, boxes=boxes).label_map()
        if isinstance(prompt, ONE_OBJECT):
            return self.predictor.predict(pixels, **prompt.keywords()).mask
        assert isinstance(prompt, LabelPrompt) and truth is not None
        return self.predictor.predict(pixels, box=box_from_mask(truth)).mask
