"""The legend drawn on an overlay picture: a colour box and a line of text per structure (its name, and its Dice
when known), on a dark panel in the top-left corner; and the patient directions at the picture's edges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
PANEL = (24, 24, 24)  # the legend panel's colour
PANEL_WEIGHT = 0.75  # how opaque the panel is
TEXT = (255, 255, 255)
MAX_ENTRIES = 8  # more objects than this are summarised in one line


@dataclass(frozen=True)
class LegendEntry:
    """One line: ``colours`` (one RGB box, or several side by side for a group of objects), ``outline`` around the
    box (None: none), ``text``."""

    text: str
    colours: tuple[tuple[int, int, int], ...]
    outline: tuple[int, int, int] | None = None


def dice_text(name: str, dice: float | None, dice_on: str | None = None) -> str:
    """``"liver  Dice 0.93 (this slice)"``; the name alone when the Dice is unknown."""
    if dice is None:
        return name
    return f"{name}  Dice {dice:.2f}" + (f" ({dice_on})" if dice_on else "")


def font_scale(shape: tuple[int, ...]) -> float:
    """Text size for a picture of ``shape``: legible at 384 px, growing with the picture."""
    return max(0.5, min(shape[0], shape[1]) / 900)


def draw_legend(picture: np.ndarray, entries: Sequence[LegendEntry]) -> tuple[int, int]:
    """Draw ``entries`` on ``picture`` (H, W, 3 uint8 RGB, in place), one line each on a dark panel in its top-left
    corner (text that would pass the right edge is cut with an ellipsis); the panel's (width, height)."""
    if not entries:
        return 0, 0
    scale = font_scale(picture.shape)
    thickness = 1 if scale < 1.0 else 2
    (_, text_h), baseline = cv2.getTextSize("Dg", FONT, scale, thickness)
    line = text_h + baseline + max(4, text_h // 2)
    box = text_h + baseline
    pad = max(4, text_h // 2)
    room = picture.shape[1] - 2 * pad - box * 2 - pad
    texts = [_fit(e.text, room, scale, thickness) for e in entries]
    width = max(cv2.getTextSize(t, FONT, scale, thickness)[0][0] for t in texts)
    box_w = max(box * len(e.colours) // 2 if len(e.colours) > 1 else box for e in entries)
    x1 = min(picture.shape[1], 2 * pad + box_w + pad + width)
    y1 = min(picture.shape[0], 2 * pad + line * len(entries) - (line - box))
    region = picture[:y1, :x1].astype(np.float32)
    picture[:y1, :x1] = (PANEL_WEIGHT * np.asarray(PANEL, np.float32) + (1 - PANEL_WEIGHT) * region).astype(np.uint8)
    for i, (entry, text) in enumerate(zip(entries, texts, strict=True)):
        top = pad + i * line
        _draw_box(picture, pad, top, box, entry)
        cv2.putText(picture, text, (pad + box_w + pad, top + text_h), FONT, scale, TEXT, thickness, cv2.LINE_AA)
    return x1, y1


def _draw_box(picture: np.ndarray, left: int, top: int, size: int, entry: LegendEntry) -> None:
    stripe = size if len(entry.colours) == 1 else max(2, size // 2)
    for k, colour in enumerate(entry.colours):
        x = left + k * stripe
        cv2.rectangle(picture, (x, top), (x + stripe - 1, top + size - 1), tuple(int(c) for c in colour), -1)
    if entry.outline is not None:
        right = left + stripe * len(entry.colours) - 1
        cv2.rectangle(picture, (left, top), (right, top + size - 1), entry.outline, max(1, size // 8))


def _fit(text: str, room: int, scale: float, thickness: int) -> str:
    if cv2.getTextSize(text, FONT, scale, thickness)[0][0] <= room:
        return text
    while len(text) > 1 and cv2.getTextSize(text + "...", FONT, scale, thickness)[0][0] > room:
        text = text[:-1]
    return text + "..."


def draw_edges(picture: np.ndarray, edges: tuple[str, str, str, str], avoid: tuple[int, int] = (0, 0)) -> None:
    """Write the patient directions ``edges`` (top, bottom, left, right) at the middle of ``picture``'s edges
    (white on a dark outline, in place), below or beside a top-left panel of size ``avoid`` (width, height)."""
    scale = font_scale(picture.shape)
    thickness = 1 if scale < 1.0 else 2
    h, w = picture.shape[:2]
    margin = max(4, int(6 * scale))
    for letter, where in zip(edges, ("top", "bottom", "left", "right"), strict=True):
        (tw, th), _ = cv2.getTextSize(letter, FONT, scale, thickness)
        x = {"left": margin, "right": w - tw - margin}.get(where, (w - tw) // 2)
        y = {"top": th + margin, "bottom": h - margin}.get(where, (h + th) // 2)
        if x < avoid[0] and y - th < avoid[1]:  # under the legend: just below it
            y = avoid[1] + th + margin
        cv2.putText(picture, letter, (x, y), FONT, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(picture, letter, (x, y), FONT, scale, TEXT, thickness, cv2.LINE_AA)
