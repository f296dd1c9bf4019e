"""Task adapters (DESIGN §11): LoRA / Loose LoRA on the mask decoder's attention, trained on cached embeddings.

The image encoder never runs here: the caller hands in each support image's embedding (from the runtime's
embedding cache) with its mask, so an epoch costs only prompt encoder + mask decoder passes through
:class:`~gmiseg_edge.models.graphs.DecoderGraph`, the very module that is exported. Prompts are simulated as in
encoder training (a box pushed out by a random offset, or random foreground points; :mod:`.prompts`), the loss
is focal + Dice (:mod:`.losses`) on the output the runtime would return (SAM's rule: the single-mask output,
or for a lone point the best of the three multimask outputs). No image augmentation: a flipped image would
need a new embedding.

A held-back part of the supports scores each epoch (Dice in the decoder's 256 x 256 frame, fixed seeded
prompts); the adapter of the best epoch is kept, and epoch 0 is the untouched decoder (B starts at zero), so
the result never scores below the base decoder on the held-back supports. Training stops at the time budget,
after ``patience`` epochs without a better score, or after ``max_epochs``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from segment_anything.modeling import Sam

from gmiseg_edge.adapters import AdapterConfig, adapter_state_dict, inject_adapters, parameter_counts
from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.prediction import output_choice
from gmiseg_edge.core.prompts import Prompt as CorePrompt
from gmiseg_edge.core.prompts import make_prompt
from gmiseg_edge.core.transforms import PreprocessConfig
from gmiseg_edge.models.graphs import DecoderGraph
from gmiseg_edge.train.losses import segmentation_loss
from gmiseg_edge.train.prompts import PromptConfig, simulate_prompt
from gmiseg_edge.train.samples import lowres_target

TASK_ADAPTER = AdapterConfig(kind="loose_lora", rank=4, include_decoder=True, include_encoder=False)
VAL_STREAM = 7  # the held-back prompts' random stream: np.random.default_rng([seed, VAL_STREAM, index])


@dataclass(frozen=True)
class DecoderAdaptConfig:
    """How a task adapter is trained. ``time_budget``: seconds of training (checked before each optimiser step;
    the epoch under way is then cut short and scored); ``val_fraction``: share of the supports held back for
    early stopping (at least one when there are two or more supports; none with a single one). ``threads`` is 1
    by default: the decoder's small operations lose more to contention than a second thread gains on a busy
    2-core CPU (measured: forward + backward 0.8 s on 1 thread, 3-7 s on 2, at load average 8)."""

    adapter: AdapterConfig = TASK_ADAPTER
    time_budget: float = 10.0
    max_epochs: int = 200
    patience: int = 10
    lr: float = 3e-3
    weight_decay: float = 0.0
    batch_size: int = 4
    val_fraction: float = 0.2
    seed: int = 0
    prompts: PromptConfig = field(default_factory=PromptConfig)
    threads: int | None = 1  # torch threads while training (None: torch's default)

    def __post_init__(self) -> None:
        if not self.adapter.decoder_only:
            raise InputError("a task adapter adapts the mask decoder only: AdapterConfig(include_decoder=True, "
                             "include_encoder=False, train_decoder=False)")
        if not (isinstance(self.time_budget, (int, float)) and math.isfinite(self.time_budget)
                and self.time_budget > 0):
            raise InputError(f"the time budget must be a positive number of seconds, got {self.time_budget!r}")
        for name in ("max_epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.patience < 0 or not 0 <= self.val_fraction < 1 or not self.lr > 0:
            raise InputError(f"need patience >= 0, 0 <= val_fraction < 1 and lr > 0, got {self.patience}, "
                             f"{self.val_fraction}, {self.lr}")


@dataclass(frozen=True, eq=False)
class SupportEmbedding:
    """One support: its image's embedding (1, 256, 64, 64) float32, the image size (H, W), its bool mask."""

    name: str
    embedding: np.ndarray
    original_size: tuple[int, int]
    mask: np.ndarray


