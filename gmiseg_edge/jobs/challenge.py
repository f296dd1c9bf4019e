"""Segment a CVPR 2024 "MedSAM on laptop" case (:mod:`gmiseg_edge.data.challenge`): its boxes in, ``segs`` out.

2D: the image is encoded once and each box decoded on it (one decoder run per box). 3D: each box's 2D
rectangle prompts the middle slice of its z range (``int((z_max - z_min) / 2 + z_min)``, the challenge
baseline's seed), the structure is carried slice to slice by :meth:`Predictor.propagate` (each slice's box
from its neighbour's mask; it stops where the structure ends) and kept within the box's z range. Box n paints
label n; a later box overwrites an earlier one where they overlap, as the baseline does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.data.challenge import ChallengeCase, read_challenge_case, write_segs
from gmiseg_edge.runtime.predictor import Predictor


def boxes_from_labels(gts: np.ndarray) -> np.ndarray:
    """The challenge's boxes for label map ``gts`` (labels 1..max; an absent label gets no box): 2D tight
    ``[x_min, y_min, x_max, y_max]``, 3D ``[x_min, y_min, z_min, x_max, y_max, z_max]``."""
    boxes = []
    for n in range(1, int(gts.max(initial=0)) + 1):
        where = np.argwhere(gts == n)
        if not len(where):
            continue
        low, high = where.min(0)[::-1], where.max(0)[::-1]  # array axes (z,) y, x -> x, y (, z)
        boxes.append([*low, *high])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 2 * gts.ndim)


def segment_case(predictor: Predictor, case: ChallengeCase, boxes: np.ndarray | None = None) -> np.ndarray:
    """The label map ``segs`` of ``case`` from ``boxes`` (default: the case's own)."""
    boxes = case.boxes if boxes is None else boxes
    if boxes is None or not len(boxes):
        raise DataError("has no 'boxes' to segment", case.path)
    dtype = np.uint8 if len(boxes) <= 255 else np.uint16
    segs = np.zeros(case.spatial_shape, dtype)
    if not case.is_3d:
        encoded = predictor.encode(case.image)
        for n, box in enumerate(boxes, start=1):
            segs[predictor.predict(encoded, box=box).mask] = n
        return segs
    volume = np.transpose(case.image, (0, 2, 1))  # (z, x, y): slice_2d(volume, 0, z) is imgs[z]
    for n, (x0, y0, z0, x1, y1, z1) in enumerate(boxes, start=1):
        seed = int((z1 - z0) / 2 + z0)
        result = predictor.propagate(volume, seed, box=[x0, y0, x1, y1], axis=0)
        mask = np.transpose(result.mask, (0, 2, 1))
        mask[: int(z0)] = False
        mask[int(z1) + 1:] = False
        segs[mask] = n
    return segs


def segment_challenge_file(predictor: Predictor, path: str | Path, output: str | Path) -> ChallengeCase:
    """Segment the case at ``path`` and write ``output`` (``segs``); the case read."""
    case = read_challenge_case(path)
    write_segs(output, segment_case(predictor, case))
    return case

