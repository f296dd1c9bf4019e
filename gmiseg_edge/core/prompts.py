"""Prompt checks and their conversion to decoder inputs (SAM's conventions, DESIGN §5).

Coordinates are (x, y) = (column, row) in pixels of the original image. A point must lie in
``0 <= x < W, 0 <= y < H``; a box ``[x0, y0, x1, y1]`` in ``0 <= x <= W, 0 <= y <= H`` with ``x0 <= x1`` and
``y0 <= y1``. Point labels are 1 (foreground) or 0 (background). Decoder order: points, then the box corners
(labels 2, 3); without a box a padding point (0, 0) with label -1 is appended, as segment-anything does.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.graph_io import LOW_RES, DecoderInputs
from gmiseg_edge.core.transforms import scale_boxes, scale_coords

PAD_LABEL = -1.0
BOX_LABELS = (2.0, 3.0)


def box_from_mask(mask: np.ndarray) -> np.ndarray:
    """The tight box [x0, y0, x1, y1] (pixel indices, inclusive) around a non-empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("cannot make a box from an empty mask")
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)


def boxes_from_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each non-zero label's tight box: label values (K,) ascending and boxes float32 (K, 4) [x0, y0, x1, y1]
    (inclusive pixel indices), one per instance of an instance map (or per component of :func:`instance_labels`)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a 2D label map, got shape {labels.shape}")
    rows, cols = np.nonzero(labels)
    values = labels[rows, cols]
    ids, index = np.unique(values, return_inverse=True)
    boxes = np.empty((len(ids), 4), np.float32)
    for axis, coords in ((0, cols), (1, rows)):
        low = np.full(len(ids), np.iinfo(np.int64).max)
        high = np.full(len(ids), -1)
        np.minimum.at(low, index, coords)
        np.maximum.at(high, index, coords)
        boxes[:, axis], boxes[:, axis + 2] = low, high
    return ids, boxes


