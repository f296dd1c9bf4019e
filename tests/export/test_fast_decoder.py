"""The exported decoder's regrouped form (export/fast_decoder.py) equals segment-anything's on real inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.conftest import require_weights

torch = pytest.importorskip("torch")

from gmiseg_edge.export.fast_decoder import FastDecoderGraph, few_token_attention  # noqa: E402
from gmiseg_edge.models.graphs import DecoderGraph  # noqa: E402

# float32 summation order only: observed <= 1.5e-4 on logits up to ~100; a wrong regrouping is off by O(1)
LOGITS_ATOL = 1e-3
IOU_ATOL = 1e-5


def _prompts(generator: torch.Generator, size: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """A box, one point + padding, and 12 mixed points, in the S x S frame."""
    box = torch.tensor([[[0.2, 0.3], [0.7, 0.8]]]) * size
    point = torch.tensor([[[0.5 * size, 0.4 * size], [0.0, 0.0]]])
    many = torch.rand(1, 12, 2, generator=generator) * size
    return [
        ("box", box, torch.tensor([[2.0, 3.0]])),
        ("point", point, torch.tensor([[1.0, -1.0]])),
        ("12 points", many, torch.randint(0, 2, (1, 12), generator=generator).float()),
    ]


@pytest.mark.parametrize("name", ["lite_medsam", "mobile_sam"])
def test_fast_decoder_equals_segment_anything_form(name):
    require_weights(name)
    from gmiseg_edge.core.transforms import preprocess
    from gmiseg_edge.data.samples import load_sample_cases
    from gmiseg_edge.models.build import build_model
    from gmiseg_edge.models.zoo import get_spec

    model = build_model(name)
    spec = get_spec(name)
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        if name == "lite_medsam":  # a real embedding (MobileSAM's encoder is slower; its decoder sees noise)
            image = preprocess(load_sample_cases(["lung2"])[0].image, spec.preprocess).tensor
            embedding = model.image_encoder(torch.from_numpy(image))
        else:
            embedding = torch.randn(1, 256, 64, 64, generator=generator)
    reference, fast = DecoderGraph(model).eval(), FastDecoderGraph(model).eval()
    for label, coords, labels in _prompts(generator, spec.input_size):
        for has_mask in (0.0, 1.0):
            mask_input = torch.randn(1, 1, 256, 256, generator=generator) * 4
            args = (embedding, coords, labels, mask_input, torch.tensor([has_mask]))
            with torch.inference_mode():
                want_logits, want_iou = reference(*args)
                with few_token_attention(model.mask_decoder.transformer):
                    got_logits, got_iou = fast(*args)
            error = (got_logits - want_logits).abs().max().item()
            assert error <= LOGITS_ATOL, f"{name} {label} mask_input={has_mask}: logits off by {error}"
            assert (got_iou - want_iou).abs().max().item() <= IOU_ATOL, f"{name} {label}: IoU differs"
            agree = ((got_logits > 0) == (want_logits > 0)).float().mean().item()
            assert agree > 0.9999, f"{name} {label}: {1 - agree:.2e} of mask pixels flipped"


def test_swap_is_undone_and_refuses_unmerged_adapters():
    from segment_anything.modeling.transformer import Attention

    from gmiseg_edge.adapters import AdapterConfig, inject_adapters
    from gmiseg_edge.models.build import build_model

    model = build_model("lite_medsam", pretrained=False)
    transformer = model.mask_decoder.transformer
    with pytest.raises(RuntimeError, match="boom"), few_token_attention(transformer):
        assert type(transformer.layers[0].cross_attn_token_to_image).__name__ == "FewQueryAttention"
        raise RuntimeError("boom")
    assert type(transformer.layers[0].cross_attn_token_to_image) is Attention
    assert type(transformer.final_attn_token_to_image) is Attention

    inject_adapters(model, AdapterConfig(kind="lora", rank=4, include_decoder=True))
    with pytest.raises(TypeError, match="merge adapters before export"), few_token_attention(transformer):
        pass
    assert not any(type(m).__name__.startswith("Few") for m in transformer.modules())


def test_exported_decoder_is_the_fast_form_and_matches_pytorch(exported_models):
    result = exported_models("lite_medsam")
    graph = onnx.load(str(result.folder / "decoder.onnx"))
    ops = {node.op_type for node in graph.graph.node}
    assert "ConvTranspose" not in ops and "Tile" not in ops, sorted(ops)
    report = result.reports["fp32"]
    print(f"decoder logits vs PyTorch (segment-anything form): max abs {report.to_dict()['logits_max_abs']:.2e}")
    assert report.to_dict()["logits_max_abs"] <= LOGITS_ATOL
    assert np.isfinite(report.mask_dice_min) and report.mask_dice_min >= 0.999
