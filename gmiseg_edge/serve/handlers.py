"""What the served models do, on a :class:`~gmiseg_edge.runtime.Predictor`, with no Triton in sight.

:class:`ServingModels` takes and returns the tensors of :mod:`gmiseg_edge.serve.protocol` as numpy arrays; the
PyTriton binding (:mod:`gmiseg_edge.serve.app`) only moves them in and out of requests. Every bad input raises
an :class:`~gmiseg_edge.core.errors.InputError` that names the input ('image', 'key', 'points', ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.prediction import Prediction
from gmiseg_edge.core.prompts import make_prompt
from gmiseg_edge.core.transforms import ImageGeometry
from gmiseg_edge.runtime.images import check_image
from gmiseg_edge.runtime.predictor import EncodedImage, Predictor
from gmiseg_edge.serve.protocol import (
    BOX,
    DECODER,
    IMAGE,
    KEY,
    LABELS,
    LOW_RES_LOGITS,
    MASK,
    MASK_INPUT,
    MAX_SIDE,
    POINTS,
    SCORE,
    SUPPORT,
    UNCERTAINTY,
    EmbeddingKey,
    UnknownKeyError,
)

if TYPE_CHECKING:
    from gmiseg_edge.runtime.support.segmenter import SupportSetSegmenter


def check_served_image(image: np.ndarray, name: str = f"input '{IMAGE}'", max_side: int = MAX_SIDE) -> np.ndarray:
    """An image as received, (H, W, C) uint8 with C 1 or 3, checked and returned as (H, W) or (H, W, 3)."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise InputError(f"{name}: expected uint8 [H, W, C] (C = 1 or 3), got shape {list(image.shape)}")
    if image.dtype != np.uint8:
        raise InputError(f"{name}: expected uint8, got {image.dtype}; map intensities to 0..255 first "
                         "with a window (gmiseg_edge.data.to_uint8)")
    if max(image.shape[:2]) > max_side:
        raise InputError(f"{name}: {image.shape[0]}x{image.shape[1]} is larger than the server takes "
                         f"({max_side} pixels a side)")
    return check_image(image, name=name)


def _optional(inputs: Mapping[str, np.ndarray], name: str) -> np.ndarray | None:
    value = inputs.get(name)
    return None if value is None else np.asarray(value)


def prediction_outputs(prediction: Prediction) -> dict[str, np.ndarray]:
    """The outputs of ``decode``/``segment`` for a prediction: mask (uint8 0/1), score, low-res logits."""
    return {
        MASK: prediction.mask.astype(np.uint8),
        SCORE: np.asarray([prediction.score], dtype=np.float32),
        LOW_RES_LOGITS: np.ascontiguousarray(prediction.low_res_logits[prediction.index], dtype=np.float32),
    }


