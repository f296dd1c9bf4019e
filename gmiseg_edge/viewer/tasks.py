"""The widget's long jobs, Qt-free: each a plain function run in a worker thread, reporting ``progress(done,
total)`` and stopping at the next report once ``cancel`` is set (:class:`Cancelled`), and an :class:`Outcome`
that carries the result or the error message, never an exception (no traceback dialog reaches the user)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gmiseg_edge.core.errors import GmisegError

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


class Cancelled(Exception):  # noqa: N818 - a request, not a failure
    """The user cancelled the job."""


@dataclass(frozen=True)
class Outcome:
    """What a job gave: ``value``, or ``error`` (a message for the user), or ``cancelled``."""

    value: Any = None
    error: str | None = None
    cancelled: bool = False


def run_job(job: Callable[[Progress], Any], cancel: threading.Event, report: Progress | None = None) -> Outcome:
    """Run ``job(progress)``; ``progress`` forwards to ``report`` and raises :class:`Cancelled` once ``cancel`` is
    set. Expected errors (bad input, a model or server problem) become their message; others their type and
    message, with the traceback in the log."""

    def progress(done: int, total: int) -> None:
        if cancel.is_set():
            raise Cancelled
        if report is not None:
            report(done, total)

    try:
        if cancel.is_set():
            raise Cancelled
        return Outcome(value=job(progress))
    except Cancelled:
        return Outcome(cancelled=True)
    except (GmisegError, ValueError, OSError) as exc:
        return Outcome(error=str(exc))
    except Exception as exc:  # a bug: the user still gets a message, the log the traceback
        log.exception("viewer job failed")
        return Outcome(error=f"{type(exc).__name__}: {exc}")


def propagate_job(predictor: Any, volume: np.ndarray, window: Any, seed: int, seed_mask: np.ndarray,
                  spacing: tuple[float, float, float] | None = None) -> Callable[[Progress], Any]:
    """Propagation of a labelled slice through a (W, H, D) volume (the runtime's ``propagate``, slices along axis
    2, intensities mapped with ``window`` as the widget's slices are); ``seed_mask`` is the seed slice (H, W);
    ``spacing``: mm along (W, H, D), the volume's order (None: 1 mm)."""

    def job(progress: Progress) -> Any:
        return predictor.propagate(volume, seed, mask=seed_mask, axis=2, window=window, spacing=spacing,
                                   progress=progress)

    return job


def correct_job(predictor: Any, volume: np.ndarray, window: Any, result: Any, slice_index: int,
                mask: np.ndarray) -> Callable[[Progress], Any]:
    """A propagation corrected on one slice (the runtime's ``propagate.correct``): ``mask`` (H, W) is that slice's
    fixed mask; only the slices between it and the nearest other seeds are re-run."""

    def job(progress: Progress) -> Any:
        from gmiseg_edge.runtime.propagate import correct

        return correct(predictor, volume, result, slice_index, mask=mask, window=window, progress=progress)

    return job


def support_volume_job(segmenter: Any, pixels: Callable[[int], np.ndarray], depth: int,
                       spacing: tuple[float, float] | None = None) -> Callable[[Progress], Any]:
    """The support set through every slice of a volume (the runtime's ``segment_volume``); ``spacing``: the
    slices' (row mm, col mm) pixel size."""

    def job(progress: Progress) -> Any:
        from gmiseg_edge.runtime.support_volume import segment_volume

        return segment_volume(segmenter, pixels, depth, progress=progress, spacing=spacing)

    return job
