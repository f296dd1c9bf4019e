"""Which supports to use on a query: the ones whose whole image looks most like it (atlas selection, as in
multi-atlas segmentation). Another patient's slices of one structure span its whole extent; the ones at the
query's level in the body register far better than the ones at its ends. Likeness is the cosine between the
two images' mean unit embedding vectors over their valid cells: cheap (the embeddings are there already),
blind to where the body sits in the field of view, and blind to the mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def image_descriptor(embedding: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The unit mean of the unit cell vectors of a (1, C, g, g) embedding over ``valid`` (g, g) cells."""
    cells = embedding[0].reshape(embedding.shape[1], -1).T.astype(np.float64)
    cells /= np.maximum(np.linalg.norm(cells, axis=1, keepdims=True), 1e-12)
    mean = cells[valid.ravel()].mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def most_alike(query: np.ndarray, supports: Sequence[np.ndarray], count: int) -> list[int]:
    """Indices (in the supports' order) of the ``count`` support descriptors closest to ``query``'s by cosine;
    every support when there are no more than ``count``."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if len(supports) <= count:
        return list(range(len(supports)))
    likeness = np.asarray([float(np.dot(query, s)) for s in supports])
    chosen = np.argsort(-likeness, kind="stable")[:count]
    return sorted(int(i) for i in chosen)
