"""Prompts simulated from a ground-truth mask (seeded): random foreground points, a box with a random offset.

Coordinates are in pixels of the image the mask belongs to, ``(x, y)`` = (column, row) indices, as the
predictors take them; :func:`to_input_frame` maps them into the model's S x S input frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gmiseg_edge.runtime.prompts import box_from_mask
from gmiseg_edge.runtime.transforms import scale_boxes, scale_coords

PROMPT_MODES = ("box", "points", "mixed")


@dataclass(frozen=True)
class PromptConfig:
    """How training prompts are drawn.

    ``mode``: ``"box"``, ``"points"`` or ``"mixed"`` (box or points, each with probability ½, per sample).
    Points: between ``min_points`` and ``max_points`` foreground points. Box: the mask's extent, each side
    pushed outwards by an offset drawn uniformly from ``0..box_shift`` pixels, clipped to the image.
    """

    mode: str = "mixed"
    min_points: int = 1
    max_points: int = 3
    box_shift: int = 5

    def __post_init__(self) -> None:
        if self.mode not in PROMPT_MODES:
            raise ValueError(f"prompt mode must be one of {PROMPT_MODES}, got {self.mode!r}")
        if not 1 <= self.min_points <= self.max_points:
            raise ValueError(f"need 1 <= min_points <= max_points, got {self.min_points}, {self.max_points}")
        if self.box_shift < 0:
            raise ValueError(f"box_shift must be >= 0, got {self.box_shift}")


@dataclass(frozen=True, eq=False)
class Prompt:
    """A box [x0, y0, x1, y1] and/or points (N, 2) with labels (N,) (1 foreground, 0 background)."""

    box: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None

    @property
    def kind(self) -> str:
        return "box" if self.points is None else ("points" if self.box is None else "box+points")


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D mask, got shape {mask.shape}")
    if not mask.any():
        raise ValueError("cannot simulate a prompt from an empty mask")
    return mask


def simulate_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct foreground pixels (fewer pixels than ``n``: drawn with repetition), as float32 (n, 2)."""
    rows, cols = np.nonzero(_check_mask(mask))
    picks = rng.choice(rows.size, size=n, replace=rows.size < n)
    return np.stack([cols[picks], rows[picks]], axis=1).astype(np.float32)


def simulate_box(mask: np.ndarray, rng: np.random.Generator, max_offset: int = 5) -> np.ndarray:
    """The mask's extent (inclusive pixel indices) grown by a random 0..max_offset pixels on each side,
    clipped to the image: a float32 [x0, y0, x1, y1] that always contains the extent."""
    mask = _check_mask(mask)
    height, width = mask.shape
    x0, y0, x1, y1 = box_from_mask(mask)
    d = rng.integers(0, max_offset + 1, size=4)
    return np.array(
        [max(x0 - d[0], 0), max(y0 - d[1], 0), min(x1 + d[2], width - 1), min(y1 + d[3], height - 1)],
        dtype=np.float32,
    )


def simulate_prompt(
    mask: np.ndarray, rng: np.random.Generator, config: PromptConfig, mode: str | None = None
) -> Prompt:
    """One prompt for ``mask`` drawn as ``config`` says (``mode`` overrides ``config.mode``)."""
    mode = mode or config.mode
    if mode == "mixed":
        mode = "box" if rng.random() < 0.5 else "points"
    if mode == "box":
        return Prompt(box=simulate_box(mask, rng, config.box_shift))
    if mode != "points":
        raise ValueError(f"prompt mode must be one of {PROMPT_MODES}, got {mode!r}")
    n = int(rng.integers(config.min_points, config.max_points + 1))
    points = simulate_points(mask, n, rng)
    return Prompt(points=points, labels=np.ones(n, dtype=np.int64))


def to_input_frame(prompt: Prompt, original_size: tuple[int, int], input_size: int) -> Prompt:
    """The same prompt in the model's S x S input frame (as the predictors scale it)."""
    box = None if prompt.box is None else scale_boxes(prompt.box, original_size, input_size)
    points = None if prompt.points is None else scale_coords(prompt.points, original_size, input_size)
    return Prompt(box=box, points=points, labels=prompt.labels)
