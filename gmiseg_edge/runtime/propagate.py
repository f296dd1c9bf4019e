"""Propagate one structure through a volume from prompts on one or more slices (DESIGN §10, issue 28).

A seed is a prompt on one slice (a box and/or points, in pixels of the slice as :func:`gmiseg_edge.data.slice_2d`
shows it: rows = the higher remaining axis, columns = the lower one) or a labelled mask of that slice; several
seeds (``seeds=[(k, box), ...]``, or a sparse label map whose labelled slices are the seeds) are all used. From
each seed the structure is carried slice by slice in both directions; between two seeds the two fronts fill the
slices until they meet, and where one stops early the other carries on to the far seed.

**Carrying** (box-only prompts, no ``mask_input``): the previous slice's mask gives the next slice's box, its
extent grown by the slack a box prompt needs (``margin`` of the extent, at least ``min_margin`` pixels) and by how
far the structure's boundary can move from one slice to the next, from the voxel spacing (``spacing``, mm: a
surface meeting the slice plane at 45 degrees or more moves at most one slice thickness in-plane: the reach).
From a seed, where no movement has been seen, each side grows by the whole reach; after that, by the outward
movement of that side between the last two masks (the surface's slope is continuous from one slice to the next),
at most the reach (``follow_motion``; on 5-6.5 mm slices of 0.6-0.8 mm pixels the reach is 8 pixels, and a box 8
pixels too wide on each side of a small lesion draws in its surroundings). The box is then moved only part way
from the last box (``inertia``: one under-segmented slice does not shrink every box after it). The previous mask
is not fed back as ``mask_input``: a leak in it is carried on (lite_medsam lost 0.18-0.46 Dice per organ with
it, BENCHMARKS.md).

**Checking** each slice against its seed's evidence (:mod:`gmiseg_edge.runtime.propagation.evidence`):

- ``appearance``: the mask must look like the seed's structure rather than its surroundings, in the image
  embedding (prototypes of the seed mask's cells and of a ring around it) and in grey levels (the two regions'
  histograms), at least half as clearly as the seed mask itself does;
- ``area_growth``: its equivalent radius may grow by at most one slice thickness (mm) plus a pixel;
- ``low_iou`` / ``iou_drop``: the decoder's predicted IoU under ``min_iou``, or more than ``iou_drop`` below the
  previous slice's.

**A slice that fails** is re-prompted once from a tighter prior: the box of the part of the failed mask that lies
within the previous mask's reach and looks like the inside (both kinds of evidence), or, if none does, the
previous mask's own extent without margin. If that passes, it is kept (``actions[k] == "tightened"``); if not, the
slice is dropped and the direction stops there with the first failure's reason. A direction also stops on:

- ``empty``: the mask has fewer than ``min_area`` pixels;
- ``area_collapse``: the area is under ``collapse`` times the previous slice's (the structure tapers off; the
  slice is kept with ``keep_collapsed``, a shrinking tip is usually the true end);
- ``met``: the next slice was already given by another seed's front (or is a seed); if the two fronts' masks
  do not overlap there, the seeds disagree about where the structure is: each keeps the slices it reached first
  (about half the gap each) and the result's ``notes`` say so;
- ``limit``: the end of the slices a correction re-runs;
- ``volume_end``: the first or last slice was reached.

**Between two seeds** the structure goes on from one to the other (the user says so): ``low_iou``, ``iou_drop``
and ``area_collapse`` do not apply there, and a slice that fails its checks after the re-prompt is skipped
(``actions[k] == "skipped"``) and bridged: the front carries on from its last kept mask, and the other seed's
front tries the slice too.

Area ratios compare with ``max(previous area, ratio_floor)`` pixels so that a few pixels of a tiny structure do
not trip them. The settings used are kept in the result (:class:`PropagationSettings`).

**Corrections** (:func:`correct`): "slice k is wrong, here is a box/click" makes slice k a seed and re-runs only
the slices between the nearest seeds on either side of it (or the volume's ends); every other slice keeps its
mask.

Speed: slices are encoded in batches of ``batch_size`` (the encoder graph has a dynamic batch) by one
background thread, through the predictor's :class:`~gmiseg_edge.runtime.cache.EmbeddingCache` slice by slice,
while the main thread decodes the slices already encoded. At most ``2 * batch_size`` slices are encoded ahead
of the decoder, so memory stays flat however long the volume: the propagation holds only those embeddings and
the previous slice's mask per front; the cache is an LRU bounded in bytes. A direction that stops leaves at
most its slices already encoded ahead unused (``PropagationResult.encoded`` counts them). The checks cost no
model run; a re-prompt costs one decoder run.

Intensities: uint8 volumes are used as they are; others need ``window``, applied with one mapping for the
whole volume (a CT window, or percentiles / min-max over the volume, not per slice) so that every slice of the
scan sees the same intensity scale.
"""

