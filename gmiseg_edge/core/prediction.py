"""A prompt's decoded masks, and SAM's rule for which of the decoder's four outputs is returned.

The decoder always gives four masks: index 0 is the single-mask output, 1-3 the multimask outputs. A single
point alone is ambiguous (part, object or group), so its three multimask outputs are candidates and the one
with the best predicted IoU is chosen; any other prompt (a box, several points, a previous mask as
``mask_input``) is unambiguous and gets the single-mask output. Post-processing: logits resized to the
original image (:func:`~gmiseg_edge.core.transforms.postprocess_logits`), then threshold 0.

Several objects decoded in one call (:class:`ObjectPredictions`) follow the same rule object by object; their
post-processing is one vectorised call, and they merge into one label map (object k -> label k + 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from gmiseg_edge.core.transforms import ImageGeometry, postprocess_logits

SINGLE_OUTPUT = (0,)
MULTIMASK_OUTPUTS = (1, 2, 3)


def output_choice(ambiguous: bool, multimask: bool | None = None) -> tuple[int, ...]:
    """The candidate outputs for a prompt (``multimask`` overrides the rule when not None)."""
    return MULTIMASK_OUTPUTS if (ambiguous if multimask is None else bool(multimask)) else SINGLE_OUTPUT


@dataclass(frozen=True)
class Prediction:
    """The candidate outputs of one prompt and the chosen one.

    ``outputs`` are the decoder output indices of the candidates ((0,) single-mask, (1, 2, 3) multimask);
    ``index`` picks the chosen candidate. Arrays hold one row per candidate.
    """

    masks: np.ndarray  # bool (K, H, W) at the original size
    logits: np.ndarray  # float32 (K, H, W)
    low_res_logits: np.ndarray  # float32 (K, 256, 256)
    iou: np.ndarray  # float32 (K,) predicted IoU
    index: int
    outputs: tuple[int, ...]

    @property
    def mask(self) -> np.ndarray:
        """The chosen mask, bool (H, W)."""
        return self.masks[self.index]

    @property
    def score(self) -> float:
        """Predicted IoU of the chosen mask."""
        return float(self.iou[self.index])

    @property
    def mask_input(self) -> np.ndarray:
        """The chosen low-res logits as a next ``mask_input`` (1, 1, 256, 256)."""
        return self.low_res_logits[self.index][None, None]


def make_prediction(
    prepared: ImageGeometry, low_res: np.ndarray, iou: np.ndarray, outputs: tuple[int, ...], input_size: int
) -> Prediction:
    """Candidates ``outputs`` of the decoder's (4, 256, 256) logits and (4,) IoU, post-processed."""
    chosen_low = np.ascontiguousarray(low_res[list(outputs)], dtype=np.float32)
    chosen_iou = np.asarray(iou[list(outputs)], dtype=np.float32)
    logits = postprocess_logits(chosen_low, prepared, input_size)
    return Prediction(
        masks=logits > 0, logits=logits, low_res_logits=chosen_low, iou=chosen_iou,
        index=int(np.argmax(chosen_iou)), outputs=tuple(outputs),
    )


def label_dtype(count: int) -> np.dtype:
    """The smallest unsigned integer type holding labels 0..``count``."""
    return np.dtype(np.uint8 if count < 256 else np.uint16 if count < 65536 else np.uint32)


class ObjectPredictions(Sequence[Prediction]):
    """The predictions of K objects decoded together on one image: a sequence of :class:`Prediction` (object k
    is ``self[k]``), with the chosen masks stacked and merged into one label map."""

    def __init__(self, predictions: Sequence[Prediction], size: tuple[int, int]) -> None:
        self.predictions = tuple(predictions)
        self.size = size  # (H, W) of the image

    def __len__(self) -> int:
        return len(self.predictions)

    @overload
    def __getitem__(self, index: int) -> Prediction: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Prediction]: ...
    def __getitem__(self, index):
        return self.predictions[index]

    @property
    def masks(self) -> np.ndarray:
        """Each object's chosen mask, bool (K, H, W)."""
        return np.stack([p.mask for p in self.predictions]) if self.predictions else np.zeros((0, *self.size), bool)

    @property
    def scores(self) -> np.ndarray:
        """Each object's predicted IoU, float32 (K,)."""
        return np.asarray([p.score for p in self.predictions], np.float32)

    def label_map(self) -> np.ndarray:
        """(H, W) labels: object k (0-based) is label k + 1, background 0, in the smallest unsigned type that
        holds K. Where masks overlap, the pixel goes to the object with the larger logit there."""
        labels = np.zeros(self.size, label_dtype(len(self)))
        best = np.zeros(self.size, np.float32)  # the winning logit so far; a pixel needs one > 0
        for k, prediction in enumerate(self.predictions, start=1):
            logits = prediction.logits[prediction.index]
            wins = logits > best
            labels[wins] = k
            best[wins] = logits[wins]
        return labels


def make_object_predictions(
    prepared: ImageGeometry, low_res: np.ndarray, iou: np.ndarray, outputs: Sequence[tuple[int, ...]],
    input_size: int,
) -> ObjectPredictions:
    """Post-process K objects at once: the candidates ``outputs[k]`` of each object's (4, 256, 256) logits in
    ``low_res`` (K, 4, 256, 256) and IoU (K, 4), resized to the original image in one vectorised call."""
    rows = np.asarray([k for k, chosen in enumerate(outputs) for _ in chosen], np.intp)
    cols = np.asarray([i for chosen in outputs for i in chosen], np.intp)
    chosen_low = np.ascontiguousarray(low_res[rows, cols], dtype=np.float32)  # (sum of candidates, 256, 256)
    chosen_iou = np.asarray(iou[rows, cols], dtype=np.float32)
    logits = postprocess_logits(chosen_low, prepared, input_size) if len(rows) else chosen_low
    predictions, start = [], 0
    for chosen in outputs:
        part = slice(start, start + len(chosen))
        start = part.stop
        predictions.append(Prediction(
            masks=logits[part] > 0, logits=logits[part], low_res_logits=chosen_low[part], iou=chosen_iou[part],
            index=int(np.argmax(chosen_iou[part])), outputs=tuple(chosen)))
    return ObjectPredictions(predictions, tuple(prepared.original_size))
