"""The model side of training: prompts through SAM's prompt encoder and mask decoder, and validation Dice."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from segment_anything.modeling import Sam
from torch import nn

from gmiseg_edge.adapters import adapted_layers
from gmiseg_edge.core.transforms import PreprocessConfig, postprocess_logits, preprocess
from gmiseg_edge.metrics import dice
from gmiseg_edge.train.distributed import DistContext, all_reduce_sum, shard
from gmiseg_edge.train.prompts import Prompt, PromptConfig, simulate_prompt, to_input_frame
from gmiseg_edge.train.samples import TrainSample

VAL_STREAM = 1  # the validation prompts' random stream: np.random.default_rng([seed, VAL_STREAM, index])


def decode(sam: Sam, embedding: torch.Tensor, prompt: Prompt) -> torch.Tensor:
    """Low-res logits (1, 1, 256, 256) of one prompt (in the S x S frame) on one (1, 256, 64, 64) embedding,
    single-mask output, as the predictors decode."""
    device = embedding.device
    points = None
    if prompt.points is not None:
        points = (
            torch.as_tensor(prompt.points, dtype=torch.float32, device=device)[None],
            torch.as_tensor(prompt.labels, dtype=torch.int64, device=device)[None],
        )
    boxes = None if prompt.box is None else torch.as_tensor(prompt.box, dtype=torch.float32, device=device)[None]
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
    low_res, _ = sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    return low_res


class PromptedSam(nn.Module):
    """A SAM-family model as one module (what DistributedDataParallel wraps): a batch of preprocessed images
    and one prompt each in, low-res logits (B, 1, 256, 256) out."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, images: torch.Tensor, prompts: Sequence[Prompt]) -> torch.Tensor:
        embeddings = self.sam.image_encoder(images)
        return torch.cat([decode(self.sam, embeddings[i : i + 1], p) for i, p in enumerate(prompts)])


def set_adapter_training(sam: nn.Module, training: bool) -> None:
    """Keep the frozen base in eval mode (batch-norm statistics untouched); only adapters (dropout) train."""
    sam.eval()
    for _, layer in adapted_layers(sam):
        layer.adapters.train(training)


def validation_modes(prompts: PromptConfig) -> tuple[str, ...]:
    """Prompt kinds validated: those the run trains with (``mixed``: box and points)."""
    return ("box", "points") if prompts.mode == "mixed" else (prompts.mode,)


@torch.no_grad()
def validation_dice(
    sam: Sam,
    samples: Sequence[TrainSample],
    config: PreprocessConfig,
    prompts: PromptConfig,
    seed: int,
    ctx: DistContext,
) -> float:
    """Mean Dice at the original size over ``samples`` and the trained prompt kinds (seeded prompts, no
    augmentation); each process scores its shard and the sums are reduced."""
    set_adapter_training(sam, False)
    total = count = 0.0
    for index in shard(len(samples), ctx.rank, ctx.world_size):
        sample = samples[index]
        rng = np.random.default_rng([seed, VAL_STREAM, index])
        prepared = preprocess(sample.image, config, name=sample.name)
        embedding = sam.image_encoder(torch.from_numpy(prepared.tensor).to(ctx.device))
        for mode in validation_modes(prompts):
            prompt = simulate_prompt(sample.mask, rng, prompts, mode)
            prompt = to_input_frame(prompt, prepared.original_size, config.input_size)
            low_res = decode(sam, embedding, prompt)[0].float().cpu().numpy()
            total += dice(postprocess_logits(low_res, prepared, config.input_size)[0] > 0, sample.mask)
            count += 1
    total, count = all_reduce_sum(ctx, [total, count])
    return total / count if count else float("nan")