from __future__ import annotations

import itertools
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
from gmiseg_edge.data.intensity import Window, rescale_to_uint8, window_range
from gmiseg_edge.runtime.propagation.evidence import Appearance, Geometry, Score, grown_extent
from gmiseg_edge.runtime.propagation.seeds import Seed, parse_seeds

EncodedImage = Any  # gmiseg_edge.runtime.predictor.EncodedImage (not imported: the predictor imports this module)

STOP_REASONS = (
    "volume_end", "met", "limit", "empty", "appearance", "area_growth", "low_iou", "iou_drop", "area_collapse")
RETRIED = ("appearance", "area_growth", "low_iou", "iou_drop")  # failures re-prompted from a tighter prior
MASK_LOGIT = 10.0  # |logit| given to a seed mask's pixels in its mask_input (lite_medsam's own are ~10-20)
_PERCENTILE_SAMPLE = 4_000_000  # voxels sampled for volume percentiles


@dataclass(frozen=True)
class PropagationSettings:
    """How propagation carries the structure and when it stops (see the module docstring)."""

    min_iou: float = 0.5
    iou_drop: float = 0.15  # fails when the predicted IoU falls more than this below the previous slice's
    collapse: float = 0.2
    keep_collapsed: bool = True
    min_area: int = 4  # pixels: a smaller mask is empty
    ratio_floor: int = 16  # pixels: area ratios compare with at least this many
    margin: float = 0.1  # box slack: this fraction of the mask's extent on each side ...
    min_margin: float = 2.0  # ... and at least this many pixels, ...
    reach: float = 1.0  # ... plus this many slice thicknesses (in pixels of the slice: the boundary's reach)
    follow_motion: bool = True  # past a seed, each side grows by its last outward movement (at most the reach)
    check_appearance: bool = True  # the appearance check (module docstring)
    check_growth: bool = True  # the area-growth bound from the spacing
    retry: bool = True  # re-prompt a failed slice from a tighter prior before stopping
    mask_input: bool = False  # pass the previous slice's logits as mask_input (see BENCHMARKS)
    inertia: float = 0.5  # box = (1 - inertia) * the grown extent of the previous mask + inertia * the last box
    batch_size: int = 2  # slices per encoder run
    prefetch: bool = True  # encode the next batch in a background thread while decoding

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.min_iou <= 1:
            raise ValueError(f"min_iou must be in [0, 1], got {self.min_iou}")
        if not 0 <= self.collapse < 1:
            raise ValueError(f"need 0 <= collapse < 1, got {self.collapse}")
        if self.min_margin < 0:
            raise ValueError(f"min_margin must be >= 0, got {self.min_margin}")
        if not 0 <= self.inertia < 1:
            raise ValueError(f"inertia must be in [0, 1), got {self.inertia}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Stop:
    """Why one front stopped: ``reason`` (one of ``STOP_REASONS``) at ``slice`` (the slice that tripped the rule,
    the slice another front had given for ``met``, or the index past the volume's end for ``volume_end``)."""

    reason: str
    slice: int
    detail: str = ""


@dataclass(frozen=True)
class FrontReport:
    """One front: from seed slice ``seed`` in direction ``step`` (-1 towards slice 0, +1 up), and its stop."""

    seed: int
    step: int
    stop: Stop


@dataclass(frozen=True)
class PropagationResult:
    """A structure carried through a volume from one or more seed slices."""

    mask: np.ndarray  # bool, the volume's shape
    axis: int
    seeds: tuple[int, ...]  # the seed slices, ascending
    iou: np.ndarray  # float32 (D,): predicted IoU of each slice's final decode; NaN elsewhere and at a mask seed
    area: np.ndarray  # int64 (D,): mask pixels of each decoded slice (kept or not); -1 where not decoded
    kept: np.ndarray  # bool (D,): slices whose mask is in ``mask``
    visited: tuple[int, int]  # first and last slice decoded (inclusive)
    stops: dict[str, Stop]  # "down" (the lowest seed towards slice 0) and "up" (the highest seed upwards)
    settings: PropagationSettings
    encoded: int  # slices encoded (or fetched from the cache): those decoded plus any encoded ahead unused
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds: encode (worker), wait, decode, check (main)
    fronts: tuple[FrontReport, ...] = ()  # every front, the two outer ones included
    actions: tuple[str, ...] = ()  # per slice: "" (not decoded), seed, kept, tightened, dropped, collapsed, skipped
    checks: tuple[str, ...] = ()  # per slice: the check its first decode failed ("atypical": the appearance share
    #                               under the midpoint to the seed's, see evidence.Appearance.typical), "" if none
    boxes: np.ndarray | None = None  # float32 (D, 4): the box that gave each kept slice (NaN elsewhere)
    scores: np.ndarray | None = None  # float32 (D, 2): appearance shares (embedding, grey) of each check; NaN
    spacing: tuple[float, float, float] | None = None  # mm along the volume's axes, as given (None: 1 mm)
    notes: tuple[str, ...] = ()  # fallbacks taken (e.g. seeds that disagree)
    seed_states: tuple[Seed, ...] = field(default=(), repr=False)  # what corrections re-run from

    @property
    def seed(self) -> int:
        """The first seed slice (the only one for a single seed)."""
        return self.seeds[0]

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
        seeds = f"seed {self.seeds[0]}" if len(self.seeds) == 1 else f"seeds {', '.join(map(str, self.seeds))}"
        retried = self.actions.count("tightened")
        return (f"{seeds}, visited {self.visited[0]}..{self.visited[1]}, kept {self.kept_range}; "
                f"down: {down.reason} at {down.slice}, up: {up.reason} at {up.slice}"
                + (f"; {retried} slice(s) re-prompted" if retried else "")
                + "".join(f"; {note}" for note in self.notes))


class SlicePredictor(Protocol):
    """What propagation uses of a :class:`gmiseg_edge.runtime.predictor.Predictor`: its public interface, named
    here so that this module does not import the predictor (whose ``propagate`` method calls :func:`propagate`)."""

    def encode_many(self, images: list[np.ndarray]) -> list[Any]:
        """Encoded images (``EncodedImage``), one per uint8 slice."""

    def predict(self, image: Any, *, points=None, labels=None, box=None, mask_input=None) -> Prediction:
        """The prediction for one prompt on an encoded image."""

    @property
    def input_size(self) -> int:
        """The model's input side S (embedding cells cover S / 64 pixels of it)."""


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


# --------------------------------------------------------------------------- prompts


def mask_to_logits(mask: np.ndarray, prepared, input_size: int) -> np.ndarray:
    """A bool (H, W) mask as low-res logits (1, 1, 256, 256) in the model's padded S x S frame (the inverse
    of the predictor's post-processing): +MASK_LOGIT inside, -MASK_LOGIT outside."""
    height, width = prepared.resized_size
    frame = np.zeros((input_size, input_size), np.float32)
    frame[:height, :width] = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    low = cv2.resize(frame, (LOW_RES, LOW_RES), interpolation=cv2.INTER_AREA) if input_size != LOW_RES else frame
    return ((low - 0.5) * (2.0 * MASK_LOGIT)).astype(np.float32)[None, None]


def _boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3])


