"""Interactive predictor: encode an image once (cached), decode any number of prompts, masks at full size.

Which of the decoder's outputs is returned follows SAM's rule (:mod:`gmiseg_edge.core.prediction`);
``multimask=True``/``False`` overrides it.

The predictor keeps no per-image state (the cache holds embeddings), so one instance serves many threads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.prediction import Prediction, make_prediction, output_choice
from gmiseg_edge.core.prompts import Prompt, make_prompt
from gmiseg_edge.core.transforms import ImageGeometry, PreprocessConfig, preprocess
from gmiseg_edge.runtime.backends.base import Backend, TaskDecoder
from gmiseg_edge.runtime.cache import CacheStats, EmbeddingCache, image_key
from gmiseg_edge.runtime.images import Normalisation, check_image
from gmiseg_edge.runtime.propagate import propagate
from gmiseg_edge.runtime.tasks import TaskDecoders


@dataclass(frozen=True)
class EncodedImage:
    """An image's geometry and embedding; pass it instead of the image to skip hashing it again."""

    prepared: ImageGeometry
    embedding: np.ndarray  # float32 (1, 256, 64, 64), read-only
    key: str  # the cache key

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the original image."""
        return self.prepared.original_size


def preprocessing_id(config: PreprocessConfig) -> str:
    """What determines the model input made from given pixels: the settings and the resizing libraries."""
    import cv2
    import PIL

    return json.dumps({"config": config.to_dict(), "pillow": PIL.__version__, "opencv": cv2.__version__},
                      sort_keys=True)


class Predictor:
    """Segment images with prompts on any backend; embeddings go through an :class:`EmbeddingCache`."""

    def __init__(self, backend: Backend, preprocess_config: PreprocessConfig, cache: EmbeddingCache,
                 model_name: str = "", backend_note: str = "", tasks: TaskDecoders | None = None,
                 task: str | None = None) -> None:
        self.backend = backend
        self.tasks = tasks  # the folder's task decoders (DESIGN §11); None: only the base decoder
        self.task = task  # the task decoded when a call names none (None: the base decoder)
        self.preprocess_config = preprocess_config
        self.cache = cache
        self.model_name = model_name
        self.backend_note = backend_note  # why this backend was chosen (auto's fallbacks), "" if asked for
        self._preprocessing = preprocessing_id(preprocess_config)

    @property
    def input_size(self) -> int:
        return self.preprocess_config.input_size

    @property
    def stats(self) -> CacheStats:
        """The cache's counters (hits, misses, encoder runs)."""
        return self.cache.stats

    def encode(self, image: np.ndarray | EncodedImage, normalise: Normalisation = None) -> EncodedImage:
        """Check, preprocess and encode ``image`` (cached); see :func:`~gmiseg_edge.runtime.images.check_image`
        for ``normalise``."""
        if isinstance(image, EncodedImage):
            return image
        return self._encode_pixels(check_image(image, normalise))

    def _encode_pixels(self, pixels: np.ndarray) -> EncodedImage:
        key = image_key(pixels, self._preprocessing, self.backend.encoder_id)
        geometry = ImageGeometry.of(pixels.shape[0], pixels.shape[1], self.input_size)
        embedding = self.cache.get_or_compute(
            key, lambda: self.backend.encode(preprocess(pixels, self.preprocess_config).tensor))
        return EncodedImage(prepared=geometry, embedding=embedding, key=key)

    def encode_many(self, images: Sequence[np.ndarray | EncodedImage], normalise: Normalisation = None,
                    ) -> list[EncodedImage]:
        """:meth:`encode` for several images, the cache misses in batched encoder runs (at most the backend's
        ``max_batch`` images a run). Each image still goes through the cache on its own key, so a batch costs
        what its misses cost, and the embeddings equal single-image encodes."""
        checked = [image if isinstance(image, EncodedImage) else check_image(image, normalise, name=f"image {i}")
                   for i, image in enumerate(images)]
        keys = [None if isinstance(p, EncodedImage) else image_key(p, self._preprocessing, self.backend.encoder_id)
                for p in checked]
        missing: dict[str, np.ndarray] = {}
        for key, pixels in zip(keys, checked, strict=True):
            if key is not None and key not in missing and key not in self.cache:
                missing[key] = pixels  # type: ignore[assignment]
        computed: dict[str, np.ndarray] = {}
        order = list(missing)
        step = self.backend.max_batch or max(1, len(order))
        for i in range(0, len(order), step):
            chunk = order[i:i + step]
            tensor = np.concatenate([preprocess(missing[k], self.preprocess_config).tensor for k in chunk])
            embeddings = self.backend.encode(tensor)
            computed.update((k, embeddings[j:j + 1]) for j, k in enumerate(chunk))
        results = []
        for key, pixels in zip(keys, checked, strict=True):
            if isinstance(pixels, EncodedImage):
                results.append(pixels)
                continue
            assert key is not None
            geometry = ImageGeometry.of(pixels.shape[0], pixels.shape[1], self.input_size)
            embedding = self.cache.get_or_compute(
                key, lambda k=key, p=pixels: computed[k] if k in computed else
                self.backend.encode(preprocess(p, self.preprocess_config).tensor))  # evicted meanwhile: encode again
            computed.pop(key, None)
            results.append(EncodedImage(prepared=geometry, embedding=embedding, key=key))
        return results

    def decode(self, encoded: EncodedImage, prompt: Prompt, task: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All four decoder outputs for a checked prompt: low-res logits (4, 256, 256) and IoU (4,).

        ``task``: decode with that task's decoder (None: the predictor's ``task``; ``""``: the base decoder)."""
        task = self.task if task is None else task
        limit = None if task else self.backend.max_points
        if limit is not None and prompt.n_decoder_points > limit:
            raise InputError(f"{prompt.n_points} points: the {self.backend.name} decoder takes at most {limit} "
                             "prompt points (box corners and padding included)")
        inputs = prompt.decoder_inputs(encoded.embedding, encoded.size, self.input_size)
        low_res, iou = self.task_decoder(task).decode(inputs) if task else self.backend.decode(inputs)
        return low_res[0], iou[0]

    def task_decoder(self, task: str) -> TaskDecoder:
        """The decoder of ``task`` (opened on first use); an error names the tasks the folder holds."""
        if self.tasks is None:
            raise InputError(f"task {task!r}: this predictor has no task decoders (open the folder with "
                             "gmiseg_edge.runtime.load)")
        return self.tasks.get(task)

    def predict(
        self,
        image: np.ndarray | EncodedImage,
        points=None,
        labels=None,
        box=None,
        mask_input=None,
        multimask: bool | None = None,
        normalise: Normalisation = None,
        task: str | None = None,
    ) -> Prediction:
        """Segment ``image`` (uint8 (H, W) or (H, W, 3), or an :class:`EncodedImage`) from a prompt.

        ``points`` (N, 2) as (x, y) pixels with ``labels`` (N,) 1/0; ``box`` [x0, y0, x1, y1]; ``mask_input``
        a previous prediction's low-res logits (``Prediction.mask_input``). ``multimask`` overrides the choice
        rule of this module's docstring. ``task``: a task decoder of the folder (None: the predictor's
        ``task``, ``""``: the base decoder); the embedding, and so the encoder run and the cache entry, are
        shared by every task.
        """
        if isinstance(image, EncodedImage):
            encoded: EncodedImage | None = image
            size = image.size
        else:
            pixels = check_image(image, normalise)  # image errors first, then prompt errors, then encode
            encoded, size = None, (int(pixels.shape[0]), int(pixels.shape[1]))
        prompt = make_prompt(points, labels, box, mask_input, image_size=size)
        if encoded is None:
            encoded = self._encode_pixels(pixels)
        low_res, iou = self.decode(encoded, prompt, task)
        outputs = output_choice(prompt.ambiguous, multimask)
        return make_prediction(encoded.prepared, low_res, iou, outputs, self.input_size)

    def propagate(self, volume: np.ndarray, slice_index: int, box=None, points=None, labels=None, mask=None,
                  axis: int = 2, normalise: Normalisation = None, settings=None, progress=None):
        """Carry one structure through ``volume`` from a prompt (``box``/``points``) or a labelled ``mask`` on
        slice ``slice_index`` along ``axis``: a :class:`~gmiseg_edge.runtime.propagate.PropagationResult` with
        the 3D mask. See :mod:`gmiseg_edge.runtime.propagate` for the stop rules and ``settings``."""
        return propagate(self, volume, slice_index, box=box, points=points, labels=labels, mask=mask, axis=axis,
                         normalise=normalise, settings=settings, progress=progress)

    def close(self) -> None:
        self.backend.close()

    def __repr__(self) -> str:
        return f"Predictor({self.model_name}, {self.backend!r})"

