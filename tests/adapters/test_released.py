"""Exact merge of LoRA / Loose LoRA adapters into the released LiteMedSAM and MobileSAM, on a real CT slice.

Tolerances (float32, adapters with random non-zero B):

- image embeddings, adapted vs merged: ≤ 1e-5 (measured ~3e-6 LiteMedSAM, ~6e-7 MobileSAM);
- low-res mask logits, float64 decoder on the same embedding, adapted vs merged: ≤ 1e-10 (measured ~7e-14);
- low-res mask logits end to end in float32: ≤ 1e-4, not 1e-5 (measured 3.4-4.6e-5). 1e-5 is below float32's
  own noise on these logits, adapters or not. With the *base* models (no adapter) and the reference embedding:
  the float32 decoder differs from a float64 copy by 3.5e-5 (LiteMedSAM, |logits| ≤ 45) and 3.7e-5
  (MobileSAM, |logits| ≤ 27), and perturbing the embedding by one ulp (relative 1.2e-7) moves the logits by
  3.1e-5 and 3.4e-5. Merged and adapted embeddings differ by a few ulp, so their logits differ by that floor;
  the merged model's logits are as close to a float64 run as the adapted model's (3.2e-5 vs 4.0e-5). The
  merge itself is checked in float64 instead (≤ 1e-10).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest

from tests.conftest import reference, require_weights

torch = pytest.importorskip("torch")

from gmiseg_edge.adapters import (  # noqa: E402
    AdapterConfig,
    adapter_state_dict,
    inject_adapters,
    merge,
    merge_adapters,
    unmerge_adapters,
)

EMBEDDING_ATOL = 1e-5
LOGITS_F32_ATOL = 1e-4  # float32 noise floor ~3-5e-5 on these logits: see the module docstring
LOGITS_F64_ATOL = 1e-10
UNMERGE_ATOL = 1e-6

pytestmark = [pytest.mark.weights, pytest.mark.slow]


@dataclass
class Case:
    name: str
    kind: str
    model: torch.nn.Module  # adapted (encoder + decoder adapters), random non-zero B
    merged: torch.nn.Module
    embedding_adapted: torch.Tensor
    embedding_merged: torch.Tensor
    box: torch.Tensor


def randomize_b(model: torch.nn.Module, std: float = 0.05, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".B"):
                param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float64) * std)


def decode(model: torch.nn.Module, embedding: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Low-res logits for a box; the prompt encoder runs in float32, its outputs cast to the decoder's dtype."""
    dtype = model.mask_decoder.iou_token.weight.dtype
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points=None, boxes=box, masks=None)
        logits, _ = model.mask_decoder(
            image_embeddings=embedding.to(dtype),
            image_pe=model.prompt_encoder.get_dense_pe().to(dtype),
            sparse_prompt_embeddings=sparse.to(dtype),
            dense_prompt_embeddings=dense.to(dtype),
            multimask_output=False,
        )
    return logits


@pytest.fixture(scope="module")
def base_models():
    return {}


@pytest.fixture(
    scope="module",
    params=[(n, k) for n in ("lite_medsam", "mobile_sam") for k in ("lora", "loose_lora")],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def case(request, base_models):
    from gmiseg_edge.models.build import build_model

    name, kind = request.param
    require_weights(name)
    ref = reference(name)
    if name not in base_models:
        base_models[name] = build_model(name)
    model = inject_adapters(copy.deepcopy(base_models[name]), AdapterConfig(kind=kind, include_decoder=True))
    randomize_b(model)
    merged = merge(model)
    image = torch.from_numpy(ref["input"])
    with torch.inference_mode():
        adapted_embedding = model.image_encoder(image)
        merged_embedding = merged.image_encoder(image)
    return Case(name, kind, model, merged, adapted_embedding, merged_embedding, torch.from_numpy(ref["box"]))


def test_merged_state_dict_has_the_base_keys_and_shapes(case, base_models):
    base = base_models[case.name].state_dict()
    merged = case.merged.state_dict()
    assert list(merged) == list(base)
    assert all(merged[k].shape == v.shape and merged[k].dtype == v.dtype for k, v in base.items())
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    # every adapted weight moved (non-trivial deltas), nothing else did (biases untouched)
    assert changed == [k for k in base if k.endswith(("attn.qkv.weight", "q_proj.weight", "v_proj.weight"))]
    assert min((merged[k] - base[k]).abs().max().item() for k in changed) > 1e-3


def test_encoder_merge_is_exact(case):
    error = (case.embedding_adapted - case.embedding_merged).abs().max().item()
    print(f"{case.name} {case.kind}: embedding merge error {error:.2e}")
    assert error <= EMBEDDING_ATOL


def test_decoder_merge_is_exact_with_decoder_adapters(case):
    adapted = decode(case.model, case.embedding_adapted, case.box)
    merged = decode(case.merged, case.embedding_merged, case.box)
    error = (adapted - merged).abs().max().item()
    # Merged and run in float64, on the same embedding: the merge itself, free of float32 rounding.
    model64 = copy.deepcopy(case.model)
    model64.mask_decoder.double()
    merged64 = merge(model64)
    embedding = case.embedding_adapted.double()
    error64 = (decode(model64, embedding, case.box) - decode(merged64, embedding, case.box)).abs().max().item()
    print(
        f"{case.name} {case.kind} + decoder adapters: logits merge error {error:.2e} float32 end to end "
        f"(|logits| ≤ {adapted.abs().max():.1f}), {error64:.2e} float64 decoder"
    )
    assert error <= LOGITS_F32_ATOL
    assert error64 <= LOGITS_F64_ATOL


def test_decoder_merge_is_exact_without_decoder_adapters(case, base_models):
    model = inject_adapters(copy.deepcopy(base_models[case.name]), AdapterConfig(kind=case.kind))
    encoder_adapters = {k: v for k, v in adapter_state_dict(case.model).items() if k.startswith("image_encoder.")}
    assert sorted(adapter_state_dict(model)) == sorted(encoder_adapters)
    model.load_state_dict(encoder_adapters, strict=False)
    merged = merge(model)
    # Same encoder parameters, bit for bit, as the case's models: their embeddings are this model's.
    for mine, theirs in ((model, case.model), (merged, case.merged)):
        ours, other = mine.image_encoder.state_dict(), theirs.image_encoder.state_dict()
        assert list(ours) == list(other) and all(torch.equal(v, other[k]) for k, v in ours.items())
    assert all(
        torch.equal(v, base_models[case.name].state_dict()[k])
        for k, v in merged.state_dict().items()
        if k.startswith("mask_decoder.")
    )
    adapted = decode(model, case.embedding_adapted, case.box)
    error = (adapted - decode(merged, case.embedding_merged, case.box)).abs().max().item()
    print(f"{case.name} {case.kind} encoder-only: logits merge error {error:.2e} float32 end to end")
    assert error <= LOGITS_F32_ATOL


def test_unmerge_restores_the_weights(case, base_models):
    model = case.model
    merge_adapters(model)
    try:
        merged_now = model.state_dict()
        assert all(torch.equal(merged_now[k], v) for k, v in case.merged.state_dict().items())
    finally:
        unmerge_adapters(model)
    base = base_models[case.name].state_dict()
    restored = model.state_dict()
    error = max((restored[k] - v).abs().max().item() for k, v in base.items())
    assert error <= UNMERGE_ATOL
