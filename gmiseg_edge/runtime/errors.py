"""Errors of the runtime. Each message names the file, input or coordinate at fault."""

from __future__ import annotations


class InputError(ValueError):
    """A bad image, mask or prompt given to a predictor (wrong shape, dtype, NaN, outside the image, ...)."""


class BackendError(RuntimeError):
    """A backend that cannot run here or refuses a model folder (missing runtime, engine for another GPU, ...)."""