class ServingModels:
    """The ``encode``, ``decode`` and ``segment`` models on one predictor (thread-safe, as the predictor is).

    Embeddings live in the predictor's cache, shared by every client: a viewer's clicks on an encoded image cost
    only the decoder, and a disk cache survives a restart (keys stay valid).
    """

    def __init__(self, predictor: Predictor, max_side: int = MAX_SIDE,
                 support_sets: Mapping[str, SupportSetSegmenter] | None = None) -> None:
        self.predictor = predictor
        self.max_side = max_side
        self.support_sets = dict(support_sets or {})  # name -> its support set (on this predictor)

    def encode(self, images: Sequence[np.ndarray]) -> list[str]:
        """Embedding keys of ``images`` ((H, W, C) uint8 each); the cache misses run as one encoder batch."""
        checked = [check_served_image(image, f"input '{IMAGE}' [{i}]", self.max_side)
                   for i, image in enumerate(images)]
        return [self._key(encoded) for encoded in self.predictor.encode_many(checked)]

    def decode(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The mask of a prompt on an image encoded before (input 'key')."""
        encoded = self.encoded(_single_key(inputs))
        return prediction_outputs(self.predictor.predict(encoded, **_prompt(inputs, encoded.size),
                                                         task=self._task_decoder(inputs)))

    def segment(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encode (cached) and decode in one call; the image's key comes back too."""
        if IMAGE not in inputs:
            raise InputError(f"input '{IMAGE}' is missing")
        pixels = check_served_image(inputs[IMAGE], max_side=self.max_side)
        task = self._task_decoder(inputs)
        prediction = self.predictor.predict(pixels, **_prompt(inputs, (pixels.shape[0], pixels.shape[1])), task=task)
        encoded = self.predictor.encode(pixels)  # a cache hit: the embedding was stored by predict
        return {**prediction_outputs(prediction), KEY: np.asarray([self._key(encoded).encode()], dtype=object)}

    def segment_support(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Segment the image with the support set named by input 'support' (no prompt)."""
        if SUPPORT not in inputs or IMAGE not in inputs:
            raise InputError(f"inputs '{IMAGE}' and '{SUPPORT}' are required")
        names = np.asarray(inputs[SUPPORT]).reshape(-1)
        name = names[0].decode("utf-8", errors="replace") if names.size == 1 and isinstance(names[0], bytes) else None
        if name not in self.support_sets:
            raise InputError(f"input '{SUPPORT}': unknown support set {name!r}; this server has "
                             f"{', '.join(sorted(self.support_sets)) or 'no support sets'}")
        image = np.asarray(inputs[IMAGE])
        pixels = check_served_image(image, max_side=self.max_side)
        result = self.support_sets[name].segment(pixels)
        return {MASK: result.mask.astype(np.uint8), SCORE: np.asarray([result.score], dtype=np.float32),
                UNCERTAINTY: result.uncertainty.astype(np.float32)}

    def encoded(self, key: EmbeddingKey) -> EncodedImage:
        """The cached embedding of ``key``; :class:`UnknownKeyError` when the cache does not hold it."""
        cache = self.predictor.cache

        def unknown() -> np.ndarray:
            raise UnknownKeyError(f"input '{KEY}': embedding {key.cache_key[:12]}... is not in the server's cache "
                                  "(evicted, or encoded by another server): encode the image again")

        if key.cache_key not in cache:
            unknown()
        embedding = cache.get_or_compute(key.cache_key, unknown)
        geometry = ImageGeometry.of(key.height, key.width, self.predictor.input_size)
        return EncodedImage(prepared=geometry, embedding=embedding, key=key.cache_key)

    def task_decoders(self) -> list[str]:
        """The task decoders of the served model folder (the names input 'decoder' takes), sorted."""
        return self.predictor.tasks.names() if self.predictor.tasks is not None else []

    def _task_decoder(self, inputs: Mapping[str, np.ndarray]) -> str:
        """The task decoder named by the optional input 'decoder' (``""``, the base decoder, when absent or
        empty); an unknown name is an InputError listing the folder's task decoders."""
        value = _optional(inputs, DECODER)
        if value is None:
            return ""
        values = value.reshape(-1)
        if values.size != 1 or not isinstance(values[0], bytes | str):
            raise InputError(f"input '{DECODER}': expected one task decoder name (BYTES [1])")
        name = values[0].decode("utf-8", errors="replace") if isinstance(values[0], bytes) else values[0]
        tasks = self.task_decoders()
        if name and name not in tasks:
            raise InputError(f"input '{DECODER}': unknown task decoder {name!r}; this model folder has "
                             f"{', '.join(tasks) or 'none'} (gmiseg-edge adapt adds one)")
        return name

    @staticmethod
    def _key(encoded: EncodedImage) -> str:
        height, width = encoded.size
        return str(EmbeddingKey(encoded.key, height, width))


def _single_key(inputs: Mapping[str, np.ndarray]) -> EmbeddingKey:
    if KEY not in inputs:
        raise InputError(f"input '{KEY}' is missing")
    values = np.asarray(inputs[KEY]).reshape(-1)
    if values.size != 1:
        raise InputError(f"input '{KEY}': expected one key, got {values.size}")
    return EmbeddingKey.parse(values[0])


def _prompt(inputs: Mapping[str, np.ndarray], size: tuple[int, int]) -> dict[str, np.ndarray | None]:
    """The prompt keyword arguments of ``Predictor.predict`` from the request's inputs (checked there)."""
    points, labels, box = _optional(inputs, POINTS), _optional(inputs, LABELS), _optional(inputs, BOX)
    mask_input = _optional(inputs, MASK_INPUT)
    for name, value in ((POINTS, points), (LABELS, labels), (BOX, box), (MASK_INPUT, mask_input)):
        if value is not None and value.dtype != np.float32:
            raise InputError(f"input '{name}': expected FP32, got {value.dtype}")
    try:
        make_prompt(points, labels, box, mask_input, image_size=size)  # checked here to name the inputs given
    except InputError as exc:
        given = ", ".join(f"'{n}'" for n in (POINTS, LABELS, BOX, MASK_INPUT) if n in inputs) or "none"
        raise InputError(f"prompt (inputs given: {given}): {exc}") from None
    return {"points": points, "labels": labels, "box": box, "mask_input": mask_input}
