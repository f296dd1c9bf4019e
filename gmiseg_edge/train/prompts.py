"""Prompts simulated from a ground-truth mask (seeded): random foreground points, a box with a random offset.

Coordinates are in pixels of the image the mask belongs to, ``(x, y)`` = (column, row) indices, as the
predictors take them; :func:`to_input_frame` maps them into the model's S x S input frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gmiseg_edge.core.prompts import simulate_box, simulate_points
from gmiseg_edge.core.transforms import scale_boxes, scale_coords

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
