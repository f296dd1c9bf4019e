"""What a propagation run is told (:class:`PropagationSettings`) and what it reports (:class:`PropagationResult`,
its fronts' :class:`Stop` reasons); the rules are in :mod:`gmiseg_edge.runtime.propagate`'s docstring."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gmiseg_edge.runtime.propagation.seeds import Seed

STOP_REASONS = (
    "volume_end", "met", "limit", "empty", "appearance", "area_growth", "low_iou", "iou_drop", "area_collapse")
RETRIED = ("appearance", "area_growth", "low_iou", "iou_drop")  # failures re-prompted from a tighter prior


@dataclass(frozen=True)
class PropagationSettings:
    """How propagation carries the structure and when it stops (see the module docstring)."""

    min_iou: float = 0.5
    iou_drop: float = 0.15  # fails when the predicted IoU falls more than this below the previous slice's
    collapse: float = 0.2
    keep_collapsed: bool = True
    min_area: int = 4  # pixels: a smaller mask is empty
    ratio_floor: int = 16  # pixels: area ratios compare with at least this many
    margin: float = 0.0  # box slack: this fraction of the mask's extent on each side (0: none, see carry._margin)
    min_margin: float = 2.0  # ... and at least this many pixels, ...
    reach: float = 1.0  # ... plus this many slice thicknesses (in pixels of the slice: the boundary's reach)
    follow_motion: bool = True  # past a seed, each side grows by its last outward movement (at most the reach)
    check_appearance: bool = True  # the appearance check (module docstring)
    check_growth: bool = True  # the area-growth bound from the spacing
    retry: bool = True  # re-prompt a failed slice from a tighter prior before stopping
    continuity_vote: bool = False  # an appearance failure with one share still at least a half is overruled where
    #                                the mask is continuous with the previous one (evidence.Geometry.continuous)
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
    actions: tuple[str, ...] = ()  # per slice: "" (not decoded), seed, kept, tightened, dropped, collapsed, skipped,
    #                                continued (an appearance failure overruled by the continuity vote)
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
