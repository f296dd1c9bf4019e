"""What the served models take and give (server, client and tests share these names).

``encode``  image UINT8 [H, W, C] (C 1 or 3; batched by Triton: requests of one shape run as one encoder batch)
            -> key BYTES [1]
``decode``  key BYTES [1], points FP32 [N, 2] + labels FP32 [N] and/or box FP32 [4], optional mask_input
            FP32 [256, 256] -> mask UINT8 [H, W], score FP32 [1], low_res_logits FP32 [256, 256]
            optional decoder BYTES [1]: a task decoder of the model folder (``gmiseg-edge adapt``; absent or
            empty: the base decoder)
``segment`` image + the prompt inputs of ``decode`` (``decoder`` too) -> the outputs of ``decode`` and the
            image's key
``segment_support`` (served when support sets are given) image + support BYTES [1] (a support set's name),
            optional spacing FP32 [2]: the image's pixel size in mm (row, column); given, the examples are taken
            at their headers' pixel sizes and the query at this one (registration and size rules in mm); absent,
            examples and query are all taken at 1 mm per pixel (the same pixel size)
            -> mask, score (the supports' weighted predicted IoU, 0 when the structure is absent), uncertainty
            FP32 [H, W]. (Renamed from ``segment_task``, input ``task``: a *task* is a task decoder, DESIGN §11.)

An embedding key is ``<the embedding cache key>-<H>x<W>``: the runtime's cache key (encoder file, preprocessing,
pixels) and, for the reader, the image size. The server never takes a size from a key: it looks the cache key up
and takes the size it stored beside the embedding when it encoded the image (a key whose size differs is
refused), so a server restarted on the same disk cache answers keys it gave out before and nothing else.

Every request is checked against :class:`ServeLimits` (``serve --max-points/--max-pixels/--max-side/
--max-support-pixels``) before anything is allocated for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.serve.stub_errors import empty_input_message

ENCODE, DECODE, SEGMENT, SEGMENT_SUPPORT = "encode", "decode", "segment", "segment_support"
MODELS = (ENCODE, DECODE, SEGMENT)
IMAGE, KEY, SUPPORT, UNCERTAINTY, DECODER = "image", "key", "support", "uncertainty", "decoder"
SPACING = "spacing"
MAX_SPACING_MM = 100.0  # a pixel larger than this (mm) is refused as a unit mistake
POINTS, LABELS, BOX, MASK_INPUT = "points", "labels", "box", "mask_input"
PROMPT_INPUTS = (POINTS, LABELS, BOX, MASK_INPUT)
MASK, SCORE, LOW_RES_LOGITS = "mask", "score", "low_res_logits"
MAX_SIDE = 16384  # larger images are refused by the server
MAX_PIXELS = 4096 * 4096  # pixels of one served image (a 4096² RGB image is 48 MiB; its mask 16 MiB)
MAX_POINTS = 64  # prompt points of one decode/segment request (SAM's clicks: a handful)
# supports x query pixels of one segment_support request: each support keeps ~60-70 bytes of maps a query pixel
# until the supports are combined (measured: 4 supports on a 2048² query, +1046 MiB peak RSS, 27 s on 2 cores), so
# 2^24 is ~1.1 GB a request: one support on a 4096² query, 16 on 1024², 256 on 256²
MAX_SUPPORT_PIXELS = 1 << 24

_KEY = re.compile(r"^([0-9a-f]{64})-([1-9][0-9]{0,5})x([1-9][0-9]{0,5})$")


class UnknownKeyError(InputError):
    """A well-formed embedding key that the server's cache does not hold (evicted, or never encoded here)."""


def check_not_empty(name: str, value: np.ndarray) -> None:
    """Refuse an input with no values (``name``: how the message names it, e.g. ``input 'points'``). The server
    checks it, and so does the client before sending: PyTriton 0.7 cannot pass an empty tensor to a model
    (``memoryview: cannot cast view with zeros in shape or strides``), so the served models' stub refuses it with
    the same message before PyTriton copies it (:mod:`gmiseg_edge.serve.stub_errors`)."""
    if value.size == 0:
        optional = any(f"'{p}'" in name for p in (*PROMPT_INPUTS, DECODER))
        raise InputError(empty_input_message(name, value.shape, optional))


@dataclass(frozen=True)
class ServeLimits:
    """What one request may carry; checked before anything is allocated for it. One box and one object a request
    (the protocol's shapes); ``mask_input`` is 256x256. ``max_support_pixels``: a ``segment_support`` query's
    pixels times the supports of its set (a set of n supports takes queries of up to ``max_support_pixels // n``
    pixels)."""

    max_points: int = MAX_POINTS
    max_pixels: int = MAX_PIXELS
    max_side: int = MAX_SIDE
    max_support_pixels: int = MAX_SUPPORT_PIXELS

    def __post_init__(self) -> None:
        if min(self.max_points, self.max_pixels, self.max_side, self.max_support_pixels) < 1:
            raise ValueError(f"serving limits must be >= 1, got max_points={self.max_points}, "
                             f"max_pixels={self.max_pixels}, max_side={self.max_side}, "
                             f"max_support_pixels={self.max_support_pixels}")


DEFAULT_LIMITS = ServeLimits()


@dataclass(frozen=True)
class EmbeddingKey:
    """A parsed embedding key: the cache key and the image size it states (H, W). The server never uses the stated
    size: :meth:`ServingModels.encoded <gmiseg_edge.serve.handlers.ServingModels.encoded>` takes the stored one."""

    cache_key: str
    height: int
    width: int

    def __str__(self) -> str:
        return f"{self.cache_key}-{self.height}x{self.width}"

    @classmethod
    def parse(cls, value: str | bytes) -> EmbeddingKey:
        """Parse a key as ``encode`` returned it; :class:`InputError` naming the input when malformed."""
        text = value.decode("ascii", errors="replace") if isinstance(value, bytes) else str(value)
        match = _KEY.match(text)
        if match is None:
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise InputError(f"input '{KEY}': {shown!r} is not an embedding key (expected '<64 hex>-<H>x<W>' as "
                             f"returned by the '{ENCODE}' or '{SEGMENT}' model)")
        return cls(match.group(1), int(match.group(2)), int(match.group(3)))
