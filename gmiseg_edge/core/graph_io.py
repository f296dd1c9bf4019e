"""The exported graphs' interface (DESIGN §5): input and output names, and the decoder's inputs as one value.

Export names the ONNX inputs and outputs with these; every backend feeds and reads them by these names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ENCODER_INPUT = "image"  # float32 (B, 3, S, S), preprocessed
ENCODER_OUTPUT = "image_embeddings"  # float32 (B, 256, 64, 64)
ENCODER_INPUTS = (ENCODER_INPUT,)
ENCODER_OUTPUTS = (ENCODER_OUTPUT,)
POINT_COORDS = "point_coords"  # float32 (1, N, 2), N dynamic
POINT_LABELS = "point_labels"  # float32 (1, N)
DECODER_INPUTS = (ENCODER_OUTPUT, POINT_COORDS, POINT_LABELS, "mask_input", "has_mask_input")
DECODER_OUTPUTS = ("low_res_masks", "iou_predictions")
LOW_RES = 256  # side of the decoder's low-res logits and of its mask_input
EMBEDDING_SHAPE = (256, 64, 64)  # one image's embedding (channels, grid, grid)


@dataclass(frozen=True)
class DecoderInputs:
    """The decoder graph's inputs, already in the model's S x S frame."""

    image_embeddings: np.ndarray  # float32 (1, 256, 64, 64)
    point_coords: np.ndarray  # float32 (1, N, 2)
    point_labels: np.ndarray  # float32 (1, N): 1 fg, 0 bg, 2/3 box corners, -1 padding
    mask_input: np.ndarray  # float32 (1, 1, 256, 256)
    has_mask_input: np.ndarray  # float32 (1,)

    @classmethod
    def without_mask(cls, embedding: np.ndarray, coords: np.ndarray, labels: np.ndarray) -> DecoderInputs:
        """Inputs for points/box corners only (no previous mask)."""
        return cls(embedding, coords, labels, np.zeros((1, 1, LOW_RES, LOW_RES), np.float32),
                   np.zeros(1, np.float32))

    def feed(self) -> dict[str, np.ndarray]:
        """The inputs by graph input name (in :data:`DECODER_INPUTS` order)."""
        return dict(zip(DECODER_INPUTS, (self.image_embeddings, self.point_coords, self.point_labels,
                                         self.mask_input, self.has_mask_input), strict=True))
