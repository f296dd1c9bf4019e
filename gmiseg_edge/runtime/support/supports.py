"""The supports (step 1 of :mod:`.segmenter`): each example's pixels, mask, pixel spacing, its image encoded once
through the predictor's embedding cache, its cells on the embedding grid and its grey-level model.

A support's mask is mapped to the g x g grid of the padded S x S model frame (area weights): its *structure*
cells (weight >= 0.5, or the heaviest when none reaches it), its *ring* (valid cells with weight 0 within
``RING_CELLS`` cells of the mask) and its *background* (every valid cell with weight 0). Grey levels
(:class:`IntensityModel`): 32-bin histograms (one count added per bin) of the mask and of its pixel ring; per bin
``log(p_mask / p_ring)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.transforms import ImageGeometry
from gmiseg_edge.data.intensity import Window
from gmiseg_edge.runtime.images import check_image
from gmiseg_edge.runtime.predictor import EncodedImage, Predictor
from gmiseg_edge.runtime.support.selection import image_descriptor
from gmiseg_edge.runtime.support.spacing import DEFAULT_SPACING

RING_CELLS = 4  # embedding cells: the ring around a support's structure
INTENSITY_BINS = 32


@dataclass(frozen=True)
class IntensityModel:
    """A support's grey levels (step 1): log-likelihood ratio of structure vs ring per 8-level bin."""

    ratio: np.ndarray  # (32,) log(p_structure / p_ring), histograms with one count added per bin
    middle: float  # midpoint of the mean ratio over the structure and over the ring
    contrast: float  # their difference (the symmetric Kullback-Leibler divergence of the two histograms)

    @classmethod
    def of(cls, pixels: np.ndarray, mask: np.ndarray, ring_width: float) -> IntensityModel | None:
        """The model of ``mask`` against its ring ``ring_width`` px wide; None when the mask has no ring."""
        grey = gray(pixels)
        size = 2 * max(1, round(ring_width)) + 1
        ring = (cv2.dilate(mask.astype(np.uint8), np.ones((size, size), np.uint8)) > 0) & ~mask
        if not ring.any():
            return None
        edges = np.linspace(0, 256, INTENSITY_BINS + 1)
        inside = np.histogram(grey[mask], edges)[0] + 1.0
        outside = np.histogram(grey[ring], edges)[0] + 1.0
        ratio = np.log(inside / inside.sum()) - np.log(outside / outside.sum())
        model = cls(ratio.astype(np.float32), 0.0, 1.0)
        high, low = model.mean_ratio(grey[mask]), model.mean_ratio(grey[ring])
        return cls(model.ratio, (high + low) / 2, max(high - low, 1e-3))

    def mean_ratio(self, values: np.ndarray) -> float:
        """The mean log-likelihood ratio of grey ``values`` (0..255)."""
        bins = np.clip((values * (INTENSITY_BINS / 256)).astype(int), 0, INTENSITY_BINS - 1)
        return float(self.ratio[bins].mean())

    def likeness(self, gray: np.ndarray, region: np.ndarray) -> float:
        """(mean ratio over ``region`` - middle) / contrast: +0.5 the structure's own, -0.5 its ring's."""
        return (self.mean_ratio(gray[region]) - self.middle) / self.contrast


@dataclass(frozen=True)
class Support:
    """One example: its pixels and mask, encoded image, unit prototypes (256,) and its cells on the grid."""

    name: str
    image: np.ndarray  # uint8 (H, W) or (H, W, 3)
    mask: np.ndarray  # bool (H, W)
    encoded: EncodedImage
    foreground: np.ndarray  # unit mean embedding of the structure cells
    background: np.ndarray  # ... and of the ring
    structure: np.ndarray  # bool (g, g): the structure's cells
    ring: np.ndarray  # bool (g, g): cells around it
    background_cells: np.ndarray  # bool (g, g): every valid cell outside the structure
    intensity: IntensityModel | None = None
    spacing: tuple[float, float] = DEFAULT_SPACING  # (row mm, col mm) of the image's pixels
    kind: str | None = None  # "CT", "not CT" or None (unknown): :mod:`.support.modality`
    descriptor: np.ndarray | None = field(default=None, repr=False)  # whole-image likeness (.support.selection)


