"""Errors raised on bad input data."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data: the message starts with the file at fault (if there is one), then what is wrong."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class MissingFileError(DataError, FileNotFoundError):
    """A file or folder that should exist does not."""

    def __init__(self, path: str | Path, what: str = "file") -> None:
        super().__init__(f"{what} not found", path)