# --------------------------------------------------------------------------- propagation


@dataclass
class _Front:
    """One direction from one seed: the next slice to decode, the last it may decode, the previous result."""

    seed: Seed
    appearance: Appearance | None
    step: int
    next: int  # next slice to decode
    ahead: int  # next slice to request from the encoder
    limit: int  # the last slice this front may decode
    mask: np.ndarray
    logits: np.ndarray | None = None
    area: int = 0
    iou: float = float("nan")  # the previous slice's predicted IoU
    box: np.ndarray | None = None  # the last box given
    stop: Stop | None = None
    owned: list[int] = field(default_factory=list)  # slices this front asked the encoder for
    inner: bool = False  # bounded by another seed: the structure goes on to it
    before: np.ndarray | None = None  # extent [x0, y0, x1, y1] of the mask decoded before ``mask`` (None at a seed)


def _margin(mask: np.ndarray, geometry: Geometry, settings: PropagationSettings) -> tuple[float, float]:
    """(columns, rows) pixels a box grows by around a mask's extent: the boundary's reach in one slice (spacing)
    plus the slack a box prompt needs around its object (``margin`` of the extent, at least ``min_margin``)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    reach_x, reach_y = geometry.margin_px(0.0)
    slack_x = max(settings.min_margin, settings.margin * (cols[-1] - cols[0] + 1))
    slack_y = max(settings.min_margin, settings.margin * (rows[-1] - rows[0] + 1))
    return settings.reach * reach_x + slack_x, settings.reach * reach_y + slack_y


def _prior(front: _Front, geometry: Geometry, settings: PropagationSettings) -> np.ndarray:
    """The next slice's box: the previous mask's extent grown by the slack and the boundary's reach (from a seed),
    or by each side's last outward movement up to the reach (``follow_motion``), with inertia."""
    if not settings.follow_motion or front.before is None:
        box = grown_extent(front.mask, _margin(front.mask, geometry, settings))
    else:
        reach_x, reach_y = geometry.margin_px(0.0)
        reach = settings.reach * np.array([reach_x, reach_y, reach_x, reach_y], np.float32)
        mx, my = _margin(front.mask, geometry, settings)
        slack = np.array([mx, my, mx, my], np.float32) - reach
        extent = grown_extent(front.mask, (0.0, 0.0))
        outward = np.array([-1, -1, 1, 1], np.float32)
        moved = np.clip((extent - front.before) * outward, 0.0, reach)
        height, width = front.mask.shape
        box = np.clip(extent + outward * (slack + moved), 0.0, [width - 1, height - 1, width - 1, height - 1])
    if settings.inertia and front.box is not None:
        box = (1 - settings.inertia) * box + settings.inertia * front.box
    return box.astype(np.float32)


