"""Task adapters on a small random SAM (fast): decoder-only injection leaves the encoder alone and merges
exactly in the exported module (DecoderGraph); the trainer is seeded, keeps its best epoch, refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segment_anything.modeling import PromptEncoder  # noqa: E402

from gmiseg_edge.adapters import AdapterConfig, adapter_state_dict, inject_adapters, merge  # noqa: E402
from gmiseg_edge.core.errors import AdapterError, InputError  # noqa: E402
from gmiseg_edge.core.transforms import PreprocessConfig  # noqa: E402
from gmiseg_edge.models.graphs import DecoderGraph  # noqa: E402
from gmiseg_edge.train.decoder_adapt import (  # noqa: E402
    DecoderAdaptConfig,
    SupportEmbedding,
    adapt_decoder,
    split_supports,
)
from tests.adapters.test_adapters import randomize_b, small_sam  # noqa: E402


def grid_sam():
    """:func:`small_sam` with the zoo's prompt layout (64 x 64 embedding grid, 256 x 256 mask input), which the
    core's prompt code assumes; a 64-d decoder keeps it fast."""
    model = small_sam()
    model.prompt_encoder = PromptEncoder(embed_dim=64, image_embedding_size=(64, 64), input_image_size=(256, 256),
                                         mask_in_chans=16)
    return model.eval()


TASK = AdapterConfig(kind="loose_lora", rank=2, include_decoder=True, include_encoder=False)
PREPROCESS = PreprocessConfig(256, "minmax")


def supports(n: int = 4) -> list[SupportEmbedding]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        mask = np.zeros((64, 64), bool)
        mask[10 + i : 30 + i, 20:40] = True
        out.append(SupportEmbedding(f"s{i}", rng.normal(size=(1, 64, 64, 64)).astype(np.float32), (64, 64), mask))
    return out


def decoder_args(seed: int = 0) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 64, 16, 16, generator=gen), torch.tensor([[[30.0, 40.0], [90.0, 120.0]]]),
            torch.tensor([[2.0, 3.0]]), torch.zeros(1, 1, 64, 64), torch.zeros(1))


def test_a_task_adapter_adapts_only_the_decoder_and_merges_exactly():
    base = small_sam()
    model = inject_adapters(small_sam(), TASK)
    randomize_b(model)
    keys = adapter_state_dict(model)
    assert keys and all(k.startswith("mask_decoder.transformer.") for k in keys)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == list(keys)
    image = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(model.image_encoder(image), base.image_encoder(image))
        adapted, _ = DecoderGraph(model)(*decoder_args())
        merged, _ = DecoderGraph(merge(model))(*decoder_args())
        plain, _ = DecoderGraph(base)(*decoder_args())
    assert (adapted - merged).abs().max() < 1e-4
    assert (adapted - plain).abs().max() > 1e-3  # the adapter does change the masks
    with pytest.raises(AdapterError, match="adapts nothing"):
        AdapterConfig(include_encoder=False)


def test_adapt_decoder_is_seeded_and_keeps_the_best_epoch():
    config = DecoderAdaptConfig(adapter=TASK, time_budget=60, max_epochs=2, patience=0, seed=5, val_fraction=0.5)
    first = adapt_decoder(grid_sam(), supports(2), PREPROCESS, config)
    second = adapt_decoder(grid_sam(), supports(2), PREPROCESS, config)
    assert (first.n_train, first.n_val, len(first.history), first.stopped) == (1, 1, 2, "max epochs")
    for key, value in first.tensors.items():
        assert torch.equal(value, second.tensors[key])
    vals = [first.base_dice] + [r.val_dice for r in first.history]
    assert first.best_dice == max(vals) and vals.index(first.best_dice) == first.best_epoch
    b_norm = sum(float(v.abs().sum()) for k, v in first.tensors.items() if k.endswith(".B"))
    assert (b_norm == 0) == (first.best_epoch == 0)  # epoch 0 is the untouched decoder (B = 0)


def test_adapt_decoder_refuses_bad_input():
    with pytest.raises(InputError, match="support set is empty"):
        adapt_decoder(small_sam(), [], PREPROCESS, DecoderAdaptConfig(adapter=TASK))
    for budget in (0, -1.0, float("nan")):
        with pytest.raises(InputError, match="time budget"):
            DecoderAdaptConfig(adapter=TASK, time_budget=budget)
    with pytest.raises(InputError, match="mask decoder only"):
        DecoderAdaptConfig(adapter=AdapterConfig(kind="lora", include_decoder=True))
    blank = supports(1)[0]
    with pytest.raises(InputError, match="without foreground: s0"):
        adapt_decoder(grid_sam(), [SupportEmbedding("s0", blank.embedding, (64, 64), ~blank.mask & False)],
                      PREPROCESS, DecoderAdaptConfig(adapter=TASK))


def test_split_holds_back_a_fifth_and_at_least_one():
    assert split_supports(1, 0.2, 0) == ([0], [])
    train, val = split_supports(10, 0.2, 0)
    assert len(val) == 2 and sorted(train + val) == list(range(10))
    assert len(split_supports(2, 0.2, 0)[1]) == 1 and split_supports(5, 0.0, 0)[1] == []
