"""Intensity normalisation to uint8 [0, 255]: CT windows (presets or custom) and percentile clipping.

Rounding rule everywhere: ``floor(255 * (clip(x, low, high) - low) / (high - low))`` computed in float64,
i.e. truncation, so ``high`` maps to 255 and a value just below it to 254.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmiseg_edge.core.errors import DataError

Window = tuple[float, float]


def window_from_width_level(width: float, level: float) -> Window:
    """(low, high) of a CT window given by width W and level L: ``(L - W/2, L + W/2)``."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return (level - width / 2, level + width / 2)


#: CT window presets in HU as (low, high).
WINDOWS: dict[str, Window] = {
    "lung": window_from_width_level(1500, -600),  # (-1350, 150)
    "abdomen": window_from_width_level(400, 40),  # (-160, 240)
    "soft_tissue": window_from_width_level(400, 40),
    "mediastinum": window_from_width_level(350, 50),
    "liver": window_from_width_level(150, 30),  # (-45, 105)
    "brain": window_from_width_level(80, 40),  # (0, 80)
    "bone": window_from_width_level(1800, 400),  # (-500, 1300)
}


def get_window(window: str | tuple[float, float]) -> Window:
    """A preset by name (see ``WINDOWS``) or a custom (low, high), checked."""
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


def apply_window(image: np.ndarray, window: str | tuple[float, float]) -> np.ndarray:
    """Apply a CT window (preset name or (low, high) in HU) and scale to uint8."""
    low, high = get_window(window)
    return rescale_to_uint8(image, low, high)


def percentile_normalise(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
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


def normalise(image: np.ndarray, method: str | tuple[float, float] = "percentile") -> np.ndarray:
    """Normalise to uint8 with ``method``: ``"percentile"`` (0.5-99.5), ``"minmax"``, a window preset
    name (``"lung"``, ``"abdomen"``, ...) or a custom window (low, high)."""
    if isinstance(method, str) and method == "percentile":
        return percentile_normalise(image)
    if isinstance(method, str) and method == "minmax":
        return percentile_normalise(image, 0.0, 100.0)
    return apply_window(image, method)


Normalisation = str | tuple[float, float]  # "percentile", "minmax", a window preset name, or (low, high)


def to_uint8(image: np.ndarray, method: Normalisation = "percentile", path: str | Path | None = None) -> np.ndarray:
    r"""``image`` as it is when it is uint8, otherwise :func:`normalise`\ d with ``method``; a method that cannot
    apply is a :class:`DataError` naming ``path``."""
    if image.dtype == np.uint8:
        return image
    try:
        return normalise(image, method)
    except ValueError as exc:
        raise DataError(f"cannot normalise intensities with {method!r}: {exc}", path) from None


def parse_normalisation(text: str) -> str | tuple[float, float]:
    """A command-line normalisation: ``"percentile"``, ``"minmax"``, a window preset name, or ``"low,high"``."""
    if "," in text:
        try:
            low, high = (float(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"normalisation must be a preset or 'low,high' (two numbers), got {text!r}") from None
        return (low, high)
    return text