def instance_labels(mask: np.ndarray) -> np.ndarray:
    """The connected components (8-connected) of a binary mask as labels 1..K (int32, 0 background)."""
    _, labels = cv2.connectedComponents(np.asarray(mask, bool).astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    return labels


def _check_sim_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D mask, got shape {mask.shape}")
    if not mask.any():
        raise ValueError("cannot simulate a prompt from an empty mask")
    return mask


def simulate_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct foreground pixels (fewer pixels than ``n``: drawn with repetition), as float32 (n, 2)."""
    rows, cols = np.nonzero(_check_sim_mask(mask))
    picks = rng.choice(rows.size, size=n, replace=rows.size < n)
    return np.stack([cols[picks], rows[picks]], axis=1).astype(np.float32)


def simulate_box(mask: np.ndarray, rng: np.random.Generator, max_offset: int = 5) -> np.ndarray:
    """The mask's extent (inclusive pixel indices) grown by a random 0..max_offset pixels on each side,
    clipped to the image: a float32 [x0, y0, x1, y1] that always contains the extent."""
    mask = _check_sim_mask(mask)
    height, width = mask.shape
    x0, y0, x1, y1 = box_from_mask(mask)
    d = rng.integers(0, max_offset + 1, size=4)
    return np.array(
        [max(x0 - d[0], 0), max(y0 - d[1], 0), min(x1 + d[2], width - 1), min(y1 + d[3], height - 1)],
        dtype=np.float32,
    )


@dataclass(frozen=True)
class Prompt:
    """A checked prompt in original-image pixels."""

    points: np.ndarray | None  # float32 (N, 2)
    labels: np.ndarray | None  # float32 (N,)
    box: np.ndarray | None  # float32 (4,)
    mask_input: np.ndarray | None  # float32 (1, 1, 256, 256) low-res logits

    @property
    def n_points(self) -> int:
        return 0 if self.points is None else len(self.points)

    @property
    def n_decoder_points(self) -> int:
        """Points the decoder receives: the points, plus two box corners or one padding point."""
        return self.n_points + (2 if self.box is not None else 1)

    @property
    def ambiguous(self) -> bool:
        """A single point and nothing else: it could mean a part, an object or a group (SAM's case for
        multimask output). A box, several points or a previous mask make the prompt unambiguous."""
        return self.n_points == 1 and self.box is None and self.mask_input is None

    def decoder_points(self, original_size: tuple[int, int], input_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``point_coords`` (1, N, 2) in the S x S frame and ``point_labels`` (1, N), float32, for an image of
        ``original_size`` (H, W): the points, then the box corners or a padding point (module docstring)."""
        coords, labels = [], []
        if self.points is not None and self.labels is not None:
            coords.append(scale_coords(self.points, original_size, input_size))
            labels.append(self.labels)
        if self.box is not None:
            coords.append(scale_boxes(self.box, original_size, input_size).reshape(2, 2))
            labels.append(np.asarray(BOX_LABELS, np.float32))
        else:
            coords.append(np.zeros((1, 2), np.float32))
            labels.append(np.asarray([PAD_LABEL], np.float32))
        return np.concatenate(coords).astype(np.float32)[None], np.concatenate(labels).astype(np.float32)[None]

    def decoder_inputs(self, embedding: np.ndarray, original_size: tuple[int, int], input_size: int) -> DecoderInputs:
        """The decoder's inputs for this prompt on an image of ``original_size`` (H, W)."""
        coords, labels = self.decoder_points(original_size, input_size)
        has_mask = self.mask_input is not None
        return DecoderInputs(
            image_embeddings=embedding,
            point_coords=coords,
            point_labels=labels,
            mask_input=self.mask_input if has_mask else np.zeros((1, 1, LOW_RES, LOW_RES), np.float32),
            has_mask_input=np.asarray([1.0 if has_mask else 0.0], np.float32),
        )


def _finite(array: np.ndarray, what: str) -> None:
    if not np.isfinite(array).all():
        raise InputError(f"{what} has NaN or infinite values: {array.tolist()}")


def _check_points(points, labels, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    height, width = size
    try:
        pts = np.asarray(points, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"points must be numbers (N, 2) as (x, y), got {points!r}") from exc
    if pts.ndim == 1 and pts.shape == (2,):
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise InputError(f"points must have shape (N, 2) as (x, y) with N >= 1, got shape {pts.shape}")
    _finite(pts, "points")
    if labels is None:
        raise InputError(f"{len(pts)} point(s) given without labels: give one label each (1 foreground, 0 background)")
    lab = np.asarray(labels, dtype=np.float32).reshape(-1)
    if len(lab) != len(pts):
        raise InputError(f"{len(pts)} point(s) but {len(lab)} label(s): give one label per point")
    bad = [float(v) for v in lab if v not in (0.0, 1.0)]
    if bad:
        raise InputError(f"point labels must be 1 (foreground) or 0 (background), got {bad}")
    for i, (x, y) in enumerate(pts):
        if not 0 <= x < width:
            raise InputError(f"point {i} (x={x:g}, y={y:g}): x={x:g} is outside the image (0 <= x < {width})")
        if not 0 <= y < height:
            raise InputError(f"point {i} (x={x:g}, y={y:g}): y={y:g} is outside the image (0 <= y < {height})")
    return pts, lab


def _check_box(box, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    try:
        b = np.asarray(box, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InputError(f"box must be four numbers [x0, y0, x1, y1], got {box!r}") from exc
    if b.shape != (4,):
        raise InputError(f"box must be four numbers [x0, y0, x1, y1], got {b.size}")
    _finite(b, "box")
    for name, value, limit in zip(("x0", "y0", "x1", "y1"), b, (width, height, width, height), strict=True):
        if not 0 <= value <= limit:
            axis = name[0]
            raise InputError(f"box {b.tolist()}: {name}={value:g} is outside the image (0 <= {axis} <= {limit})")
    if b[2] < b[0]:
        raise InputError(f"box {b.tolist()}: x1={b[2]:g} < x0={b[0]:g}; give [x0, y0, x1, y1] with x0 <= x1")
    if b[3] < b[1]:
        raise InputError(f"box {b.tolist()}: y1={b[3]:g} < y0={b[1]:g}; give [x0, y0, x1, y1] with y0 <= y1")
    return b


def _check_mask_input(mask_input) -> np.ndarray:
    m = np.asarray(mask_input)
    if m.dtype == bool or not np.issubdtype(m.dtype, np.floating):
        raise InputError(f"mask_input must be float low-res logits (e.g. a Prediction's low_res_logits), "
                         f"got dtype {m.dtype}")
    if m.shape[-2:] != (LOW_RES, LOW_RES) or m.size != LOW_RES * LOW_RES:
        raise InputError(f"mask_input must be ({LOW_RES}, {LOW_RES}) low-res logits, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise InputError("mask_input has NaN or infinite values")
    return m.reshape(1, 1, LOW_RES, LOW_RES).astype(np.float32)


def make_prompt(points=None, labels=None, box=None, mask_input=None, *, image_size: tuple[int, int]) -> Prompt:
    """Check a prompt against an image of ``image_size`` (H, W); raises :class:`InputError` naming the fault."""
    if points is None and box is None:
        if labels is not None:
            raise InputError("labels given without points")
        raise InputError("empty prompt: give points (with labels) and/or a box"
                         + (" (mask_input alone is not a prompt)" if mask_input is not None else ""))
    pts, lab = _check_points(points, labels, image_size) if points is not None else (None, None)
    if points is None and labels is not None:
        raise InputError("labels given without points")
    return Prompt(
        points=pts,
        labels=lab,
        box=_check_box(box, image_size) if box is not None else None,
        mask_input=_check_mask_input(mask_input) if mask_input is not None else None,
    )