def _tighter(failed: np.ndarray, front: _Front, appearance: Appearance | None, pixels: np.ndarray,
             encoded: EncodedImage, geometry: Geometry, settings: PropagationSettings, input_size: int,
             ) -> np.ndarray:
    """The re-prompt's box (module docstring): the failed mask's part that is within the previous mask's reach and
    looks like the inside, or the previous mask's extent."""
    reach = np.zeros(failed.shape, bool)
    x0, y0, x1, y1 = grown_extent(front.mask, _margin(front.mask, geometry, settings))
    reach[int(np.floor(y0)):int(np.ceil(y1)) + 1, int(np.floor(x0)):int(np.ceil(x1)) + 1] = True
    part = failed & reach
    if appearance is not None and part.any():
        part &= appearance.inside_pixels(pixels) & appearance.inside_map(
            encoded.embedding, encoded.prepared.resized_size, input_size, failed.shape)
    if np.count_nonzero(part) >= settings.min_area:
        return grown_extent(part, (0.0, 0.0))
    return grown_extent(front.mask, (0.0, 0.0))


def _failure(prediction: Prediction, area: int, score: Score | None, front: _Front, geometry: Geometry,
             settings: PropagationSettings) -> tuple[str, str] | None:
    """(reason, detail) of the first check a slice fails, or None (``empty`` and ``area_collapse`` included)."""
    if area < settings.min_area:
        return "empty", f"{area} pixel(s) < {settings.min_area}"
    if score is not None and front.appearance is not None and not front.appearance.agrees(score):
        seed = front.appearance.seed
        return "appearance", (f"inside-like share embedding {score.embedding:.2f}, grey {score.grey:.2f} "
                              f"(seed {seed.embedding:.2f}, {seed.grey:.2f})")
    reference = max(front.area, settings.ratio_floor)
    if settings.check_growth and area > geometry.max_area(reference):
        return "area_growth", f"area {area} > {geometry.max_area(reference):.0f} (radius + {geometry.slice_mm:g} mm)"
    if prediction.score < settings.min_iou:
        return "low_iou", f"predicted IoU {prediction.score:.3f} < {settings.min_iou}"
    if prediction.score < front.iou - settings.iou_drop:
        return "iou_drop", f"predicted IoU {prediction.score:.3f} < {front.iou:.3f} - {settings.iou_drop}"
    if front.area >= settings.ratio_floor and area < settings.collapse * front.area:
        return "area_collapse", f"area {area} < {settings.collapse} x {front.area}"
    return None


