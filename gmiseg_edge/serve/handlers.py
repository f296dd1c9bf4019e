"""What the served models do, on a :class:`~gmiseg_edge.runtime.Predictor`, with no Triton in sight.

:class:`ServingModels` takes and returns the tensors of :mod:`gmiseg_edge.serve.protocol` as numpy arrays; the
PyTriton binding (:mod:`gmiseg_edge.serve.app`) only moves them in and out of requests. Every bad input raises
an :class:`~gmiseg_edge.core.errors.InputError` that names the input ('image', 'key', 'points', ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.prediction import Prediction
from gmiseg_edge.core.prompts import make_prompt
from gmiseg_edge.core.transforms import ImageGeometry
from gmiseg_edge.runtime.cache import EmbeddingCache
from gmiseg_edge.runtime.images import check_image
from gmiseg_edge.runtime.predictor import EncodedImage, Predictor
from gmiseg_edge.serve.protocol import (
    BOX,
    DECODER,
    DEFAULT_LIMITS,
    IMAGE,
    KEY,
    LABELS,
    LOW_RES_LOGITS,
    MASK,
    MASK_INPUT,
    MAX_SPACING_MM,
    POINTS,
    SCORE,
    SPACING,
    SUPPORT,
    UNCERTAINTY,
    EmbeddingKey,
    ServeLimits,
    UnknownKeyError,
    check_not_empty,
)

if TYPE_CHECKING:
    from gmiseg_edge.runtime.support.segmenter import SupportSetSegmenter


SIZE_ENTRIES = 1 << 16  # image sizes held in memory beside the embeddings (8 bytes each)


@dataclass(frozen=True)
class ServedSupportSet:
    """A support set as served: ``pixels`` answers queries that come without a pixel size (examples and query all
    at 1 mm per pixel), ``physical`` (each example at its header's pixel size) those that state theirs."""

    pixels: SupportSetSegmenter
    physical: SupportSetSegmenter

    @classmethod
    def of(cls, served: ServedSupportSet | SupportSetSegmenter) -> ServedSupportSet:
        """A served set as given, or one segmenter serving both kinds of query."""
        return served if isinstance(served, ServedSupportSet) else cls(served, served)


def query_spacing(inputs: Mapping[str, np.ndarray]) -> tuple[float, float] | None:
    """The optional input 'spacing': the query's (row, column) pixel size in mm, None when absent."""
    if SPACING not in inputs:
        return None
    value = np.asarray(inputs[SPACING]).reshape(-1)
    if value.size != 2 or value.dtype.kind not in "fiu" or not np.all(np.isfinite(value)) or \
            not np.all((value > 0) & (value <= MAX_SPACING_MM)):
        raise InputError(f"input '{SPACING}': the image's pixel size takes two numbers of mm (row, column), each "
                         f"above 0 and at most {MAX_SPACING_MM:g}, got {value.tolist()}")
    return float(value[0]), float(value[1])


def supports_used(segmenter: SupportSetSegmenter) -> int:
    """How many supports segment one query (each keeps maps of the query's size until they are combined)."""
    count = len(segmenter.supports)
    return count if segmenter.select is None else min(count, segmenter.select)


def check_served_image(image: np.ndarray, name: str = f"input '{IMAGE}'",
                       limits: ServeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """An image as received, (H, W, C) uint8 with C 1 or 3, checked against ``limits`` and returned as (H, W) or
    (H, W, 3)."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise InputError(f"{name}: expected uint8 [H, W, C] (C = 1 or 3), got shape {list(image.shape)}")
    if image.dtype != np.uint8:
        raise InputError(f"{name}: expected uint8, got {image.dtype}; map intensities to 0..255 first "
                         "with a window (gmiseg_edge.data.to_uint8)")
    check_not_empty(name, image)
    height, width = image.shape[:2]
    if max(height, width) > limits.max_side or height * width > limits.max_pixels:
        raise InputError(f"{name}: {height}x{width} is larger than this server takes ({limits.max_pixels} pixels, "
                         f"{limits.max_side} a side; serve --max-pixels/--max-side)")
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

    def __init__(self, predictor: Predictor, limits: ServeLimits = DEFAULT_LIMITS,
                 support_sets: Mapping[str, ServedSupportSet | SupportSetSegmenter] | None = None) -> None:
        self.predictor = predictor
        self.limits = limits
        # name -> its support set (on this predictor)
        self.support_sets = {name: ServedSupportSet.of(s) for name, s in (support_sets or {}).items()}
        folder = predictor.cache.folder
        # the size of each encoded image, by cache key, beside the embeddings (on disk too: keys survive a restart)
        self.sizes = EmbeddingCache(max_bytes=8 * SIZE_ENTRIES, folder=None if folder is None else folder / "sizes",
                                    max_disk_bytes=64 << 20, shape=(2,))

    def encode(self, images: Sequence[np.ndarray]) -> list[str]:
        """Embedding keys of ``images`` ((H, W, C) uint8 each); the cache misses run as one encoder batch."""
        checked = [check_served_image(image, f"input '{IMAGE}' [{i}]", self.limits) for i, image in enumerate(images)]
        return [self._key(encoded) for encoded in self.predictor.encode_many(checked)]

    def decode(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The mask of a prompt on an image encoded before (input 'key')."""
        prompt = _prompt_arrays(inputs, self.limits)
        task = self._task_decoder(inputs)
        encoded = self.encoded(_single_key(inputs))
        return prediction_outputs(self.predictor.predict(encoded, **_checked_prompt(prompt, inputs, encoded.size),
                                                         task=task))

    def segment(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encode (cached) and decode in one call; the image's key comes back too."""
        if IMAGE not in inputs:
            raise InputError(f"input '{IMAGE}' is missing")
        prompt = _prompt_arrays(inputs, self.limits)
        pixels = check_served_image(inputs[IMAGE], limits=self.limits)
        task = self._task_decoder(inputs)
        size = (pixels.shape[0], pixels.shape[1])
        checked = _checked_prompt(prompt, inputs, size)
        encoded = self.predictor.encode(pixels)
        prediction = self.predictor.predict(encoded, **checked, task=task)
        return {**prediction_outputs(prediction), KEY: np.asarray([self._key(encoded).encode()], dtype=object)}

    def segment_support(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Segment the image with the support set named by input 'support' (no prompt), in mm when the optional
        input 'spacing' gives the image's pixel size."""
        if SUPPORT not in inputs or IMAGE not in inputs:
            raise InputError(f"inputs '{IMAGE}' and '{SUPPORT}' are required")
        names = np.asarray(inputs[SUPPORT]).reshape(-1)
        name = names[0].decode("utf-8", errors="replace") if names.size == 1 and isinstance(names[0], bytes) else None
        if name not in self.support_sets:
            raise InputError(f"input '{SUPPORT}': unknown support set {name!r}; this server has "
                             f"{', '.join(sorted(self.support_sets)) or 'no support sets'}")
        image = np.asarray(inputs[IMAGE])
        pixels = check_served_image(image, limits=self.limits)
        spacing = query_spacing(inputs)
        served = self.support_sets[name]
        segmenter = served.pixels if spacing is None else served.physical
        count = supports_used(segmenter)
        height, width = pixels.shape[:2]
        limit = self.limits.max_support_pixels
        if count * height * width > limit:
            raise InputError(f"input '{IMAGE}': {height}x{width} with support set {name!r} ({count} support(s)) is "
                             f"{count * height * width} support-pixels; this server takes at most {limit} a request "
                             f"(serve --max-support-pixels): queries of up to {limit // count} pixels for this set")
        result = segmenter.segment(pixels, spacing=spacing)
        return {MASK: result.mask.astype(np.uint8), SCORE: np.asarray([result.score], dtype=np.float32),
                UNCERTAINTY: result.uncertainty.astype(np.float32)}

    def encoded(self, key: EmbeddingKey) -> EncodedImage:
        """The cached embedding of ``key`` at the size stored when it was encoded (the size written in the key is
        never used); :class:`UnknownKeyError` when the cache does not hold it, :class:`InputError` when the key
        states another size."""
        cache = self.predictor.cache

        def unknown() -> np.ndarray:
            raise UnknownKeyError(f"input '{KEY}': embedding {key.cache_key[:12]}... is not in the server's cache "
                                  "(evicted, or encoded by another server): encode the image again")

        if key.cache_key not in cache or key.cache_key not in self.sizes:
            unknown()
        stored = self.sizes.get_or_compute(key.cache_key, unknown)
        height, width = int(stored[0]), int(stored[1])
        if (key.height, key.width) != (height, width):
            raise InputError(f"input '{KEY}': the key states {key.height}x{key.width} but embedding "
                             f"{key.cache_key[:12]}... was encoded from a {height}x{width} image: send the key as "
                             "encode returned it")
        if height * width > self.limits.max_pixels or max(height, width) > self.limits.max_side:
            raise InputError(f"input '{KEY}': embedding {key.cache_key[:12]}... is of a {height}x{width} image, "
                             f"larger than this server takes ({self.limits.max_pixels} pixels, "
                             f"{self.limits.max_side} a side; serve --max-pixels/--max-side)")
        embedding = cache.get_or_compute(key.cache_key, unknown)
        geometry = ImageGeometry.of(height, width, self.predictor.input_size)
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

    def _key(self, encoded: EncodedImage) -> str:
        """The key handed out for ``encoded``; its size is stored beside the embedding for :meth:`encoded`."""
        height, width = encoded.size
        self.sizes.get_or_compute(encoded.key, lambda: np.asarray([height, width], dtype=np.float32))
        return str(EmbeddingKey(encoded.key, height, width))


def _single_key(inputs: Mapping[str, np.ndarray]) -> EmbeddingKey:
    if KEY not in inputs:
        raise InputError(f"input '{KEY}' is missing")
    values = np.asarray(inputs[KEY]).reshape(-1)
    if values.size != 1:
        raise InputError(f"input '{KEY}': expected one key, got {values.size}")
    return EmbeddingKey.parse(values[0])


_SHAPES = {POINTS: "[N, 2]", LABELS: "[N]", BOX: "[4]", MASK_INPUT: "[256, 256]"}


def _prompt_arrays(inputs: Mapping[str, np.ndarray], limits: ServeLimits) -> dict[str, np.ndarray | None]:
    """The prompt inputs of a request, their dtypes, shapes and counts checked against ``limits`` (nothing is
    allocated for the request before this)."""
    prompt = {name: _optional(inputs, name) for name in (POINTS, LABELS, BOX, MASK_INPUT)}
    for name, value in prompt.items():
        if value is None:
            continue
        if value.dtype != np.float32:
            raise InputError(f"input '{name}': expected FP32, got {value.dtype}")
        ok = {POINTS: value.ndim == 2 and value.shape[1] == 2, LABELS: value.ndim == 1,
              BOX: value.shape == (4,), MASK_INPUT: value.shape == (256, 256)}[name]
        if not ok:
            raise InputError(f"input '{name}': expected shape {_SHAPES[name]}, got {list(value.shape)}")
    points, labels = prompt[POINTS], prompt[LABELS]
    for name, value in ((POINTS, points), (LABELS, labels)):
        if value is not None and value.shape[0] > limits.max_points:
            raise InputError(f"input '{name}': {value.shape[0]} points; this server takes at most "
                             f"{limits.max_points} a request (serve --max-points)")
        if value is not None:
            check_not_empty(f"input '{name}'", value)
    return prompt


def _checked_prompt(prompt: dict[str, np.ndarray | None], inputs: Mapping[str, np.ndarray],
                    size: tuple[int, int]) -> dict[str, np.ndarray | None]:
    """The prompt keyword arguments of ``Predictor.predict`` (from :func:`_prompt_arrays`), checked against the
    image ``size``."""
    points, labels, box, mask_input = (prompt[name] for name in (POINTS, LABELS, BOX, MASK_INPUT))
    try:
        make_prompt(points, labels, box, mask_input, image_size=size)  # checked here to name the inputs given
    except InputError as exc:
        given = ", ".join(f"'{n}'" for n in (POINTS, LABELS, BOX, MASK_INPUT) if n in inputs) or "none"
        raise InputError(f"prompt (inputs given: {given}): {exc}") from None
    return {"points": points, "labels": labels, "box": box, "mask_input": mask_input}
