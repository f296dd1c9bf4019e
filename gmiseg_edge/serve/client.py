"""A Python client of ``gmiseg-edge serve`` over gRPC (tritonclient), for viewers, scripts and the benchmarks.

    from gmiseg_edge.serve.client import SegmentClient
    client = SegmentClient("127.0.0.1:8001")
    key = client.encode(image_uint8)                       # the server keeps the embedding
    mask = client.decode(key, box=[120, 80, 220, 190]).mask  # each click costs only the decoder
    mask = client.segment(image_uint8, points=[[160, 130]], labels=[1]).mask

A client object holds one gRPC channel: use one per thread. Refusals by the server raise :class:`ServerError`
with the server's one-line message (it names the input at fault; status INVALID_ARGUMENT); an unreachable or
dying server raises :class:`ServerUnavailableError`. Needs ``tritonclient[grpc]`` (the ``serve`` or ``client`` extra).
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np

from gmiseg_edge.core.errors import GmisegError, InputError
from gmiseg_edge.serve.protocol import (
    BOX,
    DECODE,
    DECODER,
    ENCODE,
    IMAGE,
    KEY,
    LABELS,
    LOW_RES_LOGITS,
    MASK,
    MASK_INPUT,
    POINTS,
    SCORE,
    SEGMENT,
    SEGMENT_SUPPORT,
    SPACING,
    SUPPORT,
    UNCERTAINTY,
    check_not_empty,
)

_REFUSAL = re.compile(r"ServeRequestError: (.*?)(?:\\n|\n|$)")


class ServerError(GmisegError):
    """The server refused a request (bad input, unknown key): the message is the server's."""

    def __init__(self, message: str, status: str = "") -> None:
        super().__init__(message)
        self.status = status


class ServerUnavailableError(ServerError):
    """No answer: the server is not reachable, not ready, or went away during the request."""


@dataclass(frozen=True)
class ServedPrediction:
    """A mask from the server: bool (H, W), its predicted IoU, low-res logits (a next ``mask_input``) and, from
    ``segment``, the image's embedding key."""

    mask: np.ndarray
    score: float
    low_res_logits: np.ndarray | None
    key: str | None = None
    uncertainty: np.ndarray | None = None


def grpc_target(url: str) -> str:
    """``host:port`` from ``grpc://host:port``, ``host:port`` or ``host`` (port 8001)."""
    target = re.sub(r"^grpc://", "", url.strip()).rstrip("/")
    if not target or "/" in target:
        raise ValueError(f"server URL must be grpc://host:port or host:port, got {url!r}")
    return target if ":" in target else f"{target}:8001"


def as_hwc(image: np.ndarray) -> np.ndarray:
    """An image as the server takes it: uint8 [H, W, C] (a grey (H, W) image gets C = 1)."""
    image = np.asarray(image)
    return np.ascontiguousarray(image[:, :, None] if image.ndim == 2 else image)


