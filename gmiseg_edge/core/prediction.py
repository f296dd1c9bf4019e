"""A prompt's decoded masks, and SAM's rule for which of the decoder's four outputs is returned.

The decoder always gives four masks: index 0 is the single-mask output, 1-3 the multimask outputs. A single
point alone is ambiguous (part, object or group), so its three multimask outputs are candidates and the one
with the best predicted IoU is chosen; any other prompt (a box, several points, a previous mask as
``mask_input``) is unambiguous and gets the single-mask output. Post-processing: logits resized to the
original image (:func:`~gmiseg_edge.core.transforms.postprocess_logits`), then threshold 0.
"""

from __future__ import annotations

from dataclasses import dataclass

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
