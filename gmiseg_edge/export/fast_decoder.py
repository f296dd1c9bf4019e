"""The exported decoder's faster, mathematically equal form: attention regrouped for few prompt tokens, and
the output upscaling as matrix products on channels-last tensors.

Profiling the straight export (``benchmarks/profile_graph.py``, lite_medsam, 2 CPU threads) showed the
prompt + decoder graph spending its time on the 4096 image tokens: the q/k/v/out projections of the cross
attentions (each 4096 x 256 x 128), the transposes that split and merge their heads, and two ConvTranspose.
Only T prompt tokens (5 output tokens + the points: 7 for a box) attend to or from those 4096 tokens, so:

- token -> image (queries few): each head's query is folded into the key weights, ``(Q_h W_k,h) k^T``, and
  the value projection is applied after averaging, ``(P_h v) W_v,h^T + b_v,h`` (the rows of P sum to 1).
  The key bias adds the same value to a query's every score, which softmax ignores, so it is dropped.
- image -> token (keys few): ``q (W_q,h^T K_h^T) + b_q,h K_h^T`` for the scores, and the output projection
  folded into the values, ``sum_h P_h (V_h W_o,h^T) + b_o``.

Both trade a 128-wide projection of every image token for products with 8 heads x T columns: fewer
operations while T < 16 (box and click prompts), and no head transposes of image-sized tensors. ConvTranspose
with kernel = stride = 2 is a per-pixel matrix product followed by a pixel shuffle; done channels-last, the
transformer's image tokens feed it without a transpose and the LayerNorm between the two runs on the last
axis. The PyTorch reference keeps segment-anything's original form, so export validation compares the two.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from segment_anything.modeling.transformer import Attention, TwoWayTransformer
from torch import nn
from torch.nn import functional as F

from gmiseg_edge.models.graphs import DecoderGraph


def _head_weights(linear: nn.Linear, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A projection's weight (I, D) as (heads, I / heads, D) and bias as (heads, I / heads)."""
    out_dim, in_dim = linear.weight.shape
    return linear.weight.reshape(heads, out_dim // heads, in_dim), linear.bias.reshape(heads, out_dim // heads)


class _RegroupedAttention(nn.Module):
    """The projections of a segment-anything ``Attention`` (shared, not copied), for a regrouped forward."""

    def __init__(self, original: Attention) -> None:
        super().__init__()
        self.heads = original.num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            original.q_proj, original.k_proj, original.v_proj, original.out_proj)


class FewQueryAttention(_RegroupedAttention):
    """segment-anything ``Attention`` for few queries (prompt tokens) over many keys (image tokens)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = q.shape
        w_k, _ = _head_weights(self.k_proj, self.heads)  # (H, c, D)
        w_v, b_v = _head_weights(self.v_proj, self.heads)
        per_head = w_k.shape[1]
        queries = self.q_proj(q).reshape(batch, tokens, self.heads, per_head).transpose(1, 2)  # (B, H, T, c)
        folded = (queries @ w_k) / math.sqrt(per_head)  # (B, H, T, D)
        scores = folded.reshape(batch, self.heads * tokens, -1) @ k.transpose(1, 2)  # (B, H*T, N)
        averaged = torch.softmax(scores, dim=-1) @ v  # (B, H*T, D)
        averaged = averaged.reshape(batch, self.heads, tokens, -1)
        out = averaged @ w_v.transpose(1, 2) + b_v.unsqueeze(1)  # (B, H, T, c)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class FewKeyAttention(_RegroupedAttention):
    """segment-anything ``Attention`` for many queries (image tokens) over few keys (prompt tokens)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        batch, n_image, dim = q.shape
        tokens = k.shape[1]
        w_q, b_q = _head_weights(self.q_proj, self.heads)  # (H, c, D), (H, c)
        per_head = w_q.shape[1]
        keys = self.k_proj(k).reshape(batch, tokens, self.heads, per_head).transpose(1, 2)  # (B, H, T, c)
        values = self.v_proj(v).reshape(batch, tokens, self.heads, per_head).transpose(1, 2)
        scale = 1.0 / math.sqrt(per_head)
        folded = (keys @ w_q) * scale  # (B, H, T, D)
        bias = (keys @ b_q.unsqueeze(-1)) * scale  # (B, H, T, 1)
        scores = q @ folded.reshape(batch, self.heads * tokens, dim).transpose(1, 2)  # (B, N, H*T)
        scores = scores + bias.reshape(batch, 1, self.heads * tokens)
        probs = torch.softmax(scores.reshape(batch, n_image, self.heads, tokens), dim=-1)
        w_out = self.out_proj.weight.reshape(dim, self.heads, per_head).permute(1, 2, 0)  # (H, c, D)
        projected = (values @ w_out).reshape(batch, self.heads * tokens, dim)  # (B, H*T, D)
        return probs.reshape(batch, n_image, self.heads * tokens) @ projected + self.out_proj.bias


