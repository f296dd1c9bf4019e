"""The tint at the picture's own size: an image with its mask tinted and outlined, or its objects each in a colour of
its own (no resampling, no legend: :mod:`.picture` adds those)."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

TINT = (255, 0, 0)  # red fill
OUTLINE = (255, 255, 0)  # yellow contour
FILL_WEIGHT = 0.45  # how much of the colour goes into a filled pixel


def _rgb(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels.copy()


def overlay(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB uint8: the image in grey (or colour) with the mask tinted red and outlined in yellow."""
    tint = _rgb(pixels).astype(np.float32)
    tint[mask] = (1 - FILL_WEIGHT) * tint[mask] + FILL_WEIGHT * np.array(TINT, np.float32)
    out = tint.astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, OUTLINE, 1)
    return out


def palette(count: int) -> np.ndarray:
    """``count + 1`` RGB uint8 colours: row 0 (background) black, row k the colour of label k. Hues step by the
    golden angle, so neighbouring labels (often neighbouring objects) get clearly different colours."""
    colours = [(0, 0, 0)] + [
        tuple(round(255 * c) for c in colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.9 - 0.25 * (k % 2), 1.0))
        for k in range(count)
    ]
    return np.asarray(colours, np.uint8)


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """bool (H, W): labelled pixels with a 4-neighbour of another label (or the image edge)."""
    padded = np.pad(labels, 1, mode="constant")
    centre = padded[1:-1, 1:-1]
    differs = ((padded[:-2, 1:-1] != centre) | (padded[2:, 1:-1] != centre)
               | (padded[1:-1, :-2] != centre) | (padded[1:-1, 2:] != centre))
    return differs & (labels != 0)


def label_overlay(pixels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """RGB uint8: the image with each label of ``labels`` (0 background) tinted in its own colour
    (:func:`palette`) and outlined in that colour at full strength, so touching objects stay apart."""
    labels = np.asarray(labels)
    if labels.shape != pixels.shape[:2]:
        raise ValueError(f"label map shape {labels.shape} differs from image shape {pixels.shape[:2]}")
    colours = palette(int(labels.max()) if labels.size else 0)
    out = _rgb(pixels).astype(np.float32)
    inside = labels != 0
    out[inside] = (1 - FILL_WEIGHT) * out[inside] + FILL_WEIGHT * colours[labels[inside]]
    edge = label_boundaries(labels)
    out[edge] = colours[labels[edge]]
    return out.astype(np.uint8)
