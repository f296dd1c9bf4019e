"""Calibration sets: real slices from a data folder, preprocessed exactly as the runtime does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmiseg_edge.core.errors import DataError
from gmiseg_edge.core.transforms import PreprocessConfig, preprocess
from gmiseg_edge.data import Volume, find_pairs, to_uint8, volume_slices
from gmiseg_edge.data.samples import load_sample_cases

SAMPLES = "samples"  # --calib samples: the shipped sample cases below
# Calibrate on these sample cases; the others stay held out to check INT8 accuracy.
SAMPLE_CALIBRATION_CASES = ("brain1", "lung2", "totalseg_abdomen")


@dataclass(frozen=True)
class CalibrationSlice:
    """One calibration image (uint8, as the runtime receives it) and the name of where it came from."""

    name: str
    image: np.ndarray


def calibration_slices(source: str | Path, limit: int = 16) -> list[CalibrationSlice]:
    """Up to ``limit`` real slices, evenly spread over ``source``.

    ``source`` is a dataset folder (``images/`` + ``masks/`` or ``dataset.json``; every slice that holds a
    label, intensities normalised like the sample data: 2D uint8 as is, others by percentile scaling) or
    ``"samples"`` for every labelled slice of the shipped sample cases in ``SAMPLE_CALIBRATION_CASES`` (the
    other cases are held out to check accuracy).
    """
    if str(source) == SAMPLES:

        cases = load_sample_cases(list(SAMPLE_CALIBRATION_CASES), slices="all")
        slices = [CalibrationSlice(c.name, c.image) for c in cases]
    else:
        slices = _folder_slices(Path(source))
    if not slices:
        raise DataError(f"{source}: no calibration image found (an empty calibration folder?)")
    if len(slices) > limit:
        picks = np.linspace(0, len(slices) - 1, limit).round().astype(int)
        slices = [slices[i] for i in sorted(set(picks.tolist()))]
    return slices


def _folder_slices(folder: Path) -> list[CalibrationSlice]:

    if not folder.is_dir():
        raise DataError(f"{folder}: calibration folder not found")
    out = []
    for pair in find_pairs(folder):
        image, mask = pair.read()
        if isinstance(image, Volume):
            for item in volume_slices(image, mask, label=pair.label, mode="labelled"):
                out.append(CalibrationSlice(f"{pair.name}[{item.index}]", to_uint8(item.image)))
        else:
            out.append(CalibrationSlice(pair.name, to_uint8(image.array)))
    return out


def calibration_inputs(slices: Sequence[CalibrationSlice], config: PreprocessConfig) -> list[np.ndarray]:
    """Encoder inputs (1, 3, S, S) float32 for each slice, via the runtime's own preprocessing."""

    return [preprocess(s.image, config, name=s.name).tensor for s in slices]
