"""Files named from inside other files (a detached header's data file, a DICOMDIR's records): they are opened
only when they lie in the naming file's folder or below it, after resolving symlinks, so that no file can make a
reader open an arbitrary local file (``data file: ../../../../etc/passwd``)."""

from __future__ import annotations

from pathlib import Path

from gmiseg_edge.core.errors import DataError


def named_file(naming: Path, value: str | Path, field: str) -> Path:
    """The file that ``naming`` names as ``value`` (its ``field``, for the message), relative to ``naming``'s folder
    (an absolute value replaces it): resolved, in that folder or below it, and existing; else :class:`DataError`."""
    folder = naming.parent.resolve()
    path = (naming.parent / value).resolve()  # the file a reader would open
    if not path.is_relative_to(folder):
        raise DataError(f"{field} {str(value)!r} lies outside the header's folder {folder}: refused (a header may "
                        "only name a file beside it or below it)", naming)
    if not path.is_file():
        raise DataError(f"its data file {path} ({field} {str(value)!r}) is missing", naming)
    return path
