"""Propagate one structure through a volume from a prompt on one slice (DESIGN §10).

The seed is a prompt on slice ``slice_index`` (a box and/or points, in pixels of the slice as
:func:`gmiseg_edge.data.slice_2d` shows it: rows = the higher remaining axis, columns = the lower one) or a
labelled mask of that slice. From the seed the structure is carried slice by slice in both directions: the
previous slice's mask gives the next slice's box (its extent grown by ``margin``, then moved only half way
from the last box, ``inertia``: a slice that is under-segmented does not shrink every box after it) and,
optionally, its low-res logits the next ``mask_input`` (off by default: lite_medsam was trained on boxes and
its masks degrade with its own logits as mask_input, -0.07 to -0.28 Dice per organ, benchmarks/propagation.py).
Each direction stops where the structure ends, not after a fixed count:

- ``empty``: the mask has fewer than ``min_area`` pixels;
- ``low_iou``: the decoder's predicted IoU is under ``min_iou`` (the box holds no clear object);
- ``iou_drop``: the predicted IoU falls more than ``iou_drop`` below the previous slice's (the structure
  left the box: the confidence of one structure changes slowly from slice to slice, an absolute threshold
  does not separate the two on small, low-contrast slices);
- ``area_growth``: the area is over ``growth`` times the previous slice's (a leak into a neighbour);
- ``area_collapse``: the area is under ``collapse`` times the previous slice's (the structure tapers off);
- ``volume_end``: the first or last slice was reached.

The slice that trips a rule is dropped (its mask stays empty), except ``area_collapse`` with
``keep_collapsed``: a shrinking tip is usually the true end of the structure, so it is kept and the direction
stops after it. Area ratios compare with ``max(previous area, ratio_floor)`` pixels so that a few pixels of
a tiny structure do not trip them. The settings used are kept in the result (:class:`PropagationSettings`).

Speed: slices are encoded in batches of ``batch_size`` (the encoder graph has a dynamic batch) by one
background thread, through the predictor's :class:`~gmiseg_edge.runtime.cache.EmbeddingCache` slice by slice,
while the main thread decodes the slices already encoded. At most ``2 * batch_size`` slices are encoded ahead
of the decoder, so memory stays flat however long the volume: the propagation holds only those embeddings and
the previous slice's mask per direction; the cache is an LRU bounded in bytes. A direction that stops leaves
at most its slices already encoded ahead unused (``PropagationResult.encoded`` counts them).

Intensities: uint8 volumes are used as they are; others need ``window``, applied with one mapping for the
whole volume (a CT window, or percentiles / min-max over the volume, not per slice) so that every slice of the
scan sees the same intensity scale.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.graph_io import LOW_RES
from gmiseg_edge.core.prediction import Prediction
from gmiseg_edge.core.prompts import box_from_mask, make_prompt
from gmiseg_edge.data.intensity import Window, rescale_to_uint8, window_range

STOP_REASONS = ("volume_end", "empty", "low_iou", "iou_drop", "area_growth", "area_collapse")
MASK_LOGIT = 10.0  # |logit| given to a seed mask's pixels in its mask_input (lite_medsam's own are ~10-20)
_PERCENTILE_SAMPLE = 4_000_000  # voxels sampled for volume percentiles


@dataclass(frozen=True)
class PropagationSettings:
    """How propagation carries the structure and when it stops (see the module docstring)."""

    min_iou: float = 0.5
    iou_drop: float = 0.15  # stop when the predicted IoU falls more than this below the previous slice's
    growth: float = 2.0
    collapse: float = 0.2
    keep_collapsed: bool = True
    min_area: int = 4  # pixels: a smaller mask is empty
    ratio_floor: int = 16  # pixels: area ratios compare with at least this many
    margin: float = 0.1  # box grown by this fraction of its width/height on each side ...
    min_margin: float = 2.0  # ... and by at least this many pixels
    mask_input: bool = False  # pass the previous slice's logits as mask_input (see BENCHMARKS)
    inertia: float = 0.5  # box = (1 - inertia) * the grown extent of the previous mask + inertia * the last box
    batch_size: int = 2  # slices per encoder run
    prefetch: bool = True  # encode the next batch in a background thread while decoding

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.min_iou <= 1:
            raise ValueError(f"min_iou must be in [0, 1], got {self.min_iou}")
        if self.growth <= 1 or not 0 <= self.collapse < 1:
            raise ValueError(f"need growth > 1 and 0 <= collapse < 1, got {self.growth}, {self.collapse}")
        if self.margin < 0 or self.min_margin < 0:
            raise ValueError(f"margins must be >= 0, got {self.margin}, {self.min_margin}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Stop:
    """Why one direction stopped: ``reason`` (one of ``STOP_REASONS``) at ``slice`` (the slice that tripped
    the rule, or the index past the volume's end for ``volume_end``)."""

    reason: str
    slice: int
    detail: str = ""


@dataclass(frozen=True)
class PropagationResult:
    """A structure carried through a volume from one seed slice."""

    mask: np.ndarray  # bool, the volume's shape
    axis: int
    seed: int
    iou: np.ndarray  # float32 (D,): predicted IoU of each decoded slice; NaN elsewhere and at a mask seed
    area: np.ndarray  # int64 (D,): mask pixels of each decoded slice (kept or not); -1 where not decoded
    kept: np.ndarray  # bool (D,): slices whose mask is in ``mask``
    visited: tuple[int, int]  # first and last slice decoded (inclusive; the seed for a mask seed alone)
    stops: dict[str, Stop]  # "down" (towards slice 0) and "up"
    settings: PropagationSettings
    encoded: int  # slices encoded (or fetched from the cache): those decoded plus any encoded ahead unused
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds: encode (worker), wait, decode (main)

    @property
    def slices_visited(self) -> int:
        return int(np.count_nonzero(self.area >= 0))

    @property
    def kept_range(self) -> tuple[int, int] | None:
        """First and last slice with a kept mask (None if none)."""
        kept = np.flatnonzero(self.kept)
        return (int(kept[0]), int(kept[-1])) if kept.size else None

    def summary(self) -> str:
        down, up = self.stops["down"], self.stops["up"]
        return (f"seed {self.seed}, visited {self.visited[0]}..{self.visited[1]}, kept {self.kept_range}; "
                f"down: {down.reason} at {down.slice}, up: {up.reason} at {up.slice}")


class SlicePredictor(Protocol):
    """What propagation uses of a :class:`gmiseg_edge.runtime.predictor.Predictor`: its public interface, named
    here so that this module does not import the predictor (whose ``propagate`` method calls :func:`propagate`)."""

    def encode_many(self, images: list[np.ndarray]) -> list[Any]:
        """Encoded images (``EncodedImage``), one per uint8 slice."""

    def predict(self, image: Any, *, points=None, labels=None, box=None, mask_input=None) -> Prediction:
        """The prediction for one prompt on an encoded image."""


# --------------------------------------------------------------------------- the volume's slices


class SliceSource:
    """The uint8 slices of a volume along ``axis``, as ``slice_2d`` shows them, with one intensity mapping."""

    def __init__(self, volume: np.ndarray, axis: int, window: Window | None, name: str = "volume") -> None:
        if not isinstance(volume, np.ndarray):
            raise InputError(f"{name}: expected a numpy array, got {type(volume).__name__}")
        if volume.ndim != 3:
            raise InputError(f"{name}: propagation needs a 3D volume, got {volume.ndim} dimensions {volume.shape}"
                             + ("; for a 2D image use predict()" if volume.ndim == 2 else ""))
        if isinstance(axis, bool) or not isinstance(axis, int | np.integer) or axis not in (0, 1, 2):
            raise InputError(f"{name}: axis must be 0, 1 or 2, got {axis!r}")
        if volume.dtype == np.uint8 and axis == 2 and volume.shape[2] in (3, 4) and min(volume.shape[:2]) > 4:
            raise InputError(f"{name}: shape {volume.shape} uint8 looks like a 2D colour image, not a volume: use "
                             "predict() for an image (a 3- or 4-slice uint8 volume: put its slices first and "
                             "pass axis=0)")
        if min(volume.shape) < 1:
            raise InputError(f"{name}: empty volume of shape {volume.shape}")
        if volume.dtype == bool or not (np.issubdtype(volume.dtype, np.integer)
                                        or np.issubdtype(volume.dtype, np.floating)):
            raise InputError(f"{name}: expected intensities (integer or float), got dtype {volume.dtype}")
        self.axis = int(axis)
        self.name = name
        self._stack = np.moveaxis(volume, self.axis, 0)  # a view: (D, a, b); slice k is _stack[k].T
        self.depth = int(self._stack.shape[0])
        self.stack_shape = tuple(self._stack.shape)
        self.shape2d = (int(self._stack.shape[2]), int(self._stack.shape[1]))  # (H, W) of a slice
        self.range = self._range(volume, window)  # the (low, high) the window maps to 0..255 (None: uint8)

    def _range(self, volume: np.ndarray, window: Window | None) -> tuple[float, float] | None:
        if volume.dtype == np.uint8:
            return None
        if np.issubdtype(volume.dtype, np.floating):
            bad = int(np.count_nonzero(~np.isfinite(volume)))
            if bad:
                raise InputError(f"{self.name}: {bad} NaN or infinite value(s); replace them before segmenting")
        if window is None:
            raise InputError(f"{self.name}: dtype {volume.dtype} is not uint8: pass window= (a CT window such "
                             "as 'abdomen', (low, high), 'percentile' or 'minmax'; one mapping for the volume)")
        if isinstance(window, str) and window in ("percentile", "minmax"):
            flat = volume.ravel(order="K")
            sample = flat[:: max(1, flat.size // _PERCENTILE_SAMPLE)]
            low_q, high_q = (0.5, 99.5) if window == "percentile" else (0.0, 100.0)
            low, high = (float(v) for v in np.percentile(sample, [low_q, high_q]))
            if high <= low:
                low, high = float(volume.min()), float(volume.max())
            return (low, high)
        try:
            return window_range(window)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{self.name}: cannot apply the window {window!r} ({exc})") from exc

    def pixels(self, index: int) -> np.ndarray:
        """Slice ``index`` as uint8 (H, W)."""
        plane = self._stack[index].T
        if self.range is None:
            return np.ascontiguousarray(plane)
        return rescale_to_uint8(plane, *self.range)

    def put(self, volume_mask: np.ndarray, index: int, mask: np.ndarray) -> None:
        """Write a slice's (H, W) mask into a volume-shaped array."""
        np.moveaxis(volume_mask, self.axis, 0)[index] = mask.T

    def take(self, volume_mask: np.ndarray, index: int) -> np.ndarray:
        """Slice ``index`` of a volume-shaped array, as (H, W)."""
        return np.ascontiguousarray(np.moveaxis(volume_mask, self.axis, 0)[index].T)


# --------------------------------------------------------------------------- encoding ahead of the decoder


class _Prefetcher:
    """Encodes requested slices in batches on one background thread (or at once without ``background``)."""

    def __init__(self, predictor: SlicePredictor, source: SliceSource, background: bool) -> None:
        self.predictor = predictor
        self.source = source
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="gmiseg-propagate") if background else None
        self._pending: dict[int, tuple[Future, int]] = {}
        self.encoded = 0
        self.encode_seconds = 0.0
        self._lock = threading.Lock()

    def _encode(self, indices: list[int]) -> list[Any]:
        start = time.perf_counter()
        encoded = self.predictor.encode_many([self.source.pixels(k) for k in indices])
        with self._lock:
            self.encode_seconds += time.perf_counter() - start
            self.encoded += len(indices)
        return encoded

    def request(self, indices: list[int]) -> None:
        if not indices:
            return
        if self._pool is not None:
            future = self._pool.submit(self._encode, indices)
        else:
            future = Future()
            future.set_result(self._encode(indices))
        for position, k in enumerate(indices):
            self._pending[k] = (future, position)

    def requested(self, index: int) -> bool:
        return index in self._pending

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    @property
    def busy(self) -> bool:
        return any(not future.done() for future, _ in self._pending.values())

    def take(self, index: int) -> Any:
        if index not in self._pending:
            self.request([index])
        future, position = self._pending.pop(index)
        return future.result()[position]

    def drop(self, indices) -> None:
        for k in indices:
            self._pending.pop(k, None)

    def close(self) -> None:
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- seeds and prompts


def mask_to_logits(mask: np.ndarray, prepared, input_size: int) -> np.ndarray:
    """A bool (H, W) mask as low-res logits (1, 1, 256, 256) in the model's padded S x S frame (the inverse
    of the predictor's post-processing): +MASK_LOGIT inside, -MASK_LOGIT outside."""
    height, width = prepared.resized_size
    frame = np.zeros((input_size, input_size), np.float32)
    frame[:height, :width] = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    low = cv2.resize(frame, (LOW_RES, LOW_RES), interpolation=cv2.INTER_AREA) if input_size != LOW_RES else frame
    return ((low - 0.5) * (2.0 * MASK_LOGIT)).astype(np.float32)[None, None]


def grown_box(mask: np.ndarray, settings: PropagationSettings) -> np.ndarray:
    """The extent of a non-empty (H, W) mask grown by the settings' margin, clipped to the slice."""
    height, width = mask.shape
    x0, y0, x1, y1 = box_from_mask(mask)
    mx = max(settings.min_margin, settings.margin * (x1 - x0 + 1))
    my = max(settings.min_margin, settings.margin * (y1 - y0 + 1))
    return np.array([max(x0 - mx, 0.0), max(y0 - my, 0.0), min(x1 + mx, width - 1.0), min(y1 + my, height - 1.0)],
                    dtype=np.float32)


def _slice_index(slice_index, depth: int) -> int:
    if isinstance(slice_index, bool) or not isinstance(slice_index, int | np.integer):
        raise InputError(f"slice_index must be an integer, got {slice_index!r}")
    if not 0 <= int(slice_index) < depth:
        raise InputError(f"seed slice {slice_index} is outside the volume (0..{depth - 1} along the axis)")
    return int(slice_index)


def _seed_mask(mask, source: SliceSource, seed: int) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim == 3:
        stacked = np.moveaxis(array, source.axis, 0)
        if stacked.shape != source.stack_shape:
            raise InputError(f"seed mask of shape {array.shape} does not match the volume")
        array = stacked[seed].T
    if array.shape != source.shape2d:
        raise InputError(f"seed mask of shape {array.shape} does not match slice {seed} of shape {source.shape2d} "
                         "(rows x columns as slice_2d shows it), nor the volume")
    if array.dtype != bool:
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise InputError(f"seed mask: expected a bool or 0/1 mask, got dtype {array.dtype}")
        array = array != 0
    if not array.any():
        raise InputError(f"seed mask is empty on slice {seed}: nothing to propagate")
    return np.ascontiguousarray(array)


# --------------------------------------------------------------------------- propagation


@dataclass
class _Front:
    """One direction's state: the next slice to decode and the previous slice's result."""

    step: int
    next: int  # next slice to decode
    ahead: int  # next slice to request from the encoder
    mask: np.ndarray | None  # the previous slice's mask
    logits: np.ndarray | None = None  # ... and its low-res logits
    area: int = 0
    stop: Stop | None = None
    box: np.ndarray | None = None  # the last box given
    iou: float = float("nan")  # the previous slice's predicted IoU


def _carry(front: _Front, settings: PropagationSettings) -> dict[str, Any]:
    """The prompt for the slice after ``front``'s previous one."""
    assert front.mask is not None
    box = grown_box(front.mask, settings)
    if settings.inertia and front.box is not None:
        box = (1 - settings.inertia) * box + settings.inertia * front.box
    front.box = box
    prompt: dict[str, Any] = {"box": box}
    if settings.mask_input and front.logits is not None:
        prompt["mask_input"] = front.logits
    return prompt


def _check(prediction: Prediction, previous_area: int, previous_iou: float,
           settings: PropagationSettings) -> tuple[str, str] | None:
    """(reason, detail) of the stop rule a slice trips, or None."""
    area = int(np.count_nonzero(prediction.mask))
    if area < settings.min_area:
        return "empty", f"{area} pixel(s) < {settings.min_area}"
    if prediction.score < settings.min_iou:
        return "low_iou", f"predicted IoU {prediction.score:.3f} < {settings.min_iou}"
    if prediction.score < previous_iou - settings.iou_drop:
        return "iou_drop", f"predicted IoU {prediction.score:.3f} < {previous_iou:.3f} - {settings.iou_drop}"
    reference = max(previous_area, settings.ratio_floor)
    if area > settings.growth * reference:
        return "area_growth", f"area {area} > {settings.growth} x {reference}"
    if previous_area >= settings.ratio_floor and area < settings.collapse * previous_area:
        return "area_collapse", f"area {area} < {settings.collapse} x {previous_area}"
    return None


def propagate(
    predictor: SlicePredictor,
    volume: np.ndarray,
    slice_index: int,
    *,
    box=None,
    points=None,
    labels=None,
    mask=None,
    axis: int = 2,
    window: Window | None = None,
    settings: PropagationSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PropagationResult:
    """Carry the structure prompted on slice ``slice_index`` of ``volume`` through its neighbours (module
    docstring). ``box``/``points``/``labels`` as for :meth:`Predictor.predict`, in pixels of the slice; or
    ``mask``: the labelled slice (H, W) (or a volume-shaped mask, whose slice ``slice_index`` is taken), which
    is kept as that slice's result. ``progress(slices decoded, depth)`` is called after each slice."""
    settings = settings or PropagationSettings()
    start = time.perf_counter()
    source = SliceSource(volume, axis, window)
    seed = _slice_index(slice_index, source.depth)
    size = source.shape2d
    if mask is not None and (box is not None or points is not None or labels is not None):
        raise InputError("give a seed prompt (box/points) or a seed mask, not both")
    seed_prompt = make_prompt(points, labels, box, image_size=size) if mask is None else None  # before encoding
    seed_mask = _seed_mask(mask, source, seed) if mask is not None else None

    depth, batch = source.depth, settings.batch_size
    out = np.zeros(volume.shape, dtype=bool)
    iou = np.full(depth, np.nan, np.float32)
    area = np.full(depth, -1, np.int64)
    kept = np.zeros(depth, bool)
    fronts = [_Front(step, seed + step, seed + step, seed_mask) for step in (-1, 1)]
    for front in fronts:
        if not 0 <= front.next < depth:
            front.stop = Stop("volume_end", front.next)
    prefetcher = _Prefetcher(predictor, source, background=settings.prefetch)
    timings = {"wait": 0.0, "decode": 0.0}
    done = 0

    def top_up(first: tuple[int, ...] = (), current: _Front | None = None) -> None:
        """Request the next slices of the live directions (``current`` first), alternately, a batch at a time, at
        most two batches ahead of the decoder (one without ``prefetch``); a part batch only when the encoder is
        idle."""
        while True:
            live = sorted((f for f in fronts if f.stop is None), key=lambda f: f is not current)
            room = min(batch, (2 if settings.prefetch else 1) * batch - prefetcher.outstanding)
            picks, cursors = list(first), [f.ahead for f in live]
            first = ()
            while len(picks) < room:
                moved = False
                for i, front in enumerate(live):
                    if len(picks) < room and 0 <= cursors[i] < depth:
                        picks.append(cursors[i])
                        cursors[i] += front.step
                        moved = True
                if not moved:
                    break
            if not picks or (len(picks) < batch and prefetcher.busy):
                return
            for front, cursor in zip(live, cursors, strict=True):
                front.ahead = cursor
            prefetcher.request(picks)

    def decode(k: int, **prompt) -> Prediction:
        nonlocal done
        t0 = time.perf_counter()
        encoded = prefetcher.take(k)
        t1 = time.perf_counter()
        prediction = predictor.predict(encoded, **prompt)
        timings["wait"] += t1 - t0
        timings["decode"] += time.perf_counter() - t1
        iou[k], area[k] = prediction.score, int(np.count_nonzero(prediction.mask))
        done += 1
        if progress:
            progress(done, depth)
        return prediction

    try:
        if seed_prompt is not None:
            top_up((seed,))
            prediction = decode(seed, points=seed_prompt.points, labels=seed_prompt.labels, box=seed_prompt.box)
            if area[seed] < settings.min_area:
                raise InputError(f"the seed prompt gave an empty mask on slice {seed} ({area[seed]} pixel(s), "
                                 f"predicted IoU {prediction.score:.2f}): nothing to propagate; check the prompt")
            seed_mask, seed_logits = prediction.mask, prediction.mask_input
        else:
            area[seed] = int(np.count_nonzero(seed_mask))
            seed_logits = None
            done += 1
        assert seed_mask is not None
        source.put(out, seed, seed_mask)
        kept[seed] = True
        for front in fronts:
            front.mask, front.logits, front.area = seed_mask, seed_logits, int(area[seed])
            front.iou = float(iou[seed])  # NaN for a mask seed: no IoU drop rule on the first slice
        while True:
            live = [f for f in fronts if f.stop is None]
            if not live:
                break
            for front in live:
                top_up(current=front)
                k = front.next
                prediction = decode(k, **_carry(front, settings))
                tripped = _check(prediction, front.area, front.iou, settings)
                if tripped is None or (tripped[0] == "area_collapse" and settings.keep_collapsed):
                    source.put(out, k, prediction.mask)
                    kept[k] = True
                front.mask, front.logits, front.area = prediction.mask, prediction.mask_input, int(area[k])
                front.iou = prediction.score
                front.next += front.step
                if tripped is not None:
                    front.stop = Stop(tripped[0], k, tripped[1])
                elif not 0 <= front.next < depth:
                    front.stop = Stop("volume_end", front.next)
                if front.stop is not None:  # its slices requested ahead are not needed
                    prefetcher.drop(range(front.next, front.ahead, front.step))
    finally:
        prefetcher.close()
    decoded = np.flatnonzero(area >= 0)
    timings["encode"] = prefetcher.encode_seconds
    return PropagationResult(
        mask=out, axis=source.axis, seed=seed, iou=iou, area=area, kept=kept,
        visited=(int(decoded[0]), int(decoded[-1])),
        stops={"down": fronts[0].stop, "up": fronts[1].stop},  # type: ignore[dict-item]
        settings=settings, encoded=prefetcher.encoded, seconds=time.perf_counter() - start, timings=timings,
    )
