"""Propagate one structure through a volume from prompts on one or more slices (DESIGN §10, issue 28).

A seed is a prompt on one slice (a box and/or points, in pixels of the slice as :func:`gmiseg_edge.data.slice_2d`
shows it: rows = the higher remaining axis, columns = the lower one) or a labelled mask of that slice; several
seeds (``seeds=[(k, box), ...]``, or a sparse label map whose labelled slices are the seeds) are all used. From
each seed the structure is carried slice by slice in both directions; between two seeds the two fronts fill the
slices until they meet, and where one stops early the other carries on to the far seed.

**Carrying** (box-only prompts, no ``mask_input``): the previous slice's mask gives the next slice's box, its
extent grown by the slack a box prompt needs (``min_margin`` pixels; by default no share of the structure's size:
``margin``) and by how far the structure's boundary can move from one slice to the next, from the voxel spacing
(``spacing``, mm: a surface meeting the slice plane at 45 degrees or more moves at most one slice thickness
in-plane: the reach).
From a seed, where no movement has been seen, each side grows by the whole reach; after that, by the outward
movement of that side between the last two masks (the surface's slope is continuous from one slice to the next),
at least one pixel (a smaller movement cannot be seen in pixel extents) and at most the reach (``follow_motion``;
where the reach is one pixel, as on slices no thicker than the pixels, nothing changes; on 5-6.5 mm slices of
0.6-0.8 mm pixels the reach is 8 pixels, and a box 8 pixels too wide on each side of a small lesion draws in its
surroundings). The box is then moved only part way from the last box (``inertia``: one under-segmented slice
does not shrink every box after it). The previous mask is not fed back as ``mask_input``: a leak in it is
carried on (lite_medsam lost 0.18-0.46 Dice per organ with it, BENCHMARKS.md).

**Checking** each slice against its seed's evidence (:mod:`gmiseg_edge.runtime.propagation.evidence`):

- ``appearance``: most of the mask must look like the seed's structure rather than its surroundings, in the image
  embedding (the share of its cells nearer the prototype of the seed mask's cells than that of a ring around it)
  and in grey levels (the share of its pixels likelier under the seed mask's histogram than the ring's); a mask
  with either share under the midpoint between a half and the seed's own is atypical (re-prompted, below);
- ``area_growth``: its equivalent radius may grow by at most one slice thickness (mm) plus a pixel;
- ``low_iou`` / ``iou_drop``: the decoder's predicted IoU under ``min_iou``, or more than ``iou_drop`` below the
  previous slice's.

**Continuity vote** (``continuity_vote``, off by default): a slice that fails only ``appearance``, with one of its
two shares still at least a half, is kept without a re-prompt (``actions[k] == "continued"``, ``checks[k] ==
"appearance"``) where its mask is continuous with the previous one: its equivalent radius and its centroid within
one slice thickness plus a pixel of the previous mask's (the bound of ``area_growth``, both ways, and on position).
Two kinds of evidence of three (one share, the geometry) then say the structure goes on. It is meant for structures
only two or three embedding cells across (a vessel of 3 mm pixels), whose embedding share is mostly that of their
edge cells: the CT a aorta, 6 x 6 pixels, failed on an embedding share of 0.32 with a grey share of 0.79, its area
and position unchanged. Off by default: over the benchmark it lifts the aorta (0.466 -> 0.711), the IVC and a thick-
slice lesion, and lets two others run a slice or more past their labelled ends (BENCHMARKS.md, issue 28).

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

import time
from collections.abc import Callable

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.data.intensity import Window
from gmiseg_edge.runtime.propagation.carry import Run, checked_geometry
from gmiseg_edge.runtime.propagation.report import (
    STOP_REASONS,
    FrontReport,
    PropagationResult,
    PropagationSettings,
    Stop,
)
from gmiseg_edge.runtime.propagation.seeds import Seed, parse_seeds
from gmiseg_edge.runtime.propagation.source import SlicePredictor, SliceSource

__all__ = ["STOP_REASONS", "FrontReport", "PropagationResult", "PropagationSettings", "SlicePredictor", "SliceSource",
           "Stop", "correct", "propagate"]


def _result(run: Run, out: np.ndarray, seeds: list[Seed], start: float, spacing) -> PropagationResult:
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
    geometry = checked_geometry(spacing, source)
    seeds = parse_seeds(source, slice_index, box, points, labels, mask, seeds)  # before encoding
    run = Run(predictor, source, geometry, settings, progress, (0, source.depth - 1))
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
    geometry = checked_geometry(result.spacing, source)
    new = parse_seeds(source, slice_index, box, points, labels, mask)[0]
    others = [s for s in result.seed_states if s.index != new.index]
    below = [s for s in others if s.index < new.index]
    above = [s for s in others if s.index > new.index]
    span = (below[-1].index if below else 0, above[0].index if above else source.depth - 1)
    seeds = ([below[-1]] if below else []) + [new] + ([above[0]] if above else [])
    run = Run(predictor, source, geometry, result.settings, progress, span)
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
