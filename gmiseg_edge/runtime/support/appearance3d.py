"""Lesions located by appearance, in 3D (DESIGN §7): a lesion is not where another patient's anatomy puts it, so
its place in the query is searched for by what it looks like, over the whole query volume as one search.

1. **Probe** (:func:`fit_probe`): from each support volume, up to ``PROBE_SLICES`` of its labelled axial slices
   (spread over the label's extent) and ``NEGATIVE_SLICES`` slices without the label (spread over the rest of
   its body) are encoded (through the predictor's cache). Their embedding cells on the 64 x 64 grid are
   *structure* (label area weight >= 0.5, or the heaviest cell) or *background* (valid cells of weight 0: those
   within 4 cells of the structure and a seeded sample of ``FAR_CELLS`` of the others per slice, which keeps the
   fit at seconds for 4 support volumes of 8 slices instead of minutes); one
   L2-regularised logistic regression over all supports' cells (:func:`gmiseg_edge.runtime.embedding_probe.
   fit_direction`, every support volume weighing the same) gives the direction. ``score`` per cell is
   :func:`gmiseg_edge.runtime.support.appearance.score_map` (unit cells, 3 x 3 mean); ``threshold`` and ``contrast``
   the midpoint and difference of the mean score over the structure cells and over their ring (valid
   background cells within 4 cells).
2. **Search** (:func:`search`): every ``stride``-th query slice that holds body (``stride`` = ``SEARCH_MM`` mm
   in slices) is encoded and scored: ``z = (score - threshold) / contrast`` on its valid cells, ``E = sigmoid(4
   z)``. The cells with ``E >= 0.5`` of the searched slices form one 3D grid (slices stacked at the stride); its
   26-connected components are candidates and the one with the largest summed positive ``z`` (the evidence) is
   the lesion. Its **confidence** is the mean ``E`` over its cells; ``share`` its evidence over all
   components' (1.0: nothing else in the volume looks like it).
3. **Prior** (:func:`prior_slices`): every query slice from one stride before the component's first searched
   slice to one stride after its last is encoded and scored; its prior is ``E`` (at the slice's size) within the
   component's cells on the nearest searched slice, grown by ``GROW_CELLS`` cells.

Nothing here decodes: :mod:`.segment3d` prompts SAM from the prior as it does from an anatomical prior.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from gmiseg_edge.core.selection import spread
from gmiseg_edge.core.transforms import postprocess_logits
from gmiseg_edge.runtime.embedding_probe import fit_direction
from gmiseg_edge.runtime.predictor import EncodedImage, Predictor
from gmiseg_edge.runtime.support.appearance import score_map
from gmiseg_edge.runtime.support.supports import RING_CELLS, grid_weights

PROBE_SLICES = 6
NEGATIVE_SLICES = 2
SEARCH_MM = 5.0
GROW_CELLS = 2
FAR_CELLS = 512  # background cells away from the structure sampled per slice for the fit
SEED = 20240515
CHUNK = 8  # slices encoded at a time (embeddings held at once)
BODY_LEVEL = 20  # uint8: a slice with no pixel above it holds no body


@dataclass(frozen=True)
class Probe:
    """The appearance model of step 1: ``z = (direction . v - threshold) / contrast`` per embedding cell."""

    direction: np.ndarray
    threshold: float
    contrast: float
    slices: int  # support slices it was fitted on


@dataclass(frozen=True)
class Found:
    """Step 2's answer: the component of highest evidence on the searched slices."""

    searched: np.ndarray  # int (n,): the query slices scored
    cells: np.ndarray  # bool (n, g, g): the component's cells on each searched slice
    confidence: float  # mean E over the component
    share: float  # its evidence over all components'
    stride: int

    @property
    def extent(self) -> tuple[int, int]:
        """First and last query slice of the component (searched slices only)."""
        held = self.searched[self.cells.any(axis=(1, 2))]
        return int(held.min()), int(held.max())


def _valid(encoded: EncodedImage, input_size: int) -> np.ndarray:
    g = encoded.embedding.shape[-1]
    return grid_weights(np.ones(encoded.size, np.float32), encoded.prepared, input_size, g) >= 0.5


def _unit_cells(embedding: np.ndarray) -> np.ndarray:
    cells = embedding[0].reshape(embedding.shape[1], -1).T.astype(np.float32)
    return cells / np.maximum(np.linalg.norm(cells, axis=1, keepdims=True), 1e-12)


def _support_slices(label: np.ndarray, body: np.ndarray) -> tuple[list[int], list[int]]:
    """(labelled, unlabelled) slice indices of one support stack (K, H, W) for step 1."""
    held = label.any(axis=(1, 2))
    positive = spread([int(k) for k in np.flatnonzero(held)], PROBE_SLICES)
    negative = spread([int(k) for k in np.flatnonzero(~held & body)], NEGATIVE_SLICES)
    return positive, negative


