"""Interactive predictor: encode an image once (cached), decode any number of prompts, masks at full size.

Which of the decoder's outputs is returned follows SAM's rule (:mod:`gmiseg_edge.core.prediction`);
``multimask=True``/``False`` overrides it.

Several objects on one image (:meth:`Predictor.predict_objects`, or ``predict(image, boxes=[...])``) go through
the decoder together: the graph's prompt dimension K (DESIGN §5) takes one prompt set per object against the
one cached embedding. Objects whose prompts give the same decoder point count N (all boxes, say) share a run,
at most the backend's ``max_objects`` per run; objects of other point counts go in runs of their own, never
padded, so each object's masks equal those of its own single call.

The predictor keeps no per-image state (the cache holds embeddings), so one instance serves many threads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.graph_io import LOW_RES, DecoderInputs
from gmiseg_edge.core.prediction import (
    GROUP_OBJECTS,
    ObjectPredictions,
    Prediction,
    make_prediction,
    object_predictions,
    output_choice,
)
from gmiseg_edge.core.prompts import Prompt, make_prompt
from gmiseg_edge.core.transforms import ImageGeometry, PreprocessConfig, preprocess
from gmiseg_edge.data.intensity import Window
from gmiseg_edge.runtime.backends.base import Backend, TaskDecoder
from gmiseg_edge.runtime.cache import CacheStats, EmbeddingCache, image_key
from gmiseg_edge.runtime.images import check_image
from gmiseg_edge.runtime.propagate import PropagationResult, PropagationSettings, propagate
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


def _per_object(name: str, values, count: int | None) -> list | None:
    if values is None:
        return None
    try:
        values = list(values)
    except TypeError:
        raise InputError(f"{name} must be a list with one entry per object, got {values!r}") from None
    if count is not None and len(values) != count:
        raise InputError(f"{name} has {len(values)} entries but there are {count} objects: give one per object "
                         "(None where an object has none)")
    return values


#: objects x image pixels one predict_objects call may take: each object keeps its low-res logits (and, once asked
#: for, a mask) and is post-processed in groups and bands of rows, so 1000 boxes on a 512^2 image peak at 893 MiB
#: RSS with ORT fp32 lite_medsam (benchmarks/objects_memory.py; 6.2 GB before, issue 26); beyond this, refused
MAX_OBJECT_PIXELS = 1 << 28


def object_prompts(size: tuple[int, int], boxes=None, points=None, labels=None, mask_inputs=None) -> list[Prompt]:
    """K checked prompts from per-object lists (see :meth:`Predictor.predict_objects`); errors name the object.
    K x image pixels above :data:`MAX_OBJECT_PIXELS` is refused before anything is decoded."""
    lists: dict[str, list | None] = {}
    count = None
    for name, values in (("boxes", boxes), ("points", points), ("labels", labels), ("mask_inputs", mask_inputs)):
        lists[name] = _per_object(name, values, count)
        if lists[name] is not None and count is None:
            count = len(lists[name])  # type: ignore[arg-type]
    if not count:
        raise InputError("no objects: give boxes=[[x0, y0, x1, y1], ...] and/or points=[per-object points, ...]")
    height, width = size
    if count * height * width > MAX_OBJECT_PIXELS:
        fits = max(MAX_OBJECT_PIXELS // (height * width), 1)
        raise InputError(f"{count} objects on a {height}x{width} image is above the budget of {MAX_OBJECT_PIXELS} "
                         f"object-pixels (objects x image pixels): segment at most {fits} objects of this image "
                         "a call (in groups)")
    prompts = []
    for k in range(count):
        entry = {name: (values[k] if values is not None else None) for name, values in lists.items()}
        try:
            prompts.append(make_prompt(entry["points"], entry["labels"], entry["boxes"], entry["mask_inputs"],
                                       image_size=size))
        except InputError as exc:
            raise InputError(f"object {k}: {exc}") from None
    return prompts


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

    def encode(self, image: np.ndarray | EncodedImage, window: Window | None = None) -> EncodedImage:
        """Check, preprocess and encode ``image`` (cached); see :func:`~gmiseg_edge.runtime.images.check_image`
        for ``window`` (how a non-uint8 image maps to uint8)."""
        if isinstance(image, EncodedImage):
            return image
        return self._encode_pixels(check_image(image, window))

    def _encode_pixels(self, pixels: np.ndarray) -> EncodedImage:
        key = image_key(pixels, self._preprocessing, self.backend.encoder_id)
        geometry = ImageGeometry.of(pixels.shape[0], pixels.shape[1], self.input_size)
        embedding = self.cache.get_or_compute(
            key, lambda: self.backend.encode(preprocess(pixels, self.preprocess_config).tensor))
        return EncodedImage(prepared=geometry, embedding=embedding, key=key)

    def encode_many(self, images: Sequence[np.ndarray | EncodedImage], window: Window | None = None,
                    ) -> list[EncodedImage]:
        """:meth:`encode` for several images, the cache misses in batched encoder runs (at most the backend's
        ``max_batch`` images a run). Each image still goes through the cache on its own key, so a batch costs
        what its misses cost, and the embeddings equal single-image encodes."""
        checked = [image if isinstance(image, EncodedImage) else check_image(image, window, name=f"image {i}")
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

    def _decoder(self, task: str | None):
        """The backend's decoder, or a task's (None: the predictor's ``task``; ``""``: the base decoder), with
        its prompt-point limit (task decoders run in ONNX Runtime: no limit)."""
        task = self.task if task is None else task
        if task:
            return self.task_decoder(task), None
        return self.backend, self.backend.max_points

    def _check_points(self, prompt: Prompt, limit: int | None, name: str = "") -> None:
        if limit is not None and prompt.n_decoder_points > limit:
            raise InputError(f"{name}{prompt.n_points} points: the {self.backend.name} decoder takes at most {limit} "
                             "prompt points (box corners and padding included)")

    def decode(self, encoded: EncodedImage, prompt: Prompt, task: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All four decoder outputs for a checked prompt: low-res logits (4, 256, 256) and IoU (4,).

        ``task``: decode with that task's decoder (None: the predictor's ``task``; ``""``: the base decoder)."""
        decoder, limit = self._decoder(task)
        self._check_points(prompt, limit)
        inputs = prompt.decoder_inputs(encoded.embedding, encoded.size, self.input_size)
        low_res, iou = decoder.decode(inputs)
        return low_res[0], iou[0]

    def decode_objects(self, encoded: EncodedImage, prompts: Sequence[Prompt],
                       task: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All four decoder outputs for K checked prompts on one image, in as few decoder runs as the module
        docstring allows: low-res logits (K, 4, 256, 256) and IoU (K, 4), in the order of ``prompts``."""
        decoder, limit = self._decoder(task)
        for k, prompt in enumerate(prompts):
            self._check_points(prompt, limit, f"object {k}: ")
        low_res = np.empty((len(prompts), 4, LOW_RES, LOW_RES), np.float32)
        iou = np.empty((len(prompts), 4), np.float32)
        groups: dict[int, list[int]] = {}
        for k, prompt in enumerate(prompts):
            groups.setdefault(prompt.n_decoder_points, []).append(k)
        step = self.backend.max_objects or len(prompts)
        for members in groups.values():
            for start in range(0, len(members), step):
                chunk = members[start:start + step]
                inputs = DecoderInputs.stack([prompts[k].decoder_inputs(encoded.embedding, encoded.size,
                                                                        self.input_size) for k in chunk])
                low_res[chunk], iou[chunk] = decoder.decode(inputs)
        return low_res, iou

    def task_decoder(self, task: str) -> TaskDecoder:
        """The decoder of ``task`` (opened on first use); an error names the tasks the folder holds."""
        if self.tasks is None:
            raise InputError(f"task {task!r}: this predictor has no task decoders (open the folder with "
                             "gmiseg_edge.runtime.load)")
        return self.tasks.get(task)

    @overload
    def predict(self, image: np.ndarray | EncodedImage, points=None, labels=None, box=None, mask_input=None,
                multimask: bool | None = None, window: Window | None = None, boxes: None = None,
                task: str | None = None) -> Prediction: ...

    @overload
    def predict(self, image: np.ndarray | EncodedImage, points=None, labels=None, box=None, mask_input=None,
                multimask: bool | None = None, window: Window | None = None, *,
                boxes: Any, task: str | None = None) -> ObjectPredictions: ...

    def predict(
        self,
        image: np.ndarray | EncodedImage,
        points=None,
        labels=None,
        box=None,
        mask_input=None,
        multimask: bool | None = None,
        window: Window | None = None,
        boxes=None,
        task: str | None = None,
    ) -> Prediction | ObjectPredictions:
        """Segment ``image`` (uint8 (H, W) or (H, W, 3), or an :class:`EncodedImage`) from a prompt.

        ``points`` (N, 2) as (x, y) pixels with ``labels`` (N,) 1/0; ``box`` [x0, y0, x1, y1]; ``mask_input``
        a previous prediction's low-res logits (``Prediction.mask_input``). ``multimask`` overrides the choice
        rule of this module's docstring. ``window``: how a non-uint8 image maps to uint8 (a CT window preset
        such as ``"abdomen"``, ``(low, high)``, ``"percentile"`` or ``"minmax"``; None: uint8 only). ``task``:
        a task decoder of the folder (None: the predictor's ``task``, ``""``: the base decoder); the embedding,
        and so the encoder run and the cache entry, are shared by every task.

        ``boxes`` (K, 4), alone: K objects, one box each, decoded together; returns
        :class:`~gmiseg_edge.core.prediction.ObjectPredictions` (see :meth:`predict_objects`).
        """
        if boxes is not None:
            if any(v is not None for v in (points, labels, box, mask_input)):
                raise InputError("boxes= (one box per object) goes alone; for points or previous masks per object "
                                 "use predict_objects(image, boxes=..., points=[...], labels=[...])")
            return self.predict_objects(image, boxes=boxes, multimask=multimask, window=window, task=task)
        if isinstance(image, EncodedImage):
            encoded: EncodedImage | None = image
            size = image.size
        else:
            pixels = check_image(image, window)  # image errors first, then prompt errors, then encode
            encoded, size = None, (int(pixels.shape[0]), int(pixels.shape[1]))
        prompt = make_prompt(points, labels, box, mask_input, image_size=size)
        if encoded is None:
            encoded = self._encode_pixels(pixels)
        low_res, iou = self.decode(encoded, prompt, task)
        outputs = output_choice(prompt.ambiguous, multimask)
        return make_prediction(encoded.prepared, low_res, iou, outputs, self.input_size)

    def predict_objects(
        self,
        image: np.ndarray | EncodedImage,
        boxes=None,
        points=None,
        labels=None,
        mask_inputs=None,
        multimask: bool | None = None,
        window: Window | None = None,
        task: str | None = None,
    ) -> ObjectPredictions:
        """Segment K objects of ``image`` in batched decoder runs (module docstring): one prompt per object.

        ``boxes``: K boxes [x0, y0, x1, y1] (an entry may be None where that object has points);
        ``points``: K per-object point arrays (N_k, 2) (or None entries) with ``labels``: K per-object label
        arrays; ``mask_inputs``: K previous low-res logits (or None entries). Every list given has K entries;
        each object is checked as :meth:`predict` checks one prompt (errors name the object). Returns an
        :class:`~gmiseg_edge.core.prediction.ObjectPredictions`: object k is ``result[k]`` (a
        :class:`Prediction`, exactly what ``predict`` gives for that prompt alone), ``result.label_map()`` the
        objects as labels 1..K. ``task`` as for :meth:`predict`.
        """
        if isinstance(image, EncodedImage):
            encoded: EncodedImage | None = image
            size = image.size
        else:
            pixels = check_image(image, window)
            encoded, size = None, (int(pixels.shape[0]), int(pixels.shape[1]))
        prompts = object_prompts(size, boxes, points, labels, mask_inputs)
        if encoded is None:
            encoded = self._encode_pixels(pixels)
        predictions: list[Prediction] = []
        for start in range(0, len(prompts), GROUP_OBJECTS):  # only the chosen outputs of a group are kept
            group = prompts[start:start + GROUP_OBJECTS]
            low_res, iou = self.decode_objects(encoded, group, task)
            predictions += object_predictions(encoded.prepared, low_res, iou,
                                              [output_choice(p.ambiguous, multimask) for p in group], self.input_size)
        return ObjectPredictions(predictions, tuple(encoded.prepared.original_size))

    def propagate(self, volume: np.ndarray, slice_index: int | None = None, box=None, points=None, labels=None,
                  mask=None, axis: int = 2, window: Window | None = None, settings: PropagationSettings | None = None,
                  progress: Callable[[int, int], None] | None = None, *, seeds=None, spacing=None,
                  ) -> PropagationResult:
        """Carry one structure through ``volume`` from a prompt (``box``/``points``) or a labelled ``mask`` on
        slice ``slice_index`` along ``axis``, or from several ``seeds`` (``[(k, box), ...]`` or a sparse label
        map): a :class:`~gmiseg_edge.runtime.propagate.PropagationResult` with the 3D mask; ``window`` maps a
        non-uint8 volume to uint8, one mapping for the whole volume; ``spacing`` (mm along the volume's axes) sets
        how far the structure may move between slices. A thin call into
        :func:`gmiseg_edge.runtime.propagate.propagate` (its checks, stop rules and ``settings``)."""
        return propagate(self, volume, slice_index, box=box, points=points, labels=labels, mask=mask, seeds=seeds,
                         axis=axis, window=window, spacing=spacing, settings=settings, progress=progress)

    def close(self) -> None:
        self.backend.close()

    def __repr__(self) -> str:
        return f"Predictor({self.model_name}, {self.backend!r})"

