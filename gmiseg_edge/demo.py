"""The main job on the built-in model and sample data: box-prompt segmentation of every sample case, scored.

Until the ONNX runtime lands this runs the PyTorch reference pipeline (our preprocessing, the zoo model,
our post-processing); the figures are real segmentations of the shipped scans.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gmiseg_edge.metrics import SegmentationScores, score


@dataclass(frozen=True)
class CaseResult:
    """One sample case segmented with a box prompt."""

    name: str
    modality: str
    shape: tuple[int, int]
    box: tuple[int, int, int, int]
    scores: SegmentationScores
    predicted_iou: float
    encode_s: float
    decode_s: float


def box_from_mask(mask: np.ndarray) -> np.ndarray:
    """The tight box [x0, y0, x1, y1] (pixel indices, inclusive) around a non-empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("cannot make a box from an empty mask")
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)


def run_demo(
    model_name: str = "lite_medsam",
    on_case: Callable[[CaseResult], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[CaseResult]:
    """Segment every shipped sample case with a box from its label's extent; return per-case scores."""
    from gmiseg_edge.data.samples import load_sample_cases
    from gmiseg_edge.models.build import build_model
    from gmiseg_edge.models.reference import TorchPredictor
    from gmiseg_edge.models.weights import resolve_weights
    from gmiseg_edge.models.zoo import get_spec

    spec = get_spec(model_name)
    resolve_weights(model_name, log=log)
    predictor = TorchPredictor(build_model(model_name), spec)
    results = []
    for case in load_sample_cases():
        box = box_from_mask(case.mask)
        start = time.perf_counter()
        prepared, embedding = predictor.encode(case.image)
        encoded = time.perf_counter()
        prediction = predictor.decode(prepared, embedding, box=box)
        decoded = time.perf_counter()
        result = CaseResult(
            name=case.name,
            modality=case.modality,
            shape=tuple(case.image.shape[:2]),
            box=tuple(int(v) for v in box),
            scores=score(prediction.best_mask(), case.mask, case.spacing),
            predicted_iou=float(prediction.iou.max()),
            encode_s=encoded - start,
            decode_s=decoded - encoded,
        )
        results.append(result)
        if on_case is not None:
            on_case(result)
    return results