@contextlib.contextmanager
def few_token_attention(transformer: TwoWayTransformer) -> Iterator[TwoWayTransformer]:
    """Temporarily swap the cross attentions of a two-way transformer for their few-token forms."""
    swaps = [(layer, "cross_attn_token_to_image", FewQueryAttention) for layer in transformer.layers]
    swaps += [(layer, "cross_attn_image_to_token", FewKeyAttention) for layer in transformer.layers]
    swaps.append((transformer, "final_attn_token_to_image", FewQueryAttention))
    originals = []
    for owner, attr, fast in swaps:
        original = getattr(owner, attr)
        if type(original) is not Attention or not all(
                type(getattr(original, p)) is nn.Linear for p in ("q_proj", "k_proj", "v_proj", "out_proj")):
            raise TypeError(f"{attr}: expected segment-anything Attention with plain Linear projections "
                            f"(merge adapters before export), got {type(original).__name__}")
        originals.append((owner, attr, original))
        setattr(owner, attr, fast(original))
    try:
        yield transformer
    finally:
        for owner, attr, original in originals:
            setattr(owner, attr, original)


def _upscale_pixels(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """ConvTranspose2d(kernel 2, stride 2) on a channels-last (B, H, W, C) map -> (B, 2H, 2W, C_out)."""
    batch, height, width, channels = x.shape
    out_channels = conv.weight.shape[1]
    weight = conv.weight.permute(0, 2, 3, 1).reshape(channels, 4 * out_channels)  # (C, [di, dj, o])
    y = (x @ weight).reshape(batch, height, width, 2, 2, out_channels) + conv.bias
    return y.transpose(2, 3).reshape(batch, 2 * height, 2 * width, out_channels)


class FastDecoderGraph(DecoderGraph):
    """:class:`DecoderGraph` with the same inputs, outputs and maths, in the faster form of this module's
    docstring. Export it inside :func:`few_token_attention` (``onnx_export`` does)."""

    def __init__(self, model) -> None:
        super().__init__(model)
        upscaling = self.mask_decoder.output_upscaling
        convs = [m for m in upscaling if isinstance(m, nn.ConvTranspose2d)]
        if len(upscaling) != 5 or len(convs) != 2 or any(c.kernel_size != (2, 2) or c.stride != (2, 2)
                                                         for c in convs):
            raise TypeError("unexpected output_upscaling: expected SAM's ConvT(2, 2), LayerNorm2d, act, ConvT, act")
        self.upscale1, self.upscale_norm, self.upscale_act1, self.upscale2, self.upscale_act2 = upscaling

    def decode(self, image_embeddings: torch.Tensor, sparse: torch.Tensor,
               dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        decoder = self.mask_decoder
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse), dim=1)
        src = image_embeddings + dense  # (1, C, H, W) + (K, C, H, W): the embedding broadcast over K objects
        batch = src.shape[0]  # K, the graph's one dynamic dimension here; the others are the model's constants
        channels, height, width = (int(v) for v in self.dense_pe.shape[1:])
        hs, image_tokens = decoder.transformer(src, self.dense_pe, tokens)  # dense_pe (1, ...) broadcasts too

        x = image_tokens.reshape(batch, height, width, channels)
        x = _upscale_pixels(x, self.upscale1)
        norm = self.upscale_norm
        x = self.upscale_act1(F.layer_norm(x, (int(norm.weight.shape[0]),), norm.weight, norm.bias, norm.eps))
        x = self.upscale_act2(_upscale_pixels(x, self.upscale2))  # (B, 4H, 4W, C / 8)
        mask_tokens = hs[:, 1:1 + decoder.num_mask_tokens, :]
        hyper_in = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in
                                enumerate(decoder.output_hypernetworks_mlps)], dim=1)  # (B, M, C / 8)
        masks = hyper_in @ x.reshape(batch, 16 * height * width, -1).transpose(1, 2)
        iou = decoder.iou_prediction_head(hs[:, 0, :])
        return masks.reshape(batch, decoder.num_mask_tokens, 4 * height, 4 * width), iou
