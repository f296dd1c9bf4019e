"""The slices a propagation reads (:class:`SliceSource`: one intensity mapping for the whole volume) and the
background encoder that keeps a few of them encoded ahead of the decoder (:class:`Prefetcher`)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.prediction import Prediction
from gmiseg_edge.data.intensity import Window, rescale_to_uint8, window_range

_PERCENTILE_SAMPLE = 4_000_000  # voxels sampled for volume percentiles


class SlicePredictor(Protocol):
    """What propagation uses of a :class:`gmiseg_edge.runtime.predictor.Predictor`: its public interface, named
    here so that propagation does not import the predictor (whose ``propagate`` method calls :func:`propagate`)."""

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


class Prefetcher:
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