def gray(image: np.ndarray) -> np.ndarray:
    """The grey levels of a (H, W) or (H, W, 3) image as float32 (H, W)."""
    return image.mean(axis=2).astype(np.float32) if image.ndim == 3 else image.astype(np.float32)


def grid_weights(mask: np.ndarray, prepared: ImageGeometry, input_size: int, grid: int) -> np.ndarray:
    """A (H, W) map as (grid, grid) area weights over the padded S x S model frame."""
    new_h, new_w = prepared.resized_size
    resized = cv2.resize(mask.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_AREA)
    padded = np.zeros((input_size, input_size), np.float32)
    padded[:new_h, :new_w] = resized
    return cv2.resize(padded, (grid, grid), interpolation=cv2.INTER_AREA)


def valid_cells(prepared: ImageGeometry, input_size: int, grid: int) -> np.ndarray:
    """bool (grid, grid): the cells of the model frame that hold the image (not its padding)."""
    inside = np.ones(prepared.original_size, bool)
    return grid_weights(inside, prepared, input_size, grid) >= 0.5


def unit(vectors: np.ndarray, axis: int) -> np.ndarray:
    """``vectors`` scaled to unit length along ``axis``."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=axis, keepdims=True), 1e-12)


def prototype(embedding: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The unit weighted mean of a (1, 256, g, g) embedding's cells (zeros when the weights sum to 0)."""
    total = float(weights.sum())
    if total <= 0:
        return np.zeros(embedding.shape[1], np.float32)
    return unit(np.einsum("chw,hw->c", embedding[0].astype(np.float64), weights) / total, 0).astype(np.float32)


def check_mask_2d(pixels: np.ndarray, mask: np.ndarray, name: str) -> None:
    """A 2D support's mask: (H, W) like its image, with foreground and with background around it."""
    if mask.ndim != 2:
        raise InputError(f"{name} mask: expected (H, W) or a volume (D, H, W), got shape {mask.shape}")
    if mask.shape != pixels.shape[:2]:
        raise InputError(f"{name} mask: shape {mask.shape} differs from its image's {pixels.shape[:2]}")
    if not mask.any():
        raise InputError(f"{name} mask is empty: a support needs at least one foreground pixel")
    if np.all(mask):
        raise InputError(f"{name} mask covers the whole image: a support needs background around its structure")


def labelled_slices(image_shape: tuple[int, ...], mask: np.ndarray, axis: int, name: str) -> list[int]:
    """A support volume's labelled slices along ``axis`` (a mask unlike its image, or an empty one, is an
    :class:`InputError`)."""
    if image_shape != mask.shape:
        raise InputError(f"{name}: 3D mask of shape {mask.shape} differs from its image's {image_shape}")
    labelled = [i for i in range(mask.shape[axis]) if np.take(mask, i, axis=axis).any()]
    if not labelled:
        raise InputError(f"{name} mask is empty: a support needs at least one foreground voxel")
    return labelled


def make_support(predictor: Predictor, window: Window | None, image: np.ndarray, mask: np.ndarray, name: str,
                 spacing: tuple[float, float] = DEFAULT_SPACING, kind: str | None = None) -> Support:
    """A 2D support: ``image`` encoded through the predictor's cache, ``mask`` mapped to its grid cells."""
    pixels = check_image(image, window, name=f"{name} image")
    encoded = predictor.encode(pixels)
    grid = encoded.embedding.shape[-1]
    weights = grid_weights(mask != 0, encoded.prepared, predictor.input_size, grid)
    valid = valid_cells(encoded.prepared, predictor.input_size, grid)
    structure = weights >= min(0.5, float(weights.max()))
    outside = valid & (weights == 0)
    if not outside.any():
        raise InputError(f"{name} mask covers the whole image: a support needs background around its structure")
    near = cv2.dilate((weights > 0).astype(np.uint8), np.ones((2 * RING_CELLS + 1,) * 2, np.uint8)) > 0
    ring = outside & near if (outside & near).any() else outside
    foreground = prototype(encoded.embedding, weights)
    background = prototype(encoded.embedding, ring.astype(np.float32))
    cell = max(mask.shape) / grid
    return Support(name, pixels, mask != 0, encoded, foreground, background, structure, ring, outside,
                   IntensityModel.of(pixels, mask != 0, RING_CELLS * cell), spacing, kind,
                   image_descriptor(encoded.embedding, valid))
