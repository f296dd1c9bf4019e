"""What a caller may ask of a backend when it is opened."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BackendOptions:
    """``threads``: CPU threads per run (None: the backend's default); ``providers``: ONNX Runtime execution
    providers to try, in order (None: TensorRT, CUDA, CPU, those that initialise)."""

    threads: int | None = None
    providers: Sequence[str] | None = None
