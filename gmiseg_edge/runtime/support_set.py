"""Segment a query image from a few labelled examples (a support set), with no re-training (DESIGN §7).

The algorithm, exactly (``g`` = 64, the embedding grid):

1. **Support prototypes.** Each support image is encoded through the predictor's embedding cache (so a
   support set is encoded once, and once across processes with a disk cache). Its mask is mapped to the
   g x g grid in the padded S x S frame: resized like the image (area filter) to the resized size (h, w),
   padded bottom-right with zeros to S x S, area-averaged to g x g: weights in [0, 1]. The foreground
   prototype is the weight-weighted mean of the 256-d embedding vectors; the background prototype the mean
   over the *ring* of valid cells (at least half inside the image) with weight 0 within 4 cells of the mask
   (all valid weight-0 cells if the ring is empty). An empty mask is an error.
2. **Score map.** For any embedding, ``score = cos(v, foreground) - cos(v, background)`` per cell (how much
   more it resembles the object than the object's surroundings), smoothed by a 3 x 3 mean. The support's
   ``threshold`` is the midpoint of its own mean score over foreground cells (weight >= 0.5, or its
   best-covered cells for tiny masks) and over its ring cells.
3. **Query prompts** (per support). On the query's valid cells: positive point at the centre of the cell
   of highest score, negative point at the cell of lowest score; box = the extent (cell edges, mapped back to
   image pixels) of the 8-connected region of cells with score >= ``threshold`` that holds the positive cell.
   The structure is *present* for this support when that best score reaches ``threshold``; otherwise the box
   is the positive cell alone.
4. **Decode** the two points and the box (a box is unambiguous: single-mask output). With ``refine=True``
   (default) decode once more with the same prompt and the first low-res logits as ``mask_input``.
5. **Combine.** The low-res logits are averaged over the supports (with ``require_presence=True`` only over
   the supports that found the structure present; none gives an empty mask), then post-processed once to the
   query's size (``transforms.postprocess_logits``, threshold 0). The IoU score is the mean of theirs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.prediction import SINGLE_OUTPUT, Prediction, make_prediction
from gmiseg_edge.core.prompts import LOW_RES, make_prompt
from gmiseg_edge.core.transforms import ImageGeometry
from gmiseg_edge.runtime.images import Normalisation, check_image
from gmiseg_edge.runtime.predictor import EncodedImage, Predictor

EMPTY_LOGIT = -20.0
RING_CELLS = 4


@dataclass(frozen=True)
class Support:
    """One example: its encoded image, unit prototypes (256,) and score threshold."""

    encoded: EncodedImage
    foreground: np.ndarray
    background: np.ndarray
    threshold: float


@dataclass(frozen=True)
class SupportPrompt:
    """The prompt derived from one support on the query, in query pixels."""

    points: np.ndarray  # (2, 2): positive, negative
    labels: np.ndarray  # (2,): 1, 0
    box: np.ndarray  # (4,)
    present: bool
    best_score: float


def grid_weights(mask: np.ndarray, prepared: ImageGeometry, input_size: int, grid: int) -> np.ndarray:
    """A (H, W) mask as (grid, grid) area weights in [0, 1] over the padded S x S model frame."""
    new_h, new_w = prepared.resized_size
    resized = cv2.resize(mask.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_AREA)
    padded = np.zeros((input_size, input_size), np.float32)
    padded[:new_h, :new_w] = resized
    return cv2.resize(padded, (grid, grid), interpolation=cv2.INTER_AREA)


def _unit(vectors: np.ndarray, axis: int) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=axis, keepdims=True), 1e-12)


def _prototype(embedding: np.ndarray, weights: np.ndarray) -> np.ndarray:
    total = float(weights.sum())
    if total <= 0:
        return np.zeros(embedding.shape[1], np.float32)
    return _unit(np.einsum("chw,hw->c", embedding[0].astype(np.float64), weights) / total, 0).astype(np.float32)


def score_map(embedding: np.ndarray, foreground: np.ndarray, background: np.ndarray) -> np.ndarray:
    """cos(v, foreground) - cos(v, background) for each cell of a (1, 256, g, g) embedding, 3 x 3 mean."""
    features = _unit(embedding[0].astype(np.float32), 0)
    score = np.einsum("chw,c->hw", features, foreground - background)
    return cv2.blur(score.astype(np.float32), (3, 3), borderType=cv2.BORDER_REPLICATE)


class SupportSetSegmenter:
    """Add (image, mask) supports, then ``segment`` queries; thread-safe, supports encoded once (cached)."""

    def __init__(self, predictor: Predictor, refine: bool = True, normalise: Normalisation = None) -> None:
        self.predictor = predictor
        self.refine = refine
        self.normalise = normalise
        self._supports: list[Support] = []
        self._lock = threading.Lock()

    @property
    def supports(self) -> list[Support]:
        with self._lock:
            return list(self._supports)

    def _valid(self, prepared: ImageGeometry, grid: int) -> np.ndarray:
        inside = np.ones(prepared.original_size, bool)
        return grid_weights(inside, prepared, self.predictor.input_size, grid) >= 0.5

    def add_support(self, image: np.ndarray, mask: np.ndarray, name: str = "support") -> Support:
        """Encode a support image (cached); its prototypes and threshold from ``mask`` (H, W), steps 1-2."""
        pixels = check_image(image, self.normalise, name=f"{name} image")
        mask = np.asarray(mask)
        if mask.shape != pixels.shape[:2]:
            raise InputError(f"{name} mask: shape {mask.shape} differs from its image's {pixels.shape[:2]}")
        if not mask.any():
            raise InputError(f"{name} mask is empty: a support needs at least one foreground pixel")
        encoded = self.predictor.encode(pixels)
        grid = encoded.embedding.shape[-1]
        weights = grid_weights(mask != 0, encoded.prepared, self.predictor.input_size, grid)
        valid = self._valid(encoded.prepared, grid)
        outside = valid & (weights == 0)
        near = cv2.dilate((weights > 0).astype(np.uint8), np.ones((2 * RING_CELLS + 1,) * 2, np.uint8)) > 0
        ring = outside & near if (outside & near).any() else outside
        foreground = _prototype(encoded.embedding, weights)
        background = _prototype(encoded.embedding, ring.astype(np.float32))
        score = score_map(encoded.embedding, foreground, background)
        inside = weights >= min(0.5, float(weights.max()))
        low = float(score[ring].mean()) if ring.any() else float(score[valid].min())
        support = Support(encoded, foreground, background, (float(score[inside].mean()) + low) / 2)
        with self._lock:
            self._supports.append(support)
        return support

    def prompt_for(self, query: EncodedImage, support: Support) -> SupportPrompt:
        """Points and box on ``query`` from its score map against ``support`` (step 3)."""
        grid = query.embedding.shape[-1]
        score = score_map(query.embedding, support.foreground, support.background)
        valid = self._valid(query.prepared, grid)
        masked = np.where(valid, score, np.nan)
        best = np.unravel_index(int(np.nanargmax(masked)), masked.shape)
        worst = np.unravel_index(int(np.nanargmin(masked)), masked.shape)
        region = (valid & (score >= support.threshold)).astype(np.uint8)
        present = bool(region[best])
        if present:
            _, components = cv2.connectedComponents(region, connectivity=8)
            rows, cols = np.nonzero(components == components[best])
        else:
            rows, cols = np.array([best[0]]), np.array([best[1]])
        sx, sy = self._grid_to_pixels(query, grid)
        height, width = query.size
        box = np.array([cols.min() * sx, rows.min() * sy, (cols.max() + 1) * sx, (rows.max() + 1) * sy])
        box = np.minimum(box, [width, height, width, height]).astype(np.float32)
        centres = np.array([[(best[1] + 0.5) * sx, (best[0] + 0.5) * sy],
                            [(worst[1] + 0.5) * sx, (worst[0] + 0.5) * sy]])
        centres = np.minimum(centres, [width - 1, height - 1]).astype(np.float32)
        return SupportPrompt(centres, np.array([1, 0], np.float32), box, present, float(score[best]))

    def _grid_to_pixels(self, query: EncodedImage, grid: int) -> tuple[float, float]:
        """Original pixels per grid cell along x and y."""
        new_h, new_w = query.prepared.resized_size
        height, width = query.size
        cell = self.predictor.input_size / grid
        return cell * width / new_w, cell * height / new_h

    def segment(self, query_image: np.ndarray | EncodedImage, require_presence: bool = False) -> Prediction:
        """Segment the query with every support (the module's algorithm); logits averaged over supports."""
        supports = self.supports
        if not supports:
            raise InputError("no supports: call add_support(image, mask) first")
        query = self.predictor.encode(query_image, self.normalise)
        lows, ious = [], []
        for support in supports:
            derived = self.prompt_for(query, support)
            if require_presence and not derived.present:
                continue
            prompt = make_prompt(derived.points, derived.labels, derived.box, image_size=query.size)
            low_res, iou = self.predictor.decode(query, prompt)
            if self.refine:
                refined = make_prompt(derived.points, derived.labels, derived.box, low_res[0], image_size=query.size)
                low_res, iou = self.predictor.decode(query, refined)
            lows.append(low_res[0])
            ious.append(iou[0])
        if not lows:
            empty = np.full((1, LOW_RES, LOW_RES), EMPTY_LOGIT, np.float32)
            return make_prediction(query.prepared, empty, np.zeros(1, np.float32), SINGLE_OUTPUT,
                                   self.predictor.input_size)
        mean_low = np.mean(lows, axis=0, dtype=np.float32)[None]
        mean_iou = np.asarray([np.mean(ious)], np.float32)
        return make_prediction(query.prepared, mean_low, mean_iou, SINGLE_OUTPUT, self.predictor.input_size)
