"""What runs the model for the widget: the runtime in this process (:class:`LocalEngine`) or a
``gmiseg-edge serve`` server through the Triton client (:class:`RemoteEngine`, a thin client).

Both take uint8 slices (:mod:`gmiseg_edge.viewer.image`) and give the same two steps: ``encode`` (slow: the
widget runs it in a worker thread) returns a handle of the slice's embedding, ``decode`` (fast: every click)
turns a prompt on an encoded slice into a :class:`SliceMask`. Qt-free.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gmiseg_edge.core.errors import GmisegError, InputError

BACKENDS = ("auto", "ort", "trt")


@dataclass(frozen=True)
class SliceMask:
    """One decoded mask: bool (H, W), its predicted IoU, and its low-res logits (1, 1, 256, 256) for the next
    click's ``mask_input``."""

    mask: np.ndarray
    score: float
    logits: np.ndarray | None


class Engine(Protocol):
    """The model behind the widget."""

    description: str

    def encode(self, pixels: np.ndarray) -> Any: ...

    def decode(self, handle: Any, box=None, points=None, labels=None, mask_input=None,
               task: str = "") -> SliceMask: ...

    def tasks(self) -> list[str]: ...

    def close(self) -> None: ...


class LocalEngine:
    """The runtime's :class:`~gmiseg_edge.runtime.Predictor` on a model folder (its embedding cache: memory, and
    the disk folder ``cache_dir`` when given)."""

    def __init__(self, model_dir: str | Path, backend: str = "auto", threads: int | None = None,
                 cache_dir: str | Path | None = None) -> None:
        from gmiseg_edge.runtime import load

        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.model_dir = Path(model_dir)
        self.predictor = load(self.model_dir, backend=backend, threads=threads, cache=cache_dir)
        note = f" ({self.predictor.backend_note})" if self.predictor.backend_note else ""
        self.description = f"{self.predictor.model_name} on {self.predictor.backend.name}{note}"

    def encode(self, pixels: np.ndarray) -> Any:
        return self.predictor.encode(pixels)

    def decode(self, handle: Any, box=None, points=None, labels=None, mask_input=None, task: str = "") -> SliceMask:
        prediction = self.predictor.predict(handle, points=points, labels=labels, box=box, mask_input=mask_input,
                                            task=task or "")
        return SliceMask(prediction.mask, float(prediction.score), prediction.mask_input)

    def tasks(self) -> list[str]:
        return self.predictor.tasks.names() if self.predictor.tasks is not None else []

    def close(self) -> None:
        self.predictor.close()


class RemoteEngine:
    """A ``gmiseg-edge serve`` server (gRPC): the server encodes and keeps the embedding, each click sends only
    the prompt. One client per thread (a gRPC channel is not shared across threads)."""

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        from gmiseg_edge.serve.client import SegmentClient  # tritonclient: the `client` extra

        self.url = url
        self.timeout_s = timeout_s
        self._factory = SegmentClient
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        if not self._client().ready():
            self.close()
            raise GmisegError(f"server {url}: not reachable or its models are not ready (start it with "
                              "`gmiseg-edge serve --model-dir ...`)")
        self.description = f"server {url}"

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._factory(self.url, timeout_s=self.timeout_s)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def encode(self, pixels: np.ndarray) -> Any:
        return self._client().encode(pixels)

    def decode(self, handle: Any, box=None, points=None, labels=None, mask_input=None, task: str = "") -> SliceMask:
        if mask_input is not None:
            mask_input = np.asarray(mask_input, np.float32).reshape(256, 256)
        served = self._client().decode(handle, points=points, labels=labels, box=box, mask_input=mask_input,
                                       decoder=task)
        logits = None if served.low_res_logits is None else \
            np.asarray(served.low_res_logits, np.float32).reshape(1, 1, 256, 256)
        return SliceMask(served.mask, served.score, logits)

    def tasks(self) -> list[str]:
        return []  # the server's task decoders are named by the user (no listing in the protocol)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
