"""Whole-volume accuracy of propagation (DESIGN §10): one seeded box on the slice of largest area, carried
through the volume by :meth:`~gmiseg_edge.runtime.predictor.Predictor.propagate`, scored in 3D (Dice, Jaccard,
ASD and HD95 in mm with the voxel spacing of the header, and NSD at ``nsd_tolerance_mm``).

Cases: every labelled structure of the shipped sample volumes (``"samples"``), or every volume of a dataset
folder. The seed box is the seed slice mask's extent pushed out by 0..``box_offset`` pixels per side, seeded
like the 2D prompts (``numpy.random.default_rng([seed, case index])``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmiseg_edge.core.prompts import simulate_box
from gmiseg_edge.data import Volume, find_pairs, select_label
from gmiseg_edge.data.intensity import Window
from gmiseg_edge.data.samples import load_sample_pair, sample_index
from gmiseg_edge.data.slicing import largest_index, slice_2d
from gmiseg_edge.metrics import normalized_surface_dice, score

AXIS = 2  # slices along the last axis, as ``segment`` carries them


@dataclass(frozen=True, eq=False)
class VolumeCase:
    """One structure of one volume: raw intensities, bool mask, voxel spacing (mm) and its window."""

    name: str
    volume: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, ...]
    dataset: str
    window: Window


def case_window(entry: dict) -> Window:
    """The window of a ``cases.json`` entry: its ``window`` key, else the legacy ``normalisation``, else
    ``percentile``; a JSON list [low, high] becomes a tuple."""
    window = entry.get("window", entry.get("normalisation", "percentile"))
    return tuple(window) if isinstance(window, list) else window


def sample_volume_cases() -> Iterator[VolumeCase]:
    """Each labelled structure of the shipped volumes, with the window of ``cases.json``."""
    for entry in sample_index():
        image, labels = load_sample_pair(entry["name"])
        if not isinstance(image, Volume):
            continue
        window = case_window(entry)
        for label, value in entry["labels"].items():
            mask = select_label(labels.array, value, path=labels.path)
            if mask.any():
                yield VolumeCase(f"{entry['name']}/{label}", image.array, mask, tuple(image.spacing),
                                 f"{entry['modality']} volumes", window)


def folder_volume_cases(root: str | Path, window: Window) -> Iterator[VolumeCase]:
    """Each volume of a dataset folder (2D pairs are skipped: nothing to propagate through)."""
    for pair in find_pairs(root):
        image, labels = pair.read()
        if isinstance(image, Volume):
            mask = select_label(labels.array, pair.label, path=labels.path)
            yield VolumeCase(pair.name, image.array, mask, tuple(image.spacing), Path(root).name, window)


@dataclass(frozen=True)
class VolumeScore:
    """3D scores of one propagated structure, and where propagation went."""

    name: str
    dataset: str
    seed: int
    box: list[float]
    scores: object  # SegmentationScores
    nsd: float
    summary: str


def evaluate_propagation(predictor, cases: list[VolumeCase], seed: int = 0, box_offset: int = 5,
                         nsd_tolerance_mm: float = 2.0,
                         progress: Callable[[str], None] | None = None) -> list[VolumeScore]:
    """Propagate each case from its seeded box and score it in 3D (module docstring)."""
    out = []
    for index, case in enumerate(cases):
        k = largest_index(case.mask, AXIS)
        box = simulate_box(slice_2d(case.mask, AXIS, k), np.random.default_rng([seed, index]), box_offset)
        result = predictor.propagate(case.volume, k, box=box, axis=AXIS, window=case.window)
        out.append(VolumeScore(case.name, case.dataset, k, box.tolist(), score(result.mask, case.mask, case.spacing),
                               normalized_surface_dice(result.mask, case.mask, case.spacing, nsd_tolerance_mm),
                               result.summary()))
        if progress is not None:
            progress(case.name)
    return out
