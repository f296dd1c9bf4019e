"""Command-line values to library values: boxes, points, comma-separated lists. Errors name the flag."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from gmiseg_edge.core.errors import InputError

#: flags whose one value holds several numbers separated by commas
COMMA_FLAGS = {"--box": "x0,y0,x1,y1", "--point": "x,y,label", "--window": "low,high"}


def spaced_value_hint(args: Sequence[str]) -> str | None:
    """When a comma flag's numbers were given with spaces (``--box 44 27 104 81``), the form it takes."""
    def number(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    for i, arg in enumerate(args[:-1]):
        if arg in COMMA_FLAGS and number(args[i + 1]) and number(args[i + 2] if i + 2 < len(args) else ""):
            values = [args[i + 1]]
            for extra in args[i + 2:]:
                if not number(extra):
                    break
                values.append(extra)
            return (f"{arg} takes its numbers as one value separated by commas ({arg} {COMMA_FLAGS[arg]}): "
                    f"{arg} {','.join(values)}")
    return None


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


def parse_boxes(texts: Sequence[str] | None, file: Path | None = None,
                ) -> tuple[tuple[float, float, float, float] | None, tuple[tuple[float, float, float, float], ...]]:
    """Every ``--box x0,y0,x1,y1`` and the boxes of ``--boxes FILE`` -> (one box, or None; several boxes).

    One ``--box`` alone stays one prompt (a binary mask); several, or a file, are one object each (a label map).
    The file holds one box per line, ``x0,y0,x1,y1`` or ``x0 y0 x1 y1`` (blank lines and ``#`` comments
    skipped), or is a JSON list of ``[x0, y0, x1, y1]``."""
    boxes = [parse_box(text) for text in texts or ()]
    if file is None:
        return (boxes[0], ()) if len(boxes) == 1 else (None, tuple(boxes))  # type: ignore[return-value]
    return None, tuple(boxes) + read_boxes_file(file)  # type: ignore[operator]


def read_boxes_file(path: Path) -> tuple[tuple[float, float, float, float], ...]:
    """The boxes of a ``--boxes`` file (see :func:`parse_boxes`); errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"--boxes {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--boxes {path}: cannot read it ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            rows = [tuple(float(v) for v in row) for row in json.loads(text)]
        except (ValueError, TypeError) as exc:
            raise InputError(f"--boxes {path}: expected a JSON list of [x0, y0, x1, y1] ({exc})") from None
        bad = [i for i, row in enumerate(rows) if len(row) != 4]
        if bad:
            raise InputError(f"--boxes {path}: entry {bad[0]} is not four numbers [x0, y0, x1, y1]")
        numbered = list(enumerate(rows, start=1))
    else:
        numbered = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                row = tuple(float(v) for v in line.replace(",", " ").split())
            except ValueError:
                row = ()
            if len(row) != 4:
                raise InputError(f"--boxes {path}, line {number}: expected x0,y0,x1,y1, got {line!r}")
            numbered.append((number, row))
    if not numbered:
        raise InputError(f"--boxes {path}: no boxes in the file")
    return tuple(row for _, row in numbered)  # type: ignore[misc]


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


def parse_named_folder(item: str, flag: str = "--support") -> tuple[str, Path]:
    """``--support NAME=DIR`` -> (NAME, DIR); a ValueError naming ``flag`` otherwise."""
    name, sep, folder = item.partition("=")
    if not sep or not name or not folder:
        raise ValueError(f"{flag} must be NAME=DIR, got {item!r}")
    return name, Path(folder)


def csv_list(text: str) -> tuple[str, ...]:
    """``a, b,c`` -> ("a", "b", "c")."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


#: the support-set segmenter's steps that have named strategies (``--support-option STEP=NAME``), and ``select``
SUPPORT_STEPS = ("locate", "fusion", "choice", "appearance", "select")


def parse_support_options(texts: Sequence[str] | None) -> tuple[tuple[str, str | int], ...]:
    """``--support-option STEP=NAME`` (repeatable) -> ((step, name), ...), each name checked against the
    strategies the runtime registers for that step (``select=N``: keep the N supports most like the query)."""
    from gmiseg_edge.runtime.support.appearance import APPEARANCES
    from gmiseg_edge.runtime.support.choice import CHOICES
    from gmiseg_edge.runtime.support.fusion import FUSIONS
    from gmiseg_edge.runtime.support.locate import LOCATES

    known = {"locate": LOCATES, "fusion": FUSIONS, "choice": CHOICES, "appearance": APPEARANCES}
    options: dict[str, str | int] = {}
    for text in texts or ():
        step, sep, name = text.partition("=")
        step, name = step.strip(), name.strip()
        if not sep or step not in SUPPORT_STEPS:
            raise InputError(f"--support-option takes STEP=NAME with STEP one of {', '.join(SUPPORT_STEPS)}, "
                             f"got {text!r}")
        if step in options:
            raise InputError(f"--support-option {step}= given twice")
        if step == "select":
            if not name.isdigit() or int(name) < 1:
                raise InputError(f"--support-option select=N takes a positive number of supports, got {name!r}")
            options[step] = int(name)
        elif name not in known[step]:
            raise InputError(f"--support-option {step}= must be one of {', '.join(known[step])}, got {name!r}")
        else:
            options[step] = name
    return tuple(options.items())
