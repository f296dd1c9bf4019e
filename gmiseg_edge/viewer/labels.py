"""Writing one object's mask into a label map without touching the other objects (Qt-free, numpy only).

A label map holds one integer per object (0 background). Writing object ``label``'s new mask on a slice (or a
volume) replaces that object's earlier pixels there; pixels of *other* objects are kept unless ``overwrite``
is asked for, so a second object never eats the first.
"""

from __future__ import annotations

import numpy as np

from gmiseg_edge.core.errors import InputError


def paste(labels: np.ndarray, mask: np.ndarray, label: int, overwrite: bool = False,
          region: tuple | None = None) -> int:
    """Write bool ``mask`` as object ``label`` into ``labels[region]`` (the whole array when None), in place.

    The object's pixels in the region outside ``mask`` become background; inside ``mask`` the pixels become
    ``label`` where they are background or already ``label`` (any label when ``overwrite``). Returns the number
    of pixels of ``mask`` left to other objects.
    """
    if isinstance(label, bool) or int(label) != label or not 0 < int(label) <= np.iinfo(labels.dtype).max:
        raise InputError(f"object label must be an integer in 1..{np.iinfo(labels.dtype).max}, got {label!r}")
    target = labels if region is None else labels[region]
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != target.shape:
        raise InputError(f"mask of shape {mask.shape} does not fit the label map's {target.shape}")
    free = mask if overwrite else mask & ((target == 0) | (target == label))
    target[(target == label) & ~mask] = 0
    target[free] = label
    return int(np.count_nonzero(mask & ~free))


def paste_changes(labels: np.ndarray, mask: np.ndarray, label: int, overwrite: bool = False,
                  region: tuple | None = None) -> tuple[tuple[np.ndarray, ...], np.ndarray, int]:
    """What :func:`paste` would write, without writing it: ``(indices, values, kept_out)``, the indices into
    ``labels`` (one array per axis, fancy indexing) of the pixels whose value changes, their new values, and the
    number of pixels of ``mask`` left to other objects. ``labels[indices] = values`` equals :func:`paste`; napari's
    ``Labels.data_setitem(indices, values)`` redraws only those pixels. ``region``: leading integer indices (a
    slice ``(k,)``) or None."""
    if region is not None and not all(isinstance(i, int | np.integer) for i in region):
        raise InputError(f"region must be leading integer indices, got {region!r}")
    target = labels if region is None else labels[region]
    updated = np.array(target, copy=True)
    kept_out = paste(updated, mask, label, overwrite)
    changed = np.nonzero(updated != target)
    lead = tuple(np.full(len(changed[0]), int(i), np.intp) for i in (region or ()))
    return lead + changed, updated[changed], kept_out


def next_label(labels: np.ndarray) -> int:
    """The smallest label above every label in use (1 for an empty map)."""
    return int(labels.max(initial=0)) + 1
