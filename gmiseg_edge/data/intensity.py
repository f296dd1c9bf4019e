"""Windows: how raw intensities map to uint8 [0, 255] (CT presets, custom (low, high), percentiles, min-max).

One word for one idea: a :data:`Window` is any such mapping (``"percentile"``, ``"minmax"``, a CT preset
name such as ``"lung"``, or a custom ``(low, high)``); a :data:`WindowRange` is the (low, high) interval a
preset or a custom window clips to.

Rounding rule everywhere: ``floor(255 * (clip(x, low, high) - low) / (high - low))`` computed in float64,
i.e. truncation, so ``high`` maps to 255 and a value just below it to 254.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmiseg_edge.core.errors import DataError

WindowRange = tuple[float, float]  # (low, high): values clipped to it, then scaled to 0..255
Window = str | tuple[float, float]  # "percentile", "minmax", a CT preset name (see WINDOWS), or (low, high)

PERCENTILES: WindowRange = (0.5, 99.5)  # the "percentile" window: clip to these percentiles of the image


def window_from_width_level(width: float, level: float) -> WindowRange:
    """(low, high) of a CT window given by width W and level L: ``(L - W/2, L + W/2)``."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return (level - width / 2, level + width / 2)


#: CT window presets in HU as (low, high).
WINDOWS: dict[str, WindowRange] = {
    "lung": window_from_width_level(1500, -600),  # (-1350, 150)
    "abdomen": window_from_width_level(400, 40),  # (-160, 240)
    "soft_tissue": window_from_width_level(400, 40),
    "mediastinum": window_from_width_level(350, 50),
    "liver": window_from_width_level(150, 30),  # (-45, 105)
    "brain": window_from_width_level(80, 40),  # (0, 80)
    "bone": window_from_width_level(1800, 400),  # (-500, 1300)
}


def window_range(window: str | tuple[float, float]) -> WindowRange:
    """The (low, high) of a CT preset name (see ``WINDOWS``) or of a custom (low, high), checked."""
    if isinstance(window, str):
        try:
            return WINDOWS[window.lower()]
        except KeyError:
            raise ValueError(f"unknown window {window!r}; presets: {', '.join(WINDOWS)}") from None
    low, high = (float(v) for v in window)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"window (low, high) must be finite with low < high, got {(low, high)}")
    return (low, high)


def _check_values(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.size == 0:
        raise ValueError("image is empty (size 0)")
    if np.issubdtype(image.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(image)))
        if bad:
            raise ValueError(f"image has {bad} NaN or infinite value(s)")
    return image


def rescale_to_uint8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to [low, high] and map linearly to uint8 [0, 255] (truncating); low == high gives zeros."""
    image = _check_values(image)
    if high <= low:
        return np.zeros(image.shape, dtype=np.uint8)
    scaled = (np.clip(image.astype(np.float64), low, high) - low) / (high - low) * 255.0
    return np.floor(scaled).astype(np.uint8)


def percentile_to_uint8(image: np.ndarray, low: float = PERCENTILES[0], high: float = PERCENTILES[1]) -> np.ndarray:
    """Clip to the [low, high] percentiles, then min-max scale to uint8 (for MR, microscopy, photos).

    If the two percentiles coincide the full min-max range is used; a constant image gives zeros.
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {(low, high)}")
    image = _check_values(image)
    p_low, p_high = (float(v) for v in np.percentile(image, [low, high]))
    if p_high <= p_low:
        p_low, p_high = float(image.min()), float(image.max())
    return rescale_to_uint8(image, p_low, p_high)


def apply_window(image: np.ndarray, window: Window = "percentile") -> np.ndarray:
    """``image`` mapped to uint8 by ``window``: ``"percentile"`` (0.5-99.5), ``"minmax"``, a CT preset name
    (``"lung"``, ``"abdomen"``, ...) or a custom (low, high) in the image's units (HU for CT)."""
    if isinstance(window, str) and window == "percentile":
        return percentile_to_uint8(image)
    if isinstance(window, str) and window == "minmax":
        return percentile_to_uint8(image, 0.0, 100.0)
    low, high = window_range(window)
    return rescale_to_uint8(image, low, high)


def to_uint8(image: np.ndarray, window: Window = "percentile", path: str | Path | None = None) -> np.ndarray:
    """``image`` as it is when it is uint8, otherwise mapped by :func:`apply_window`; a window that cannot apply
    is a :class:`DataError` naming ``path``."""
    if image.dtype == np.uint8:
        return image
    try:
        return apply_window(image, window)
    except ValueError as exc:
        raise DataError(f"cannot apply the window {window!r} to the intensities: {exc}", path) from None


def parse_window(text: str) -> Window:
    """A command-line window: ``"percentile"``, ``"minmax"``, a CT preset name, or ``"low,high"``."""
    if "," in text:
        try:
            low, high = (float(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"a window is a preset name or 'low,high' (two numbers), got {text!r}") from None
        return (low, high)
    return text

