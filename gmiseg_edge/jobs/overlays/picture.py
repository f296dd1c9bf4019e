"""An overlay picture as written: the slice turned to its view (:mod:`.orientation`), resampled to square mm and at
least :data:`MIN_SIDE` px on its short side (the image by linear/area interpolation, the mask by nearest neighbour,
so the outline drawn after resampling stays one crisp line), tinted (:mod:`.tint`), with a legend and, for a volume's
slice, the patient directions at its edges (:mod:`.legend`)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gmiseg_edge.data.writers import write_png
from gmiseg_edge.jobs.overlays.legend import MAX_ENTRIES, LegendEntry, dice_text, draw_edges, draw_legend
from gmiseg_edge.jobs.overlays.orientation import View, image_view
from gmiseg_edge.jobs.overlays.tint import OUTLINE, TINT, label_overlay, overlay, palette

MIN_SIDE = 384  # px on the picture's short side, at least
MAX_SIDE = 4096  # px on its long side, at most (wins over MIN_SIDE only for slices longer than about 10:1)


def picture_shape(shape: tuple[int, int], spacing: tuple[float, float], min_side: int = MIN_SIDE) -> tuple[int, int]:
    """(rows, columns) of the picture of an image of ``shape`` and pixel size ``spacing`` (row mm, column mm):
    square mm at the finer of the two pixel sizes, enlarged to ``min_side`` px on the short side if smaller."""
    pixel = min(spacing)
    rows, cols = shape[0] * spacing[0] / pixel, shape[1] * spacing[1] / pixel
    grow = max(1.0, min_side / min(rows, cols))
    shrink = min(1.0, MAX_SIDE / (max(rows, cols) * grow))
    return max(1, round(rows * grow * shrink)), max(1, round(cols * grow * shrink))


def resample_image(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``pixels`` at ``shape`` (rows, columns): linear interpolation when enlarging, area averaging when shrinking."""
    if pixels.shape[:2] == tuple(shape):
        return pixels
    enlarging = shape[0] >= pixels.shape[0] and shape[1] >= pixels.shape[1]
    return cv2.resize(pixels, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR if enlarging else cv2.INTER_AREA)


def resample_nearest(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A mask or label map at ``shape`` by nearest neighbour (any dtype; pixel centres mapped to pixel centres)."""
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(int), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(int), labels.shape[1] - 1)
    return labels[rows[:, None], cols[None, :]]


def _prepared(pixels: np.ndarray, mask: np.ndarray, view: View) -> tuple[np.ndarray, np.ndarray]:
    mask = np.asarray(mask)
    if mask.shape != pixels.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {pixels.shape[:2]}")
    pixels, mask = view.orient(pixels), view.orient(mask)
    shape = picture_shape(pixels.shape[:2], view.spacing)
    return resample_image(pixels, shape), resample_nearest(mask, shape)


def _finish(picture: np.ndarray, entries: list[LegendEntry], view: View) -> np.ndarray:
    panel = draw_legend(picture, entries)
    if view.edges is not None:
        draw_edges(picture, view.edges, avoid=panel)
    return picture


def mask_picture(pixels: np.ndarray, mask: np.ndarray, view: View | None = None, name: str | None = None,
                 dice: float | None = None, dice_on: str | None = None) -> np.ndarray:
    """RGB uint8: ``pixels`` (H, W grey or H, W, 3) with the bool ``mask`` tinted red and outlined in yellow, in
    ``view`` (default: as it is), resampled (see the module), and a legend line ``"<name>  Dice <d> (<dice_on>)"``
    (``name`` default ``"mask"``; the Dice part only when ``dice`` is given)."""
    view = view or image_view()
    pixels, mask = _prepared(pixels, np.asarray(mask, dtype=bool), view)  # no copy of a bool mask (a large image)
    entries = [LegendEntry(dice_text(name or "mask", dice, dice_on), (TINT,), OUTLINE)]
    return _finish(overlay(pixels, mask), entries, view)


def label_picture(pixels: np.ndarray, labels: np.ndarray, view: View | None = None, name: str = "object",
                  dice: float | None = None, dice_on: str | None = None) -> np.ndarray:
    """RGB uint8: ``pixels`` with each object of the label map ``labels`` (0 background) in its own colour
    (:func:`~.tint.palette`), in ``view``, resampled; the legend names up to :data:`~.legend.MAX_ENTRIES` objects
    (``"<name> <k>"``) with their colours, more in one line (``"<name>: <n> objects"``), and the Dice of all the
    objects together when ``dice`` is given."""
    view = view or image_view()
    pixels, labels = _prepared(pixels, labels, view)
    colours = palette(int(labels.max()) if labels.size else 0)
    present = [int(k) for k in np.unique(labels) if k != 0]
    swatch = tuple(tuple(int(c) for c in colours[k]) for k in present[:4]) or ((0, 0, 0),)
    if not present:
        entries = [LegendEntry(dice_text(f"{name}: no object", dice, dice_on), swatch, OUTLINE)]
    elif len(present) <= MAX_ENTRIES:
        entries = [LegendEntry(f"{name} {k}", (tuple(int(c) for c in colours[k]),)) for k in present]
        if dice is not None:
            entries.append(LegendEntry(dice_text("all objects", dice, dice_on), swatch))
    else:
        entries = [LegendEntry(dice_text(f"{name}: {len(present)} objects", dice, dice_on), swatch)]
    return _finish(label_overlay(pixels, labels), entries, view)


def write_overlay(path: str | Path, pixels: np.ndarray, mask: np.ndarray, view: View | None = None,
                  name: str | None = None, dice: float | None = None, dice_on: str | None = None) -> Path:
    """Write :func:`mask_picture` as a PNG, atomically."""
    return write_png(path, mask_picture(pixels, mask, view, name, dice, dice_on))


def write_label_overlay(path: str | Path, pixels: np.ndarray, labels: np.ndarray, view: View | None = None,
                        name: str = "object", dice: float | None = None, dice_on: str | None = None) -> Path:
    """Write :func:`label_picture` as a PNG, atomically."""
    return write_png(path, label_picture(pixels, labels, view, name, dice, dice_on))