class _Run:
    """One propagation: seeds decoded, fronts carried, results gathered (the module docstring's rules)."""

    def __init__(self, predictor: SlicePredictor, source: SliceSource, geometry: Geometry,
                 settings: PropagationSettings, progress: Callable[[int, int], None] | None,
                 span: tuple[int, int]) -> None:
        self.predictor, self.source, self.geometry, self.settings = predictor, source, geometry, settings
        self.progress = progress
        self.span = span  # slices this run may decode (inclusive)
        depth = source.depth
        self.iou = np.full(depth, np.nan, np.float32)
        self.area = np.full(depth, -1, np.int64)
        self.kept = np.zeros(depth, bool)
        self.masks: dict[int, np.ndarray] = {}
        self.boxes = np.full((depth, 4), np.nan, np.float32)
        self.scores = np.full((depth, 2), np.nan, np.float32)
        self.actions = [""] * depth
        self.why = [""] * depth  # the first decode's failed check, or "atypical"
        self.requested: set[int] = set()
        self.notes: list[str] = []
        self.done = 0
        self.timings = {"wait": 0.0, "decode": 0.0, "check": 0.0}
        self.prefetcher = _Prefetcher(predictor, source, background=settings.prefetch)
        self.fronts: list[_Front] = []

    # ---- encoding and decoding

    def request(self, indices: list[int]) -> None:
        fresh = [k for k in indices if k not in self.requested]
        self.requested.update(fresh)
        self.prefetcher.request(fresh)

    def top_up(self, current: _Front | None = None) -> None:
        """Request the next slices of the live fronts (``current`` first), alternately, a batch at a time, at most
        two batches ahead of the decoder (one without ``prefetch``); a part batch only when the encoder is idle."""
        batch = self.settings.batch_size

        def within(front: _Front, k: int) -> bool:
            return 0 <= k < self.source.depth and (k - front.limit) * front.step <= 0

        while True:
            live = sorted((f for f in self.fronts if f.stop is None), key=lambda f: f is not current)
            room = min(batch, (2 if self.settings.prefetch else 1) * batch - self.prefetcher.outstanding)
            picks: list[tuple[_Front, int]] = []
            cursors = [f.ahead for f in live]
            taken: set[int] = set()
            while len(picks) < room:
                moved = False
                for i, front in enumerate(live):
                    while within(front, cursors[i]) and (cursors[i] in self.requested or cursors[i] in taken):
                        cursors[i] += front.step
                    if len(picks) < room and within(front, cursors[i]):
                        picks.append((front, cursors[i]))
                        taken.add(cursors[i])
                        cursors[i] += front.step
                        moved = True
                if not moved:
                    break
            if not picks or (len(picks) < batch and self.prefetcher.busy):
                return
            for front, cursor in zip(live, cursors, strict=True):
                front.ahead = cursor
            for front, k in picks:
                front.owned.append(k)
            self.request([k for _, k in picks])

    def take(self, k: int) -> EncodedImage:
        t0 = time.perf_counter()
        self.requested.add(k)
        encoded = self.prefetcher.take(k)
        self.timings["wait"] += time.perf_counter() - t0
        return encoded

    def decode(self, encoded: EncodedImage, **prompt) -> Prediction:
        t0 = time.perf_counter()
        prediction = self.predictor.predict(encoded, **prompt)
        self.timings["decode"] += time.perf_counter() - t0
        return prediction

    def visited(self) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done, self.source.depth)

    def keep(self, k: int, mask: np.ndarray, action: str, box: np.ndarray | None = None) -> None:
        self.masks[k] = mask
        self.kept[k] = True
        self.actions[k] = action
        if box is not None:
            self.boxes[k] = box

    # ---- seeds

    def resolve(self, seeds: list[Seed]) -> list[tuple[Seed, Appearance | None]]:
        """Each seed decoded (a prompt) or taken as it is (a mask), with its appearance evidence."""
        batch = self.settings.batch_size
        order = [s.index for s in seeds]
        for i in range(0, len(order), batch):
            self.request(order[i:i + batch])
        resolved = []
        for seed in seeds:
            k = seed.index
            encoded = self.take(k)
            if seed.prompt is not None and seed.prompt.box is not None:
                self.boxes[k] = seed.prompt.box
            if seed.mask is not None and np.isfinite(seed.iou):
                self.iou[k] = seed.iou
            if seed.prompt is not None and seed.mask is None:
                p = seed.prompt
                prediction = self.decode(encoded, points=p.points, labels=p.labels, box=p.box)
                area = int(np.count_nonzero(prediction.mask))
                if area < self.settings.min_area:
                    raise InputError(f"the seed prompt gave an empty mask on slice {k} ({area} pixel(s), predicted "
                                     f"IoU {prediction.score:.2f}): nothing to propagate; check the prompt")
                seed = seed.resolved(prediction.mask, prediction.score)
                self.iou[k] = prediction.score
            assert seed.mask is not None
            self.area[k] = int(np.count_nonzero(seed.mask))
            appearance = None
            if self.settings.check_appearance:
                appearance = Appearance.from_seed(self.source.pixels(k), encoded.embedding,
                                                  encoded.prepared.resized_size, self.predictor.input_size,
                                                  seed.mask)
                self.scores[k] = (appearance.seed.embedding, appearance.seed.grey)
            self.keep(k, seed.mask, "seed")
            self.visited()
            resolved.append((seed, appearance))
        self._check_pairs(resolved)
        return resolved

    def _check_pairs(self, resolved: list[tuple[Seed, Appearance | None]]) -> None:
        """Consecutive seeds must overlap within the reach of the slices between them (an error otherwise)."""
        for (a, _), (b, _) in itertools.pairwise(resolved):
            assert a.mask is not None and b.mask is not None
            steps = b.index - a.index
            mx, my = self.geometry.margin_px(0.0)
            reach = grown_extent(a.mask, (mx * steps + 1, my * steps + 1))
            if not _boxes_overlap(reach, grown_extent(b.mask, (0.0, 0.0))):
                raise InputError(
                    f"the seeds on slices {a.index} and {b.index} do not overlap: {b.index}'s structure lies "
                    f"beyond where {a.index}'s can reach in {steps} slice(s) of {self.geometry.slice_mm:g} mm "
                    "(its boundary moves at most one slice thickness per slice); they look like different "
                    "structures: propagate each on its own, or check the slice numbers and the spacing")

    # ---- fronts

    def make_fronts(self, resolved: list[tuple[Seed, Appearance | None]]) -> None:
        lo, hi = self.span
        for i, (seed, appearance) in enumerate(resolved):
            k = seed.index
            below = resolved[i - 1][0].index if i > 0 else None
            above = resolved[i + 1][0].index if i + 1 < len(resolved) else None
            limits = {-1: lo if below is None else below + 1, 1: hi if above is None else above - 1}
            for step in (-1, 1):
                assert seed.mask is not None
                other = below if step < 0 else above
                front = _Front(seed, appearance, step, k + step, k + step, limits[step], seed.mask,
                               area=int(np.count_nonzero(seed.mask)), iou=seed.iou, inner=other is not None)
                self._maybe_stop(front)
                self.fronts.append(front)

    def _maybe_stop(self, front: _Front) -> None:
        """Stop a front whose next slice it may not decode: past the volume, another front's, or past its limit."""
        k = front.next
        if not 0 <= k < self.source.depth:
            front.stop = Stop("volume_end", k)
        elif self.kept[k]:
            front.stop = Stop("met", k, "given by another seed's front" if self.actions[k] != "seed" else "a seed")
            if front.next != front.seed.index + front.step and not (front.mask & self.masks[k]).any():
                j0, j1 = sorted((k - front.step, k))
                note = (f"two fronts met between slices {j0} and {j1} without overlapping: their seeds disagree "
                        "about where the structure is; each kept the slices it reached first")
                if note not in self.notes:
                    self.notes.append(note)
        elif (k - front.limit) * front.step > 0:
            front.stop = Stop("limit", k, "the end of the slices this run re-does")

    def advance(self, front: _Front) -> None:
        """Decode ``front``'s next slice, check it, keep it or re-prompt or stop (module docstring)."""
        settings, k = self.settings, front.next
        self.top_up(current=front)
        encoded = self.take(k)
        pixels = self.source.pixels(k) if front.appearance is not None else None
        box = _prior(front, self.geometry, settings)
        prompt: dict[str, Any] = {"box": box}
        if settings.mask_input and front.logits is not None:
            prompt["mask_input"] = front.logits
        prediction = self.decode(encoded, **prompt)
        failure, score = self._check(prediction, pixels, encoded, front)
        action = "kept"
        suspect = (failure is None and score is not None and front.appearance is not None
                   and not front.appearance.typical(score))
        self.why[k] = "atypical" if suspect else (failure[0] if failure is not None else "")
        if settings.retry and ((failure is not None and failure[0] in RETRIED) or suspect):
            tight = _tighter(prediction.mask, front, front.appearance, pixels, encoded, self.geometry, settings,
                             self.predictor.input_size)
            retried = self.decode(encoded, box=tight)
            again, again_score = self._check(retried, pixels, encoded, front)
            passes = again is None or again[0] == "area_collapse"
            better = not suspect or self._cut_is_surroundings(prediction.mask, retried.mask, pixels, encoded, front)
            if passes and better:
                prediction, box, score, action = retried, tight, again_score, "tightened"
                failure = again
        area = int(np.count_nonzero(prediction.mask))
        self.iou[k], self.area[k] = prediction.score, area
        if score is not None:
            self.scores[k] = (score.embedding, score.grey)
        self.visited()
        if front.inner and failure is not None and failure[0] in ("low_iou", "iou_drop", "area_collapse"):
            failure = None  # between two seeds the structure goes on: these rules say where it ends
        if front.inner and failure is not None:  # skip the slice and bridge it from the previous one
            self.actions[k] = "skipped"
            front.next += front.step
            self._maybe_stop(front)
            self._release(front)
            return
        if failure is None or (failure[0] == "area_collapse" and settings.keep_collapsed):
            self.keep(k, prediction.mask, "collapsed" if failure is not None else action, box)
        else:
            self.actions[k] = "dropped"
        front.before = grown_extent(front.mask, (0.0, 0.0))  # the previous mask is never empty
        front.mask, front.logits, front.area = prediction.mask, prediction.mask_input, area
        front.iou, front.box = prediction.score, box
        front.next += front.step
        if failure is not None:
            front.stop = Stop(failure[0], k, failure[1])
        else:
            self._maybe_stop(front)
        self._release(front)

    def _release(self, front: _Front) -> None:
        if front.stop is not None:  # its slices requested ahead are not needed
            ahead = [j for j in front.owned if self.area[j] < 0]
            self.prefetcher.drop(ahead)
            self.requested.difference_update(ahead)

    def _cut_is_surroundings(self, wide: np.ndarray, tight: np.ndarray, pixels: np.ndarray | None,
                             encoded: EncodedImage, front: _Front) -> bool:
        """Whether what the tighter mask leaves out of the wider one looks like the seed's surroundings (most of it,
        in the embedding or in grey levels): only then is the tighter answer to an atypical slice taken."""
        cut = wide & ~tight
        if front.appearance is None or pixels is None or np.count_nonzero(cut) < self.settings.min_area:
            return True
        score = front.appearance.score(pixels, encoded.embedding, encoded.prepared.resized_size,
                                       self.predictor.input_size, cut)
        return not front.appearance.agrees(score)

    def _check(self, prediction: Prediction, pixels: np.ndarray | None, encoded: EncodedImage,
               front: _Front) -> tuple[tuple[str, str] | None, Score | None]:
        t0 = time.perf_counter()
        area = int(np.count_nonzero(prediction.mask))
        score = None
        if front.appearance is not None and pixels is not None and area >= self.settings.min_area:
            score = front.appearance.score(pixels, encoded.embedding, encoded.prepared.resized_size,
                                           self.predictor.input_size, prediction.mask)
        failure = _failure(prediction, area, score, front, self.geometry, self.settings)
        self.timings["check"] += time.perf_counter() - t0
        return failure, score

    def carry(self) -> None:
        while True:
            live = [f for f in self.fronts if f.stop is None]
            if not live:
                return
            for front in live:
                if front.stop is None:
                    self._maybe_stop(front)
                if front.stop is None:
                    self.advance(front)

    def close(self) -> None:
        self.prefetcher.close()


