"""The project's errors: one base, so callers (the CLI) catch them all without a list of classes.

Every message names the file, input or coordinate at fault and, where there is one, what to do.
"""

from __future__ import annotations

from pathlib import Path


class GmisegError(Exception):
    """Base of every error whose message is the whole story for a user (no traceback needed)."""


class InputError(GmisegError, ValueError):
    """A bad image, mask or prompt given to a predictor (wrong shape, dtype, NaN, outside the image, ...)."""


class BackendError(GmisegError, RuntimeError):
    """A backend that cannot run here or refuses a model folder (missing runtime, engine for another GPU, ...)."""


class DataError(GmisegError, ValueError):
    """Bad input data: the message starts with the file at fault (if there is one), then what is wrong."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class MissingFileError(DataError, FileNotFoundError):
    """A file or folder that should exist does not."""

    def __init__(self, path: str | Path, what: str = "file") -> None:
        super().__init__(f"{what} not found", path)


class ManifestError(GmisegError, ValueError):
    """A model folder whose manifest is missing, malformed, or does not match its files."""


class WeightsError(GmisegError, RuntimeError):
    """Weights missing, corrupted, or not obtainable."""


class ExportError(GmisegError, RuntimeError):
    """An export that cannot run or whose graphs fail validation (nothing complete-looking is left behind)."""


class BuildError(GmisegError, RuntimeError):
    """TensorRT engines that cannot be built here (no TensorRT, no GPU), with what to do instead."""


class AdapterError(GmisegError, ValueError):
    """An adapter file or configuration that is malformed or does not fit the model."""


class CheckpointError(GmisegError, ValueError):
    """A training checkpoint that cannot be resumed (another run's, corrupted, ...)."""
