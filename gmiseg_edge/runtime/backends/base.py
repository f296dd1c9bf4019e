"""The one small interface every backend implements; the predictor and the cache only ever see this."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from gmiseg_edge.core.graph_io import DecoderInputs


class TaskDecoder(ABC):
    """One task's decoder graph (DESIGN §11), run beside a backend's encoder; ``task`` names it."""

    def __init__(self, task: str) -> None:
        self.task = task

    @abstractmethod
    def decode(self, inputs: DecoderInputs) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`Backend.decode`, with this task's decoder."""


#: objects per decoder run where the backend sets no limit of its own: an fp32 decoder run on the CPU peaks at
#: 31-35 MiB more per object (measured: 583 MiB peak RSS at K = 16, 2292 MiB at K = 64); 8 keep 1000 boxes on a
#: 512^2 image under 1 GB end to end (930 MiB; 1123 MiB with 16, issue 26), batching's gain is per-run overhead
DEFAULT_MAX_OBJECTS = 8


class Backend(ABC):
    """Runs the encoder and the decoder of one model folder at one precision.

    ``run`` methods must be safe to call from several threads at once on one instance.
    """

    #: the name in the backend table (``ort``, ``trt``, ``torch``)
    name: str = ""
    #: the most prompt points (box corners and padding included) the decoder accepts; None: no limit
    max_points: int | None = None
    #: the most objects (prompt sets, the decoder's K) one ``decode`` call takes; None: no limit
    max_objects: int | None = DEFAULT_MAX_OBJECTS
    #: the most images one ``encode`` call takes (the encoder's batch dimension B); None: no limit
    max_batch: int | None = None

    def __init__(self, encoder_id: str, precision: str, detail: str) -> None:
        self.encoder_id = encoder_id  # identifies what computes embeddings: part of the cache key
        self.precision = precision
        self.detail = detail  # what actually runs, in words (provider, device, ...)

    @abstractmethod
    def encode(self, image: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 preprocessed inputs -> (B, 256, 64, 64) float32 embeddings, B <= ``max_batch``."""

    @abstractmethod
    def decode(self, inputs: DecoderInputs) -> tuple[np.ndarray, np.ndarray]:
        """Decoder inputs of K <= ``max_objects`` objects -> (low-res logits (K, 4, 256, 256), IoU predictions
        (K, 4)), float32."""

    def task_providers(self) -> tuple[str, ...]:
        """ONNX Runtime execution providers to try, best first, for the task decoders run beside this backend's
        encoder (task decoders are fp32 ONNX graphs with no engines, opened by
        :mod:`gmiseg_edge.runtime.tasks`). Default: none, the CPU; a backend on a GPU provider names it."""
        return ()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the backend holds (sessions, GPU memory)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, {self.precision}, {self.detail})"
