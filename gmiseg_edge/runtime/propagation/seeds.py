"""Seeds of a propagation: which slices the user prompted or labelled, checked before anything is encoded.

Accepted forms (see :func:`parse_seeds`): one seed (``slice_index`` with ``box``/``points``/``labels`` or
``mask``), or ``seeds``: a list of ``(k, prompt)`` where the prompt is a box ``[x0, y0, x1, y1]``, a dict with
``box``/``points``/``labels``, or a labelled (H, W) mask of slice k; or a sparse label map (a volume-shaped
array whose labelled slices are the seeds). Two seeds on one slice: the later one replaces the earlier (a
correction). A seed box of zero width or height is an error (it says nothing about the structure's extent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.prompts import Prompt, make_prompt


@dataclass(frozen=True)
class Seed:
    """A seed on slice ``index``: a checked ``prompt`` to decode, or a labelled ``mask`` (H, W) kept as the
    slice's result. Once decoded, ``mask`` is the seed's mask and ``iou`` its predicted IoU (NaN for a label)."""

    index: int
    prompt: Prompt | None = None
    mask: np.ndarray | None = None
    iou: float = math.nan

    def resolved(self, mask: np.ndarray, iou: float) -> Seed:
        return replace(self, mask=mask, iou=float(iou))


def slice_index_of(value: Any, depth: int, name: str = "slice_index") -> int:
    """``value`` as a slice index 0..depth-1 (InputError naming ``name`` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if not 0 <= int(value) < depth:
        raise InputError(f"seed slice {value} is outside the volume (0..{depth - 1} along the axis)")
    return int(value)


def _mask_of(array: Any, source, index: int, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3:
        stacked = np.moveaxis(array, source.axis, 0)
        if stacked.shape != source.stack_shape:
            raise InputError(f"{name} of shape {array.shape} does not match the volume")
        array = stacked[index].T
    if array.shape != source.shape2d:
        raise InputError(f"{name} of shape {array.shape} does not match slice {index} of shape {source.shape2d} "
                         "(rows x columns as slice_2d shows it), nor the volume")
    if array.dtype != bool:
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise InputError(f"{name}: expected a bool or 0/1 mask, got dtype {array.dtype}")
        array = array != 0
    if not array.any():
        raise InputError(f"seed mask is empty on slice {index}: nothing to propagate")
    return np.ascontiguousarray(array)


def _prompt(index: int, box, points, labels, size: tuple[int, int], name: str) -> Prompt:
    try:
        prompt = make_prompt(points, labels, box, image_size=size)
    except InputError as exc:
        raise InputError(f"{name} (slice {index}): {exc}") from None
    if prompt.box is not None:
        x0, y0, x1, y1 = (float(v) for v in prompt.box)
        if x1 <= x0 or y1 <= y0:
            raise InputError(f"{name} (slice {index}): box {[x0, y0, x1, y1]} has zero area; give the structure's "
                             "extent [x0, y0, x1, y1] with x0 < x1 and y0 < y1")
    return prompt


def _one(entry: Any, source, position: int) -> Seed:
    name = f"seeds[{position}]"
    try:
        index, what = entry
    except (TypeError, ValueError):
        raise InputError(f"{name} must be (slice, prompt): a box, a dict of box/points/labels, or a mask; "
                         f"got {entry!r}") from None
    index = slice_index_of(index, source.depth, f"{name}'s slice")
    if isinstance(what, Mapping):
        unknown = set(what) - {"box", "points", "labels", "mask"}
        if unknown:
            raise InputError(f"{name}: unknown key(s) {sorted(unknown)}; use box, points, labels or mask")
        if "mask" in what:
            if len(what) > 1:
                raise InputError(f"{name}: give a prompt (box/points) or a mask, not both")
            return Seed(index, mask=_mask_of(what["mask"], source, index, f"{name}'s mask"))
        return Seed(index, prompt=_prompt(index, what.get("box"), what.get("points"), what.get("labels"),
                                          source.shape2d, name))
    array = np.asarray(what) if not isinstance(what, np.ndarray) else what
    if array.ndim >= 2:
        return Seed(index, mask=_mask_of(array, source, index, f"{name}'s mask"))
    return Seed(index, prompt=_prompt(index, what, None, None, source.shape2d, name))


def parse_seeds(source, slice_index=None, box=None, points=None, labels=None, mask=None, seeds=None) -> list[Seed]:
    """The seeds of a call (module docstring), ascending by slice; nothing decoded yet."""
    single = any(v is not None for v in (box, points, labels, mask))
    if seeds is not None:
        if single:
            raise InputError("give seeds=[(k, prompt), ...] or one prompt (box/points/mask) with slice_index, "
                             "not both")
        if isinstance(seeds, np.ndarray) and seeds.ndim == 3:  # a sparse label map
            if slice_index is not None:
                raise InputError("a sparse label map (seeds=) marks its own seed slices: give no slice_index")
            stacked = np.moveaxis(seeds, source.axis, 0)
            if stacked.shape != source.stack_shape:
                raise InputError(f"seed label map of shape {seeds.shape} does not match the volume")
            labelled = np.flatnonzero(stacked.reshape(source.depth, -1).any(axis=1))
            if not labelled.size:
                raise InputError("the seed label map is empty: nothing to propagate")
            found = [Seed(int(k), mask=_mask_of(seeds, source, int(k), "seed label map")) for k in labelled]
        else:
            if slice_index is not None:
                raise InputError("seeds= carries each seed's slice: give no slice_index")
            try:
                entries = list(seeds)
            except TypeError:
                raise InputError(f"seeds must be a list of (slice, prompt) or a label map, got {seeds!r}") from None
            if not entries:
                raise InputError("seeds is empty: nothing to propagate")
            found = [_one(entry, source, i) for i, entry in enumerate(entries)]
    else:
        if slice_index is None:
            raise InputError("no seed: give slice_index with box/points/mask, or seeds=[(k, prompt), ...]")
        index = slice_index_of(slice_index, source.depth)
        if mask is not None:
            if any(v is not None for v in (box, points, labels)):
                raise InputError("give a seed prompt (box/points) or a seed mask, not both")
            found = [Seed(index, mask=_mask_of(mask, source, index, "seed mask"))]
        else:
            found = [Seed(index, prompt=_prompt(index, box, points, labels, source.shape2d, "seed prompt"))]
    by_slice: dict[int, Seed] = {}
    for seed in found:  # a later seed on the same slice replaces the earlier one
        by_slice[seed.index] = seed
    return [by_slice[k] for k in sorted(by_slice)]
