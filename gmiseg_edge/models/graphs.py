"""The two exported graphs as PyTorch modules (DESIGN §5): image encoder, prompt encoder + mask decoder.

The decoder graph stops at the low-res logits: cropping the padding and resizing to the original image size
happen in the runtime (numpy), so no output shape depends on the data and TensorRT needs no special care.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from segment_anything.modeling import Sam
from segment_anything.modeling.common import LayerNorm2d
from torch import nn
from torch.nn import functional as F

from gmiseg_edge.core.prompts import PAD_LABEL  # a padding point: only the "not a point" embedding


class ChannelLayerNorm(nn.Module):
    """segment-anything's ``LayerNorm2d`` (over channels of a (B, C, H, W) map) as one LayerNormalization op.

    The hand-written original exports as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div; in fp16 its variance
    overflows (MobileSAM's neck sees activations of ~500, squares of ~2.8e5 > 65504), while ONNX
    LayerNormalization, kept in fp32 by the fp16 conversion, computes it in fp32. Same parameters, same maths.
    """

    def __init__(self, original: LayerNorm2d) -> None:
        super().__init__()
        self.weight = original.weight
        self.bias = original.bias
        self.eps = original.eps
        self.channels = int(original.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


@contextlib.contextmanager
def export_friendly(module: nn.Module) -> Iterator[nn.Module]:
    """Temporarily swap every ``LayerNorm2d`` of ``module`` for :class:`ChannelLayerNorm` (restored after)."""
    swapped = []
    for name, child in list(module.named_modules()):
        if isinstance(child, LayerNorm2d):
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, ChannelLayerNorm(child))
            swapped.append((parent, attr, child))
    try:
        yield module
    finally:
        for parent, attr, child in swapped:
            setattr(parent, attr, child)


class EncoderGraph(nn.Module):
    """``image`` (B, 3, S, S), preprocessed -> ``image_embeddings`` (B, 256, 64, 64)."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)


class DecoderGraph(nn.Module):
    """Prompt encoder + mask decoder with fixed-shape outputs: all four masks and their IoU scores.

    K objects (prompt sets) against one image: ``image_embeddings`` (1, 256, 64, 64), shared by all of them;
    ``point_coords`` (K, N, 2) in the S x S input frame, ``point_labels`` (K, N) with 1 foreground,
    0 background, 2/3 the top-left/bottom-right box corners, -1 padding; ``mask_input`` (K, 1, 256, 256)
    low-res logits of a previous prediction, used for object k when ``has_mask_input[k]`` (K,) is 1. Outputs
    (K, 4, 256, 256) logits and (K, 4) IoU: index 0 is SAM's single-mask output, 1-3 its multimask outputs.
    Object k's outputs are those of a K = 1 call with its prompt (segment-anything's ``predict_masks`` repeats
    the embedding over the prompt batch; the objects never see each other).
    """

    def __init__(self, model: Sam) -> None:
        super().__init__()
        prompt = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.mask_downscaling = prompt.mask_downscaling
        self.input_size = float(prompt.input_image_size[0])
        self.register_buffer("gaussian", prompt.pe_layer.positional_encoding_gaussian_matrix.detach().clone())
        self.register_buffer("dense_pe", prompt.get_dense_pe().detach().clone())
        # Row k+1 is the embedding added for label k = -1 .. 3 (a padding point gets no positional part).
        label_embeddings = [prompt.not_a_point_embed.weight] + [e.weight for e in prompt.point_embeddings]
        self.register_buffer("label_embeddings", torch.cat(label_embeddings, dim=0).detach().clone())
        self.register_buffer("label_values", torch.arange(-1.0, 4.0))
        self.register_buffer("no_mask_embed", prompt.no_mask_embed.weight.detach().clone().reshape(1, -1, 1, 1))

    def _point_embeddings(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        unit = (coords + 0.5) / self.input_size  # pixel centres, normalised to [0, 1]
        projected = (2 * unit - 1) @ self.gaussian * (2 * torch.pi)
        positional = torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)
        is_point = (labels != PAD_LABEL).to(positional.dtype).unsqueeze(-1)
        one_hot = (labels.unsqueeze(-1) == self.label_values).to(positional.dtype)
        return positional * is_point + one_hot @ self.label_embeddings

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = self._point_embeddings(point_coords, point_labels)
        has_mask = has_mask_input.reshape(-1, 1, 1, 1)  # (K, 1, 1, 1)
        dense = has_mask * self.mask_downscaling(mask_input) + (1 - has_mask) * self.no_mask_embed
        return self.decode(image_embeddings, sparse, dense)

    def decode(self, image_embeddings: torch.Tensor, sparse: torch.Tensor,
               dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """segment-anything's ``predict_masks`` on embedded prompts: all four masks and their IoU scores."""
        return self.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )

