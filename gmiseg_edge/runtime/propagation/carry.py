"""One propagation run: seeds decoded, fronts carried slice by slice, each slice checked, re-prompted, kept,
skipped or stopped (the rules are in :mod:`gmiseg_edge.runtime.propagate`'s docstring)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.graph_io import LOW_RES
from gmiseg_edge.core.prediction import Prediction
from gmiseg_edge.runtime.propagation.evidence import Appearance, Geometry, Score, grown_extent
from gmiseg_edge.runtime.propagation.report import RETRIED, PropagationSettings, Stop
from gmiseg_edge.runtime.propagation.seeds import Seed
from gmiseg_edge.runtime.propagation.source import Prefetcher, SlicePredictor, SliceSource

EncodedImage = Any  # gmiseg_edge.runtime.predictor.EncodedImage (not imported: the predictor imports propagation)
MASK_LOGIT = 10.0  # |logit| given to a seed mask's pixels in its mask_input (lite_medsam's own are ~10-20)


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
    plus the slack a box prompt needs around its object: ``min_margin`` pixels (a mask's extent is known to a
    pixel or two), or ``margin`` of the extent where that is more. The default ``margin`` is 0: how far a boundary
    moves from one slice to the next depends on the slice thickness (the reach), not on the structure's size, and
    a box looser than the seed's exact one draws in the surroundings (mobile_sam, sample CT spleen: the seed mask's
    extent grown by a tenth of it and the reach gave a neighbour on the next slice, Dice 0.04; BENCHMARKS.md)."""
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
        # an outward movement under one pixel cannot be seen in pixel extents: each side is allowed at least one
        moved = np.clip((extent - front.before) * outward, np.minimum(reach, 1.0), reach)
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
             settings: PropagationSettings, appearance: bool = True) -> tuple[str, str] | None:
    """(reason, detail) of the first check a slice fails, or None (``empty`` and ``area_collapse`` included);
    ``appearance=False`` leaves out the appearance check (overruled by the continuity vote)."""
    if area < settings.min_area:
        return "empty", f"{area} pixel(s) < {settings.min_area}"
    if appearance and score is not None and front.appearance is not None and not front.appearance.agrees(score):
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


class Run:
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
        self.prefetcher = Prefetcher(predictor, source, background=settings.prefetch)
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
        if (settings.continuity_vote and failure is not None and failure[0] == "appearance" and score is not None
                and front.appearance is not None and front.appearance.partly_typical(score)
                and self.geometry.continuous(front.mask, prediction.mask)):
            # two kinds of evidence of three (one appearance share, the geometry) say the structure goes on; the
            # other checks still apply
            failure = _failure(prediction, int(np.count_nonzero(prediction.mask)), score, front, self.geometry,
                               settings, appearance=False)
            action = "continued" if failure is None else action
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


def checked_geometry(spacing, source: SliceSource) -> Geometry:
    """The slice geometry of ``spacing`` along ``source``'s axis; an input error beyond 20:1 either way."""
    geometry = Geometry.of(spacing, source.axis)
    ratio = geometry.slice_mm / geometry.pixel_mm
    if ratio > 20 or ratio < 0.05:
        raise InputError(f"spacing {tuple(spacing)}: slices {geometry.slice_mm:g} mm apart with "
                         f"{geometry.pixel_mm:g} mm pixels (ratio {ratio:.3g}) is beyond what slice-to-slice "
                         "propagation can follow (1:20 to 20:1); check the spacing, or resample the volume")
    return geometry
