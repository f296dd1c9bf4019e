"""A prompt's decoded masks, and SAM's rule for which of the decoder's four outputs is returned.

The decoder always gives four masks: index 0 is the single-mask output, 1-3 the multimask outputs. A single
point alone is ambiguous (part, object or group), so its three multimask outputs are candidates and the one
with the best predicted IoU is chosen; any other prompt (a box, several points, a previous mask as
``mask_input``) is unambiguous and gets the single-mask output. Post-processing: logits resized to the
original image (:func:`~gmiseg_edge.core.transforms.postprocess_logits`), then threshold 0.

Several objects decoded in one call (:class:`ObjectPredictions`) follow the same rule object by object; they are
post-processed in groups of objects and bands of rows (bounded memory: many objects on a large image hold their
low-res logits and, once asked for, a mask each), and merge into one label map (object k -> label k + 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np

from gmiseg_edge.core.transforms import ImageGeometry, postprocess_bands, postprocess_logits, postprocess_masks

SINGLE_OUTPUT = (0,)
MULTIMASK_OUTPUTS = (1, 2, 3)
GROUP_OBJECTS = 64  # objects post-processed together (their chosen low-res logits: 16 MiB)


def output_choice(ambiguous: bool, multimask: bool | None = None) -> tuple[int, ...]:
    """The candidate outputs for a prompt (``multimask`` overrides the rule when not None)."""
    return MULTIMASK_OUTPUTS if (ambiguous if multimask is None else bool(multimask)) else SINGLE_OUTPUT


class Prediction:
    """The candidate outputs of one prompt and the chosen one.

    ``outputs`` are the decoder output indices of the candidates ((0,) single-mask, (1, 2, 3) multimask);
    ``index`` picks the chosen candidate. Arrays hold one row per candidate. Only the low-res logits are kept:
    ``masks`` are made from them when first asked for (then kept), ``logits`` (full size, float32) each time they
    are asked for, so that many objects on a large image cost a mask each, not 5 bytes a pixel per candidate.
    """

    def __init__(self, low_res_logits: np.ndarray, iou: np.ndarray, index: int, outputs: tuple[int, ...],
                 prepared: ImageGeometry, input_size: int, masks: np.ndarray | None = None) -> None:
        self.low_res_logits = low_res_logits  # float32 (K, 256, 256)
        self.iou = iou  # float32 (K,) predicted IoU
        self.index = index
        self.outputs = outputs
        self.prepared = prepared
        self.input_size = input_size
        self._masks = masks

    def __repr__(self) -> str:
        return (f"Prediction(outputs={self.outputs}, index={self.index}, score={self.score:.3f}, "
                f"size={tuple(self.prepared.original_size)})")

    @property
    def masks(self) -> np.ndarray:
        """bool (K, H, W) at the original size: the logits > 0."""
        if self._masks is None:
            self._masks = postprocess_masks(self.low_res_logits, self.prepared, self.input_size)
        return self._masks

    @property
    def logits(self) -> np.ndarray:
        """float32 (K, H, W) at the original size (computed on each call: keep the result if you need it twice)."""
        return postprocess_logits(self.low_res_logits, self.prepared, self.input_size)

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
    return Prediction(chosen_low, chosen_iou, int(np.argmax(chosen_iou)), tuple(outputs), prepared, input_size,
                      masks=postprocess_masks(chosen_low, prepared, input_size))


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
        """Each object's chosen mask, bool (K, H, W), made in groups of :data:`GROUP_OBJECTS`."""
        out = np.zeros((len(self), *self.size), bool)
        for members, lows in self._chosen_groups():
            out[members] = postprocess_masks(lows, self.predictions[members[0]].prepared,
                                             self.predictions[members[0]].input_size)
        return out

    def _chosen_groups(self):
        """(object indices, their chosen low-res logits (G, 256, 256)) in groups of :data:`GROUP_OBJECTS`."""
        for start in range(0, len(self), GROUP_OBJECTS):
            members = list(range(start, min(start + GROUP_OBJECTS, len(self))))
            yield members, np.stack([self.predictions[k].low_res_logits[self.predictions[k].index]
                                     for k in members])

    @property
    def scores(self) -> np.ndarray:
        """Each object's predicted IoU, float32 (K,)."""
        return np.asarray([p.score for p in self.predictions], np.float32)

    def label_map(self) -> np.ndarray:
        """(H, W) labels: object k (0-based) is label k + 1, background 0, in the smallest unsigned type that
        holds K. Where masks overlap, the pixel goes to the object with the larger logit there."""
        labels = np.zeros(self.size, label_dtype(len(self)))
        best = np.zeros(self.size, np.float32)  # the winning logit so far; a pixel needs one > 0
        for members, lows in self._chosen_groups():
            first = self.predictions[members[0]]
            for rows, band in postprocess_bands(lows, first.prepared, first.input_size):
                for k, logits in zip(members, band, strict=True):
                    wins = logits > best[rows]
                    labels[rows][wins] = k + 1
                    best[rows][wins] = logits[wins]
        return labels


def object_predictions(
    prepared: ImageGeometry, low_res: np.ndarray, iou: np.ndarray, outputs: Sequence[tuple[int, ...]],
    input_size: int,
) -> list[Prediction]:
    """K objects' predictions from the decoder's low-res logits (K, 4, 256, 256) and IoU (K, 4): the candidates
    ``outputs[k]`` of object k are copied out (so the four-output arrays can go), their masks made when asked."""
    predictions = []
    for k, chosen in enumerate(outputs):
        chosen_iou = np.asarray(iou[k, list(chosen)], dtype=np.float32)
        predictions.append(Prediction(np.ascontiguousarray(low_res[k, list(chosen)], dtype=np.float32), chosen_iou,
                                      int(np.argmax(chosen_iou)), tuple(chosen), prepared, input_size))
    return predictions


def make_object_predictions(
    prepared: ImageGeometry, low_res: np.ndarray, iou: np.ndarray, outputs: Sequence[tuple[int, ...]],
    input_size: int,
) -> ObjectPredictions:
    """:func:`object_predictions` as an :class:`ObjectPredictions` on the image of ``prepared``."""
    return ObjectPredictions(object_predictions(prepared, low_res, iou, outputs, input_size),
                             tuple(prepared.original_size))
