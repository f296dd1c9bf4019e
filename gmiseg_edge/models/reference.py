"""PyTorch reference inference: numpy in, numpy out, the same pre/post-processing as the runtime.

This is the parity reference for exported graphs and the torch backend of benchmarks, not the fast path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.modeling import Sam

from gmiseg_edge.models.zoo import ModelSpec
from gmiseg_edge.runtime.transforms import PreparedImage, postprocess_logits, preprocess, scale_boxes, scale_coords


@dataclass(frozen=True)
class Prediction:
    """Decoder outputs for one prompt."""

    low_res_logits: np.ndarray  # (M, 256, 256)
    iou: np.ndarray  # (M,)
    logits: np.ndarray  # (M, H, W) at the original image size

    def best_mask(self) -> np.ndarray:
        """The mask with the highest predicted IoU, thresholded at logit 0."""
        return self.logits[int(np.argmax(self.iou))] > 0


class TorchPredictor:
    """Encode an image once, then decode any number of prompts, with a zoo model in PyTorch."""

    def __init__(self, model: Sam, spec: ModelSpec) -> None:
        self.model = model.eval()
        self.spec = spec

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> tuple[PreparedImage, torch.Tensor]:
        """Preprocess and encode a uint8 image; returns its geometry and (1, 256, 64, 64) embedding."""
        prepared = preprocess(image, self.spec.preprocess)
        return prepared, self.model.image_encoder(torch.from_numpy(prepared.tensor))

    @torch.inference_mode()
    def decode(
        self,
        prepared: PreparedImage,
        embedding: torch.Tensor,
        box: np.ndarray | None = None,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        multimask: bool = False,
    ) -> Prediction:
        """Decode one prompt: a box [x0, y0, x1, y1] and/or points (N, 2) with labels (N,) in image pixels."""
        size = self.spec.input_size
        point_arg = None
        if points is not None:
            if labels is None or len(labels) != len(points):
                raise ValueError("points need one label each (1 foreground, 0 background)")
            coords = scale_coords(np.asarray(points, dtype=np.float32), prepared.original_size, size)
            point_arg = (torch.from_numpy(coords)[None], torch.as_tensor(np.asarray(labels), dtype=torch.int64)[None])
        box_arg = None
        if box is not None:
            box_arg = torch.from_numpy(scale_boxes(np.asarray(box, dtype=np.float32), prepared.original_size, size))
            box_arg = box_arg.reshape(1, 4)
        sparse, dense = self.model.prompt_encoder(points=point_arg, boxes=box_arg, masks=None)
        low_res, iou = self.model.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        low_res_np = low_res[0].numpy()
        return Prediction(
            low_res_logits=low_res_np,
            iou=iou[0].numpy(),
            logits=postprocess_logits(low_res_np, prepared, size),
        )