def _negatives(outside: np.ndarray, structure: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The background cells a slice gives the fit: its ring (within ``RING_CELLS`` of the structure) and a seeded
    sample of at most ``FAR_CELLS`` of the rest (the classes are weighed equally, so the sample changes the fit's
    expectation not at all and its cost by the share of cells dropped)."""
    kernel = np.ones((2 * RING_CELLS + 1,) * 2, np.uint8)
    ring = outside & (cv2.dilate(structure.astype(np.uint8), kernel) > 0)
    far = np.flatnonzero((outside & ~ring).ravel())
    chosen = ring.ravel().copy()
    chosen[rng.choice(far, size=min(FAR_CELLS, len(far)), replace=False)] = True
    return chosen.reshape(outside.shape)


def fit_probe(predictor: Predictor, supports: Sequence[tuple[Callable[[int], np.ndarray], np.ndarray]]) -> Probe:
    """Step 1 on support volumes given as (``pixels(k)`` -> uint8 slice k, label stack bool (K, H, W))."""
    cells, positive, negative = [], [], []
    structure_scores, ring_scores = [], []
    encoded_all: list[tuple[EncodedImage, np.ndarray, np.ndarray]] = []
    count = 0
    rng = np.random.default_rng(SEED)
    for pixels, label in supports:
        body = np.array([pixels(k).max() > BODY_LEVEL for k in range(label.shape[0])])
        chosen = [k for group in _support_slices(label, body) for k in group]
        encoded = predictor.encode_many([pixels(k) for k in chosen])
        x, pos, neg = [], [], []
        for k, image in zip(chosen, encoded, strict=True):
            g = image.embedding.shape[-1]
            weights = grid_weights(label[k].astype(np.float32), image.prepared, predictor.input_size, g)
            valid = _valid(image, predictor.input_size)
            structure = weights >= min(0.5, float(weights.max())) if weights.max() > 0 else np.zeros_like(valid)
            outside = valid & (weights == 0)
            x.append(_unit_cells(image.embedding))
            pos.append(structure.ravel())
            neg.append(_negatives(outside, structure, rng).ravel())
            encoded_all.append((image, structure, outside))
        cells.append(np.concatenate(x))
        positive.append(np.concatenate(pos))
        negative.append(np.concatenate(neg))
        count += len(chosen)
    direction = fit_direction(cells, positive, negative)
    kernel = np.ones((2 * RING_CELLS + 1,) * 2, np.uint8)
    for image, structure, outside in encoded_all:
        if not structure.any():
            continue
        score = score_map(image.embedding, direction)
        ring = outside & (cv2.dilate(structure.astype(np.uint8), kernel) > 0)
        structure_scores.append(score[structure])
        ring_scores.append(score[ring if ring.any() else outside])
    high = float(np.concatenate(structure_scores).mean())
    low = float(np.concatenate(ring_scores).mean())
    return Probe(direction, (high + low) / 2, max(high - low, 1e-3), count)


def _z(probe: Probe, encoded: EncodedImage, input_size: int) -> np.ndarray:
    """z on the grid, -inf on cells outside the image."""
    z = (score_map(encoded.embedding, probe.direction) - probe.threshold) / probe.contrast
    return np.where(_valid(encoded, input_size), z, -np.inf).astype(np.float32)


def search(predictor: Predictor, probe: Probe, pixels: Callable[[int], np.ndarray], depth: int,
           spacing_mm: float) -> Found | None:
    """Step 2 over a query of ``depth`` slices (``pixels(k)`` -> uint8 slice k, slices ``spacing_mm`` apart);
    None when no cell of any searched slice looks like the structure."""
    stride = max(1, round(SEARCH_MM / spacing_mm))
    searched = np.array([k for k in range(0, depth, stride) if pixels(k).max() > BODY_LEVEL], int)
    if not len(searched):
        return None
    z = np.stack([_z(probe, e, predictor.input_size) for e in predictor.encode_many([pixels(k) for k in searched])])
    labels, count = ndimage.label(z >= 0, structure=np.ones((3, 3, 3), bool))  # E >= 0.5 <=> z >= 0
    if not count:
        return None
    evidence = ndimage.sum_labels(np.maximum(z, 0), labels, index=np.arange(1, count + 1))
    best = int(np.argmax(evidence)) + 1
    cells = labels == best
    confidence = float((1 / (1 + np.exp(-4 * z[cells]))).mean())
    return Found(searched, cells, confidence, float(evidence[best - 1] / max(evidence.sum(), 1e-12)), stride)


def prior_slices(predictor: Predictor, probe: Probe, pixels: Callable[[int], np.ndarray], depth: int,
                 found: Found) -> dict[int, np.ndarray]:
    """Step 3: the prior (H, W) of each query slice around the found component."""
    first, last = found.extent
    held = found.searched[found.cells.any(axis=(1, 2))]
    kernel = np.ones((2 * GROW_CELLS + 1,) * 2, np.uint8)
    slices = list(range(max(0, first - found.stride), min(depth, last + found.stride + 1)))
    priors: dict[int, np.ndarray] = {}
    for start in range(0, len(slices), CHUNK):
        chunk = slices[start:start + CHUNK]
        for k, encoded in zip(chunk, predictor.encode_many([pixels(k) for k in chunk]), strict=True):
            priors[k] = _slice_prior(predictor, probe, found, held, kernel, k, encoded)
    return priors


def _slice_prior(predictor: Predictor, probe: Probe, found: Found, held: np.ndarray, kernel: np.ndarray, k: int,
                 encoded: EncodedImage) -> np.ndarray:
    nearest = int(held[np.argmin(np.abs(held - k))])
    region = cv2.dilate(found.cells[int(np.flatnonzero(found.searched == nearest)[0])].astype(np.uint8), kernel) > 0
    z = _z(probe, encoded, predictor.input_size)
    e = np.where(region & np.isfinite(z), 1 / (1 + np.exp(-4 * np.where(np.isfinite(z), z, 0))), 0.0)
    full = postprocess_logits(e[None].astype(np.float32), encoded.prepared, predictor.input_size)[0]
    return np.clip(full, 0, 1).astype(np.float32)