def _geometry(spacing, source: SliceSource) -> Geometry:
    geometry = Geometry.of(spacing, source.axis)
    ratio = geometry.slice_mm / geometry.pixel_mm
    if ratio > 20 or ratio < 0.05:
        raise InputError(f"spacing {tuple(spacing)}: slices {geometry.slice_mm:g} mm apart with "
                         f"{geometry.pixel_mm:g} mm pixels (ratio {ratio:.3g}) is beyond what slice-to-slice "
                         "propagation can follow (1:20 to 20:1); check the spacing, or resample the volume")
    return geometry


def _result(run: _Run, out: np.ndarray, seeds: list[Seed], start: float, spacing) -> PropagationResult:
    decoded = np.flatnonzero(run.area >= 0)
    timings = dict(run.timings, encode=run.prefetcher.encode_seconds)
    outer = [f for f in run.fronts]
    down = next(f for f in outer if f.step < 0 and f.seed.index == seeds[0].index)
    up = next(f for f in outer if f.step > 0 and f.seed.index == seeds[-1].index)
    return PropagationResult(
        mask=out, axis=run.source.axis, seeds=tuple(s.index for s in seeds), iou=run.iou, area=run.area,
        kept=run.kept, visited=(int(decoded[0]), int(decoded[-1])),
        stops={"down": down.stop, "up": up.stop},  # type: ignore[dict-item]
        settings=run.settings, encoded=run.prefetcher.encoded, seconds=time.perf_counter() - start, timings=timings,
        fronts=tuple(FrontReport(f.seed.index, f.step, f.stop) for f in outer),  # type: ignore[arg-type]
        actions=tuple(run.actions), checks=tuple(run.why), boxes=run.boxes, scores=run.scores,
        spacing=None if spacing is None else tuple(float(v) for v in spacing), notes=tuple(run.notes),
        seed_states=tuple(seeds),
    )


