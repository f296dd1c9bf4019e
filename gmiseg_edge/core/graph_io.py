"""The exported graphs' interface (DESIGN §5): input and output names, and the decoder's inputs as one value.

Export names the ONNX inputs and outputs with these; every backend feeds and reads them by these names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ENCODER_INPUT = "image"  # float32 (B, 3, S, S), preprocessed
ENCODER_OUTPUT = "image_embeddings"  # float32 (B, 256, 64, 64)
ENCODER_INPUTS = (ENCODER_INPUT,)
ENCODER_OUTPUTS = (ENCODER_OUTPUT,)
POINT_COORDS = "point_coords"  # float32 (K, N, 2): K objects (prompt sets), N points each; K, N dynamic
POINT_LABELS = "point_labels"  # float32 (K, N)
MASK_INPUT = "mask_input"  # float32 (K, 1, 256, 256)
HAS_MASK_INPUT = "has_mask_input"  # float32 (K,)
DECODER_INPUTS = (ENCODER_OUTPUT, POINT_COORDS, POINT_LABELS, MASK_INPUT, HAS_MASK_INPUT)
DECODER_OUTPUTS = ("low_res_masks", "iou_predictions")  # float32 (K, 4, 256, 256), (K, 4)
OBJECT_INPUTS = (POINT_COORDS, POINT_LABELS, MASK_INPUT, HAS_MASK_INPUT)  # the inputs with the K dimension
LOW_RES = 256  # side of the decoder's low-res logits and of its mask_input
EMBEDDING_SHAPE = (256, 64, 64)  # one image's embedding (channels, grid, grid)


@dataclass(frozen=True)
class DecoderInputs:
    """The decoder graph's inputs for K objects on one image, already in the model's S x S frame."""

    image_embeddings: np.ndarray  # float32 (1, 256, 64, 64), shared by the K objects
    point_coords: np.ndarray  # float32 (K, N, 2)
    point_labels: np.ndarray  # float32 (K, N): 1 fg, 0 bg, 2/3 box corners, -1 padding
    mask_input: np.ndarray  # float32 (K, 1, 256, 256)
    has_mask_input: np.ndarray  # float32 (K,)

    @property
    def objects(self) -> int:
        """K, the number of prompt sets decoded together."""
        return int(self.point_coords.shape[0])

    @classmethod
    def without_mask(cls, embedding: np.ndarray, coords: np.ndarray, labels: np.ndarray) -> DecoderInputs:
        """Inputs for points/box corners only (no previous mask): ``coords`` (K, N, 2), ``labels`` (K, N)."""
        k = coords.shape[0]
        return cls(embedding, coords, labels, np.zeros((k, 1, LOW_RES, LOW_RES), np.float32),
                   np.zeros(k, np.float32))

    @classmethod
    def stack(cls, items: Sequence[DecoderInputs]) -> DecoderInputs:
        """One K-object input from several with the same embedding and point count N (K = their total)."""
        if not items:
            raise ValueError("nothing to stack")
        first = items[0]
        if any(i.image_embeddings is not first.image_embeddings and
               not np.array_equal(i.image_embeddings, first.image_embeddings) for i in items[1:]):
            raise ValueError("decoder inputs stacked into one call must share the image embedding")
        counts = {i.point_coords.shape[1] for i in items}
        if len(counts) != 1:
            raise ValueError(f"decoder inputs stacked into one call must have one point count N, got {sorted(counts)}")
        return cls(first.image_embeddings, *(np.concatenate([getattr(i, f) for i in items])
                                             for f in ("point_coords", "point_labels", "mask_input", "has_mask_input")))

    def take(self, start: int, stop: int) -> DecoderInputs:
        """Objects ``start:stop`` (the embedding stays shared)."""
        return DecoderInputs(self.image_embeddings, self.point_coords[start:stop], self.point_labels[start:stop],
                             self.mask_input[start:stop], self.has_mask_input[start:stop])

    def feed(self) -> dict[str, np.ndarray]:
        """The inputs by graph input name (in :data:`DECODER_INPUTS` order)."""
        return dict(zip(DECODER_INPUTS, (self.image_embeddings, self.point_coords, self.point_labels,
                                         self.mask_input, self.has_mask_input), strict=True))