@dataclass(frozen=True)
class AdaptEpoch:
    """One epoch: mean training loss, held-back Dice (None without a held-back split), seconds so far."""

    epoch: int
    loss: float
    val_dice: float | None
    seconds: float


@dataclass
class DecoderAdaptResult:
    """The adapted model (adapters injected, best epoch's weights loaded) and how training went."""

    model: Sam
    config: DecoderAdaptConfig
    history: list[AdaptEpoch]
    base_dice: float | None  # held-back Dice of the untouched decoder
    best_dice: float | None
    best_epoch: int  # 0: the untouched decoder was best (the adapter is then a no-op)
    stopped: str  # "time budget", "early stopping" or "max epochs"
    seconds: float
    n_train: int
    n_val: int
    adapter_parameters: int

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """The adapter tensors to save."""
        return adapter_state_dict(self.model)


Progress = Callable[[AdaptEpoch], None]


@dataclass(frozen=True, eq=False)
class _Item:
    support: SupportEmbedding
    embedding: torch.Tensor  # (1, 256, 64, 64)
    target: torch.Tensor  # (1, 1, 256, 256)


def split_supports(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the training and held-back supports (seeded shuffle; at least one of each when ``n >= 2``
    and ``val_fraction > 0``)."""
    order = np.random.default_rng([seed, 3]).permutation(n).tolist()
    n_val = 0 if n < 2 or val_fraction <= 0 else min(n - 1, max(1, round(n * val_fraction)))
    return sorted(order[n_val:]), sorted(order[:n_val])


def _prompt_tensors(support: SupportEmbedding, prompt, input_size: int) -> tuple[list[torch.Tensor], CorePrompt]:
    """The decoder's prompt inputs (coords, labels, mask_input, has_mask_input) as tensors, and the checked
    prompt; the embedding is passed separately (a tensor made once per support)."""
    checked = make_prompt(prompt.points, prompt.labels, prompt.box, image_size=support.original_size)
    inputs = checked.decoder_inputs(support.embedding, support.original_size, input_size)
    arrays = (inputs.point_coords, inputs.point_labels, inputs.mask_input, inputs.has_mask_input)
    return [torch.from_numpy(np.array(a, dtype=np.float32)) for a in arrays], checked


def _prompt_loss(graph: DecoderGraph, item: _Item, prompt, input_size: int) -> torch.Tensor:
    tensors, checked = _prompt_tensors(item.support, prompt, input_size)
    low_res, _ = graph(item.embedding, *tensors)
    losses = [segmentation_loss(low_res[:, k : k + 1], item.target) for k in output_choice(checked.ambiguous)]
    return torch.stack(losses).min()  # a lone point: the best of the multimask outputs (SAM's training rule)


@torch.no_grad()
def held_back_dice(graph: DecoderGraph, items: Sequence[_Item], prompts: PromptConfig, input_size: int,
                   seed: int) -> float | None:
    """Mean Dice in the 256 x 256 frame over ``items`` with fixed seeded prompts (a box, and points), each
    decoded output chosen as the runtime chooses it."""
    if not items:
        return None
    scores = []
    for index, item in enumerate(items):
        rng = np.random.default_rng([seed, VAL_STREAM, index])
        modes = ("box", "points") if prompts.mode == "mixed" else (prompts.mode,)
        for mode in modes:
            prompt = simulate_prompt(item.support.mask, rng, prompts, mode)
            tensors, checked = _prompt_tensors(item.support, prompt, input_size)
            low_res, iou = graph(item.embedding, *tensors)
            outputs = list(output_choice(checked.ambiguous))
            best = outputs[int(torch.argmax(iou[0, outputs]))]
            pred = low_res[0, best] > 0
            truth = item.target[0, 0] > 0.5
            total = int(pred.sum()) + int(truth.sum())
            scores.append(1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total)
    return float(np.mean(scores))


def adapt_decoder(
    model: Sam,
    supports: Sequence[SupportEmbedding],
    preprocess: PreprocessConfig,
    config: DecoderAdaptConfig | None = None,
    progress: Progress | None = None,
) -> DecoderAdaptResult:
    """Inject a task adapter into ``model``'s mask decoder (in place) and train it on ``supports``.

    ``model`` is the folder's base model (its encoder is never run); ``preprocess`` places each mask in the
    decoder's frame exactly as the image was placed. Raises :class:`InputError` for an empty support set or a
    support without foreground.
    """
    config = config or DecoderAdaptConfig()
    if not supports:
        raise InputError("the support set is empty: a task adapter needs at least one (image, mask) example")
    empty = [s.name for s in supports if not np.asarray(s.mask).any()]
    if empty:
        raise InputError(f"support masks without foreground: {', '.join(empty[:5])}")
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _adapt(model, supports, preprocess, config, progress)
    finally:
        torch.set_num_threads(threads)


def _adapt(model: Sam, supports: Sequence[SupportEmbedding], preprocess: PreprocessConfig,
           config: DecoderAdaptConfig, progress: Progress | None) -> DecoderAdaptResult:
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    inject_adapters(model, config.adapter)
    model.eval()
    graph = DecoderGraph(model).eval()
    grid = 4 * int(model.prompt_encoder.image_embedding_size[0])  # the low-res logits' side (256 in the zoo)
    items = [_Item(s, torch.from_numpy(np.array(s.embedding, dtype=np.float32)),  # a writable copy
                   torch.from_numpy(lowres_target(s.mask, preprocess, grid)[None, None].astype(np.float32)))
             for s in supports]
    train_idx, val_idx = split_supports(len(items), config.val_fraction, config.seed)
    train_items, val_items = [items[i] for i in train_idx], [items[i] for i in val_idx]
    size = preprocess.input_size
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng([config.seed, 1])

    base_dice = held_back_dice(graph, val_items, config.prompts, size, config.seed)
    best_dice, best_epoch, best_state = base_dice, 0, copy.deepcopy(adapter_state_dict(model))
    history: list[AdaptEpoch] = []
    stopped = "max epochs"
    for epoch in range(1, config.max_epochs + 1):
        losses = []
        order = rng.permutation(len(train_items))
        out_of_time = False
        for first in range(0, len(order), config.batch_size):
            if losses and time.perf_counter() - start >= config.time_budget:
                out_of_time = True  # the budget ends the epoch early: what was trained is still scored
                break
            batch = order[first : first + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            for i in batch:
                item = train_items[int(i)]
                loss = _prompt_loss(graph, item, simulate_prompt(item.support.mask, rng, config.prompts), size)
                (loss / len(batch)).backward()
                losses.append(float(loss.detach()))
            optimizer.step()
        val = held_back_dice(graph, val_items, config.prompts, size, config.seed)
        record = AdaptEpoch(epoch, float(np.mean(losses)), val, time.perf_counter() - start)
        history.append(record)
        if progress is not None:
            progress(record)
        if val is None or best_dice is None or val > best_dice:
            best_dice, best_epoch, best_state = val, epoch, copy.deepcopy(adapter_state_dict(model))
        if out_of_time or record.seconds >= config.time_budget:
            stopped = "time budget"
            break
        if val is not None and config.patience and epoch - best_epoch >= config.patience:
            stopped = "early stopping"
            break
    with torch.no_grad():
        state = model.state_dict(keep_vars=True)
        for key, value in best_state.items():
            state[key].copy_(value)
    return DecoderAdaptResult(
        model=model, config=config, history=history, base_dice=base_dice, best_dice=best_dice,
        best_epoch=best_epoch, stopped=stopped, seconds=time.perf_counter() - start, n_train=len(train_items),
        n_val=len(val_items), adapter_parameters=parameter_counts(model).adapter,
    )