def propagate(
    predictor: SlicePredictor,
    volume: np.ndarray,
    slice_index: int | None = None,
    *,
    box=None,
    points=None,
    labels=None,
    mask=None,
    seeds=None,
    axis: int = 2,
    window: Window | None = None,
    spacing=None,
    settings: PropagationSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PropagationResult:
    """Carry the structure prompted on one or more slices of ``volume`` through its neighbours (module
    docstring).

    One seed: ``slice_index`` with ``box``/``points``/``labels`` as for :meth:`Predictor.predict` (pixels of
    the slice), or ``mask``: the labelled slice (H, W) (or a volume-shaped mask, whose slice ``slice_index`` is
    taken), kept as that slice's result. Several: ``seeds=[(k, box), (k, {"box": ..., "points": ...}), (k,
    mask2d), ...]`` or a sparse label map (volume-shaped; each labelled slice is a seed). ``spacing``: mm along
    the volume's three axes (None: 1 mm, isotropic); it sets how far the structure may move between slices.
    ``progress(slices decoded, depth)`` is called after each slice."""
    settings = settings or PropagationSettings()
    start = time.perf_counter()
    source = SliceSource(volume, axis, window)
    geometry = _geometry(spacing, source)
    seeds = parse_seeds(source, slice_index, box, points, labels, mask, seeds)  # before encoding
    run = _Run(predictor, source, geometry, settings, progress, (0, source.depth - 1))
    try:
        resolved = run.resolve(seeds)
        run.make_fronts(resolved)
        run.carry()
    finally:
        run.close()
    out = np.zeros(volume.shape, dtype=bool)
    for k, m in run.masks.items():
        source.put(out, k, m)
    return _result(run, out, [s for s, _ in resolved], start, spacing)


def correct(
    predictor: SlicePredictor,
    volume: np.ndarray,
    result: PropagationResult,
    slice_index: int,
    *,
    box=None,
    points=None,
    labels=None,
    mask=None,
    window: Window | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PropagationResult:
    """"Slice ``slice_index`` is wrong, here is a box/click (or its mask)": that slice becomes a seed (replacing
    a seed there) and only the slices between the nearest other seeds on either side of it (or the volume's ends)
    are re-run, from those seeds and the new one; every other slice keeps ``result``'s mask. ``volume``,
    ``window`` and the axis, spacing and settings are those of the run that gave ``result``."""
    start = time.perf_counter()
    source = SliceSource(volume, result.axis, window)
    if result.mask.shape != volume.shape:
        raise InputError(f"result of shape {result.mask.shape} is not this volume's {volume.shape}")
    geometry = _geometry(result.spacing, source)
    new = parse_seeds(source, slice_index, box, points, labels, mask)[0]
    others = [s for s in result.seed_states if s.index != new.index]
    below = [s for s in others if s.index < new.index]
    above = [s for s in others if s.index > new.index]
    span = (below[-1].index if below else 0, above[0].index if above else source.depth - 1)
    seeds = ([below[-1]] if below else []) + [new] + ([above[0]] if above else [])
    run = _Run(predictor, source, geometry, result.settings, progress, span)
    try:
        resolved = run.resolve(seeds)
        run.make_fronts(resolved)
        outside = [f for f in run.fronts if (f.step < 0 and below and f.seed.index == span[0])
                   or (f.step > 0 and above and f.seed.index == span[1])]
        for front in outside:  # the neighbouring seeds' outer fronts belong to the untouched slices
            front.stop = Stop("limit", front.next, "outside the slices this correction re-does")
        run.carry()
    finally:
        run.close()
    lo, hi = span
    kept = result.kept.copy()
    kept[lo:hi + 1] = run.kept[lo:hi + 1]
    out = result.mask.copy()
    window = np.moveaxis(out, source.axis, 0)
    window[lo:hi + 1] = False
    for k, m in run.masks.items():
        source.put(out, k, m)
    iou, area, boxes, scores = result.iou.copy(), result.area.copy(), None, None
    iou[lo:hi + 1], area[lo:hi + 1] = run.iou[lo:hi + 1], run.area[lo:hi + 1]
    actions = list(result.actions) or [""] * source.depth
    actions[lo:hi + 1] = run.actions[lo:hi + 1]
    checks = list(result.checks) or [""] * source.depth
    checks[lo:hi + 1] = run.why[lo:hi + 1]
    if result.boxes is not None:
        boxes = result.boxes.copy()
        boxes[lo:hi + 1] = run.boxes[lo:hi + 1]
    if result.scores is not None:
        scores = result.scores.copy()
        scores[lo:hi + 1] = run.scores[lo:hi + 1]
    new_seeds = sorted([*others, next(s for s, _ in resolved if s.index == new.index)], key=lambda s: s.index)
    kept_fronts = [f for f in result.fronts if not (lo < f.seed < hi or (f.seed == lo and f.step > 0)
                                                    or (f.seed == hi and f.step < 0))]
    fronts = sorted(kept_fronts + [FrontReport(f.seed.index, f.step, f.stop)  # type: ignore[arg-type]
                                   for f in run.fronts if all(f is not o for o in outside)],
                    key=lambda f: (f.seed, f.step))
    outer_down = next((f for f in fronts if f.step < 0 and f.seed == new_seeds[0].index), None)
    outer_up = next((f for f in fronts if f.step > 0 and f.seed == new_seeds[-1].index), None)
    decoded = np.flatnonzero(area >= 0)
    return PropagationResult(
        mask=out, axis=result.axis, seeds=tuple(s.index for s in new_seeds), iou=iou, area=area, kept=kept,
        visited=(int(decoded[0]), int(decoded[-1])),
        stops={"down": outer_down.stop if outer_down else result.stops["down"],
               "up": outer_up.stop if outer_up else result.stops["up"]},
        settings=result.settings, encoded=run.prefetcher.encoded, seconds=time.perf_counter() - start,
        timings=dict(run.timings, encode=run.prefetcher.encode_seconds), fronts=tuple(fronts),
        actions=tuple(actions), checks=tuple(checks), boxes=boxes, scores=scores, spacing=result.spacing,
        notes=tuple(dict.fromkeys([*result.notes, *run.notes])), seed_states=tuple(new_seeds),
    )
