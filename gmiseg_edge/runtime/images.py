"""Checks on the images given to a predictor, and an optional intensity window to uint8.

Models take uint8 intensities. CT (HU), 16-bit MR/microscopy and float images are refused unless a
``window`` is given, which maps them with :func:`gmiseg_edge.data.intensity.apply_window`: ``"percentile"``
(0.5-99.5 %), ``"minmax"``, a CT window preset (``"abdomen"``, ``"lung"``, ...) or a ``(low, high)`` range.
uint8 images are used as they are, whatever ``window`` says.
"""

from __future__ import annotations

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.data.intensity import Window, apply_window

_HOW = (
    "pass window='percentile' (or 'minmax', a CT window such as 'abdomen' or 'lung', or (low, high)), "
    "or map it to uint8 yourself with gmiseg_edge.data.apply_window"
)


def check_image(image: np.ndarray, window: Window | None = None, name: str = "image") -> np.ndarray:
    """Return ``image`` as uint8 (H, W) or (H, W, 3) after checking shape, channels, values and dtype; a
    non-uint8 image is mapped with ``window`` (None: refused)."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3):
        raise InputError(f"{name}: expected a 2D image (H, W) or (H, W, 3), got {image.ndim} dimensions "
                         f"{image.shape}; segment volumes slice by slice")
    if image.ndim == 3 and image.shape[2] != 3:
        hint = " (RGBA: drop the alpha channel, image[..., :3])" if image.shape[2] == 4 else ""
        raise InputError(f"{name}: expected 1 or 3 channels, got {image.shape[2]} in shape {image.shape}{hint}")
    if min(image.shape[:2]) < 1:
        raise InputError(f"{name}: empty image of shape {image.shape}")
    if image.dtype == bool or not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise InputError(f"{name}: expected uint8 intensities, got dtype {image.dtype}")
    if np.issubdtype(image.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(image)))
        if bad:
            raise InputError(f"{name}: {bad} NaN or infinite value(s); replace them before segmenting")
    if image.dtype == np.uint8:
        return image
    if window is None:
        raise InputError(f"{name}: dtype {image.dtype} (values {image.min()}..{image.max()}) is not uint8; "
                         f"a silent cast would give a wrong mask: {_HOW}")
    try:
        return apply_window(image, window)
    except ValueError as exc:
        raise InputError(f"{name}: cannot apply the window {window!r} ({exc})") from exc
