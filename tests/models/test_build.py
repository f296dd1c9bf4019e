"""Zoo builders: parameter counts, strict checkpoint loading and its errors."""

from __future__ import annotations

import pytest

from gmiseg_edge.models.zoo import MODELS
from tests.conftest import require_weights

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name", list(MODELS))
def test_zoo_parameter_count_is_the_built_models(name):
    from gmiseg_edge.models.build import build_model, count_parameters

    with torch.device("meta"):
        model = build_model(name, pretrained=False)
    assert count_parameters(model) == MODELS[name].num_params


def test_tiny_vit_qkv_rows_pick_each_heads_query_key_value():
    from gmiseg_edge.models.tiny_vit import Attention

    attn = Attention(dim=12, num_heads=3, window=2).eval()
    q_rows, k_rows, v_rows = (attn.qkv_rows(w) for w in "qkv")
    assert sorted(torch.cat([q_rows, k_rows, v_rows]).tolist()) == list(range(36))
    x = torch.randn(2, 4, 12)
    # Zeroing the V rows must zero the output, up to the projection bias.
    with torch.no_grad():
        attn.qkv.weight[v_rows] = 0
        attn.qkv.bias[v_rows] = 0
        out = attn(x)
    torch.testing.assert_close(out, attn.proj.bias.expand_as(out))


def test_released_checkpoint_into_the_other_model_is_refused(tmp_path):
    from gmiseg_edge.core.errors import WeightsError
    from gmiseg_edge.models.build import build_model
    from gmiseg_edge.models.weights import weights_path

    require_weights("mobile_sam")
    with pytest.raises(WeightsError, match=r"mobile_sam\.pt: not a lite_medsam checkpoint: .*unexpected keys"):
        build_model("lite_medsam", checkpoint=weights_path(MODELS["mobile_sam"].weights))


def test_truncated_or_missing_checkpoint_is_a_clear_error(tmp_path):
    from gmiseg_edge.core.errors import WeightsError
    from gmiseg_edge.models.build import build_model

    model = build_model("lite_medsam", pretrained=False)
    path = tmp_path / "cut.pth"
    torch.save(model.state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match=r"cut\.pth: not a readable PyTorch checkpoint"):
        build_model("lite_medsam", checkpoint=path)
    with pytest.raises(WeightsError, match=r"nowhere\.pth: checkpoint not found"):
        build_model("lite_medsam", checkpoint=tmp_path / "nowhere.pth")


def test_checkpoint_of_another_shape_is_refused(tmp_path):
    from gmiseg_edge.core.errors import WeightsError
    from gmiseg_edge.models.build import build_model

    state = build_model("lite_medsam", pretrained=False).state_dict()
    state["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match=r"1 keys of the wrong shape \['mask_decoder\.iou_token\.weight'\]"):
        build_model("lite_medsam", checkpoint=tmp_path / "odd.pth")