class SegmentClient:
    """Calls the ``encode``, ``decode`` and ``segment`` models of one server (module docstring)."""

    def __init__(self, url: str = "127.0.0.1:8001", timeout_s: float = 120.0) -> None:
        try:  # tritonclient: only in the serving or client environment
            import tritonclient.grpc as grpcclient
            import tritonclient.utils as triton_utils
        except ImportError as exc:
            raise GmisegError(f"tritonclient is not installed ({exc}): pip install 'gmiseg-edge[client]'") from None
        self._grpc = grpcclient
        self._exception = triton_utils.InferenceServerException
        self.target = grpc_target(url)
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(self.target)

    # ------------------------------------------------------------------ health

    def ready(self) -> bool:
        """Whether the server and its three models are ready (False when unreachable)."""
        try:
            return bool(self._client.is_server_ready() and all(
                self._client.is_model_ready(name) for name in (ENCODE, DECODE, SEGMENT)))
        except self._exception:
            return False

    # ------------------------------------------------------------------ models

    def encode(self, image: np.ndarray) -> str:
        """The embedding key of ``image`` (uint8 (H, W) or (H, W, 3)); the server keeps the embedding."""
        result = self._infer(ENCODE, {IMAGE: as_hwc(image)[None]})
        return _text(result.as_numpy(KEY).reshape(-1)[0])

    def decode(self, key: str, points=None, labels=None, box=None, mask_input=None,
               decoder: str = "") -> ServedPrediction:
        """The mask of a prompt on an image encoded before; ``points`` (N, 2) as (x, y), ``labels`` (N,) 1/0,
        ``box`` [x0, y0, x1, y1], ``mask_input`` (256, 256) low-res logits; ``decoder``: a task decoder of the
        server's model folder (empty: the base decoder)."""
        inputs: dict[str, np.ndarray] = {KEY: np.asarray([key.encode()], dtype=object)}
        inputs.update(_prompt_arrays(points, labels, box, mask_input, decoder))
        return _prediction(self._infer(DECODE, inputs))

    def segment(self, image: np.ndarray, points=None, labels=None, box=None, mask_input=None,
                decoder: str = "") -> ServedPrediction:
        """Encode (cached by the server) and decode in one call (``decoder`` as for :meth:`decode`)."""
        inputs = {IMAGE: as_hwc(image)}
        inputs.update(_prompt_arrays(points, labels, box, mask_input, decoder))
        return _prediction(self._infer(SEGMENT, inputs), with_key=True)

    def segment_support(self, image: np.ndarray, support: str,
                        spacing: tuple[float, float] | None = None) -> ServedPrediction:
        """Segment ``image`` with the server's support set named ``support`` (``uncertainty``: the supports'
        disagreement). ``spacing``: the image's (row, column) pixel size in mm; given, the server takes its
        examples at their headers' pixel sizes (registration in mm); None: everything at 1 mm per pixel."""
        inputs = {IMAGE: as_hwc(image), SUPPORT: np.asarray([support.encode()], dtype=object)}
        if spacing is not None:
            inputs[SPACING] = np.asarray(spacing, dtype=np.float32).reshape(2)
        result = self._infer(SEGMENT_SUPPORT, inputs)
        return ServedPrediction(mask=result.as_numpy(MASK).astype(bool), score=float(result.as_numpy(SCORE)[0]),
                                low_res_logits=None, uncertainty=result.as_numpy(UNCERTAINTY))

    def infer_raw(self, model: str, inputs: dict[str, np.ndarray]) -> Any:
        """Send ``inputs`` exactly as given (any dtype and shape): for tests of the server's checks."""
        return self._infer(model, inputs)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SegmentClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _infer(self, model: str, inputs: dict[str, np.ndarray]) -> Any:
        from tritonclient.utils import np_to_triton_dtype

        request = []
        for name, value in inputs.items():
            try:  # the model's own message: PyTriton cannot pass an empty tensor on (protocol.check_not_empty)
                check_not_empty(f"input '{name}'", value)
            except InputError as exc:
                raise ServerError(f"{model}: {exc}", "not sent") from None
            tensor = self._grpc.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            tensor.set_data_from_numpy(value)
            request.append(tensor)
        try:
            return self._client.infer(model, request, client_timeout=self.timeout_s)
        except self._exception as exc:
            raise _server_error(model, exc) from None


def metrics_text(url: str = "http://127.0.0.1:8002/metrics", timeout_s: float = 10.0) -> str:
    """Triton's Prometheus metrics (text format)."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read().decode("utf-8")


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _prompt_arrays(points, labels, box, mask_input, decoder: str = "") -> dict[str, np.ndarray]:
    """The prompt as float32 arrays in the server's shapes (what cannot be reshaped is sent as given, and the
    server says what is wrong with it), and the task decoder's name when one is given."""
    arrays: dict[str, np.ndarray] = {DECODER: np.asarray([decoder.encode()], dtype=object)} if decoder else {}
    for name, value in ((POINTS, points), (LABELS, labels), (BOX, box), (MASK_INPUT, mask_input)):
        if value is None:
            continue
        array = np.asarray(value, dtype=np.float32)
        if name == POINTS and array.size % 2 == 0:
            array = array.reshape(-1, 2)
        elif name in (LABELS, BOX):
            array = array.reshape(-1)
        elif name == MASK_INPUT and array.size == 256 * 256:
            array = array.reshape(256, 256)
        arrays[name] = array
    return arrays


def _prediction(result: Any, with_key: bool = False) -> ServedPrediction:
    key = _text(result.as_numpy(KEY).reshape(-1)[0]) if with_key else None
    return ServedPrediction(mask=result.as_numpy(MASK).astype(bool), score=float(result.as_numpy(SCORE)[0]),
                            low_res_logits=result.as_numpy(LOW_RES_LOGITS), key=key)


def _server_error(model: str, exc: Any) -> ServerError:
    status = str(exc.status() or "")
    message = str(exc.message() or exc)
    refusal = _REFUSAL.search(message)  # a server whose refusals still come as PyTriton's text
    if refusal is not None:
        return ServerError(refusal.group(1), status)
    if "INVALID_ARGUMENT" in status:  # the model's one line (or Triton's own check of dtype and shape)
        return ServerError(message.strip(), status)
    if any(s in status for s in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")) or "Socket closed" in message:
        return ServerUnavailableError(f"{model}: server unavailable ({status}: {message})", status)
    return ServerError(f"{model}: {message}", status)
