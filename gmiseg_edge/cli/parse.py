"""Command-line values to library values: boxes, points, comma-separated lists. Errors name the flag."""

from __future__ import annotations

from collections.abc import Sequence

from gmiseg_edge.core.errors import InputError


def parse_box(text: str | None) -> tuple[float, float, float, float] | None:
    """``--box x0,y0,x1,y1`` -> four floats."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--box {text!r}: expected x0,y0,x1,y1") from None
    if len(values) != 4:
        raise InputError(f"--box {text!r}: expected four numbers x0,y0,x1,y1")
    return values  # type: ignore[return-value]


def parse_points(texts: Sequence[str] | None) -> tuple[tuple[float, float, int], ...]:
    """Each ``--point x,y,label`` (label 1 foreground, 0 background)."""
    points = []
    for text in texts or ():
        parts = text.split(",")
        try:
            if len(parts) != 3:
                raise ValueError
            x, y, label = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise InputError(f"--point {text!r}: expected x,y,label (label 1 or 0)") from None
        points.append((x, y, label))
    return tuple(points)


def csv_list(text: str) -> tuple[str, ...]:
    """``a, b,c`` -> ("a", "b", "c")."""
    return tuple(part.strip() for part in text.split(",") if part.strip())
