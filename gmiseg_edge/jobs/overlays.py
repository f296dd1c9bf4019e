"""Overlay pictures: an image with its mask tinted and outlined, for a quick look at a result."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gmiseg_edge.data.writers import write_png

TINT = (255, 0, 0)  # red fill
OUTLINE = (255, 255, 0)  # yellow contour


def overlay(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB uint8: the image in grey (or colour) with the mask tinted red and outlined in yellow."""
    rgb = np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels.copy()
    tint = rgb.astype(np.float32)
    tint[mask] = 0.55 * tint[mask] + 0.45 * np.array(TINT, np.float32)
    out = tint.astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, OUTLINE, 1)
    return out


def write_overlay(path: str | Path, pixels: np.ndarray, mask: np.ndarray) -> Path:
    """Write :func:`overlay` of ``pixels`` and ``mask`` as a PNG, atomically."""
    return write_png(path, overlay(pixels, mask))
