"""Adapters: LoRA / Loose LoRA maths, injection into the right Q/V rows, freezing and counts, exact merge on a
small SAM ViT, and the safetensors adapter files with their errors. (Released models: test_adapters_released.py.)"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segment_anything.modeling import (  # noqa: E402
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from gmiseg_edge.adapters import (  # noqa: E402
    AdaptedLinear,
    AdapterConfig,
    AdapterError,
    LooseLoRA,
    LoRA,
    adapter_state_dict,
    apply_adapter,
    inject_adapters,
    load_adapter,
    merge,
    merge_adapters,
    merge_state_dict,
    parameter_counts,
    save_adapter,
    unmerge_adapters,
)

F32_ATOL = 1e-5  # adapted vs merged outputs in float32
F64_ATOL = 1e-10  # the same in float64: the merge is exact up to float64 rounding
DELTA_ATOL = 1e-6  # delta_weight (computed in float64, returned in float32) vs an independent float64 construction
UNMERGE_ATOL = 1e-6  # unmerge restores the weights (bit for bit in practice)
SHA_A = hashlib.sha256(b"base checkpoint A").hexdigest()
SHA_B = hashlib.sha256(b"base checkpoint B").hexdigest()


def small_sam(embed_dim: int = 96, seed: int = 0) -> Sam:
    """A small SAM: ViT encoder (depth 2, 256 input, windowed + global attention) and a 64-d decoder."""
    torch.manual_seed(seed)
    encoder = ImageEncoderViT(
        img_size=256,
        patch_size=16,
        embed_dim=embed_dim,
        depth=2,
        num_heads=4,
        out_chans=64,
        use_rel_pos=True,
        window_size=4,
        global_attn_indexes=(1,),
    )
    prompt = PromptEncoder(embed_dim=64, image_embedding_size=(16, 16), input_image_size=(256, 256), mask_in_chans=16)
    decoder = MaskDecoder(
        transformer_dim=64,
        transformer=TwoWayTransformer(depth=2, embedding_dim=64, mlp_dim=256, num_heads=4),
        iou_head_hidden_dim=64,
    )
    return Sam(encoder, prompt, decoder, pixel_mean=[0.0, 0.0, 0.0], pixel_std=[1.0, 1.0, 1.0]).eval()


def randomize_b(model: torch.nn.Module, std: float = 0.05, seed: int = 1) -> None:
    """Give every adapter's B random non-zero values (zero B would make every merge test trivial)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "B" or name.endswith(".B"):
                param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float64) * std)


def run_sam(model: Sam, image: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Image embedding and single-mask low-res logits for a box prompt (the prompt encoder stays float32:
    segment-anything casts box coordinates to float32; its outputs are cast to the decoder's dtype)."""
    dtype = model.mask_decoder.iou_token.weight.dtype
    with torch.inference_mode():
        embedding = model.image_encoder(image)
        sparse, dense = model.prompt_encoder(points=None, boxes=box, masks=None)
        logits, _ = model.mask_decoder(
            image_embeddings=embedding,
            image_pe=model.prompt_encoder.get_dense_pe().to(dtype),
            sparse_prompt_embeddings=sparse.to(dtype),
            dense_prompt_embeddings=dense.to(dtype),
            multimask_output=False,
        )
    return embedding, logits


# ----------------------------------------------------------------------------------------------- adapter maths


def _independent_loose_delta(module: LooseLoRA, rank: int, scale: float) -> np.ndarray:
    """s·B·[P_1 A_1; P_2 A_2 A_1; ...] built from explicit pooling matrices, in numpy float64."""
    a = [p.detach().double().numpy() for p in module.A]
    rows = []
    product = np.eye(a[0].shape[1])
    for a_l in a:
        product = a_l @ product
        h = a_l.shape[0]
        pool = np.zeros((rank, h))
        for i in range(rank):
            for j in range(h):
                if j // (h // rank) == i:
                    pool[i, j] = rank / h
        rows.append(pool @ product)
    return scale * module.B.detach().double().numpy() @ np.vstack(rows)


@pytest.mark.parametrize(("rank", "alpha", "widths"), [(4, None, None), (3, 6.0, (12, 6)), (2, 1.0, (10, 4, 2))])
def test_loose_lora_delta_matches_an_independent_construction(rank, alpha, widths):
    torch.manual_seed(0)
    layers = len(widths) if widths else 3
    config = AdapterConfig(kind="loose_lora", rank=rank, alpha=alpha, num_layers=layers, widths=widths)
    assert config.widths == (widths or (16, 8, 4))
    module = LooseLoRA(20, 12, rank, config.alpha, config.widths)
    assert not module.B.detach().any()  # zero-initialised
    randomize_b(module)
    expected = _independent_loose_delta(module, rank, config.alpha / rank)
    np.testing.assert_allclose(module.delta_weight().detach().numpy(), expected, rtol=0, atol=DELTA_ATOL)
    x = torch.randn(5, 7, 20)
    torch.testing.assert_close(module(x), x @ module.delta_weight().T, rtol=0, atol=F32_ATOL)


def test_lora_delta_is_scaled_b_times_a_and_init_is_kaiming_uniform():
    torch.manual_seed(0)
    module = LoRA(64, 10, rank=4, alpha=8.0)
    assert not module.B.detach().any()
    assert module.A.abs().max() <= 1 / math.sqrt(64)  # kaiming_uniform_(a=√5): bound 1/sqrt(fan_in)
    assert module.A.std() > 0.25 / math.sqrt(64)
    randomize_b(module)
    expected = 2.0 * module.B.detach().double() @ module.A.detach().double()
    np.testing.assert_allclose(module.delta_weight().detach().numpy(), expected.numpy(), rtol=0, atol=DELTA_ATOL)


@pytest.mark.parametrize("kind", ["lora", "loose_lora"])
def test_adapted_linear_forward_is_w_x_plus_delta_x(kind):
    torch.manual_seed(0)
    base = torch.nn.Linear(24, 18)
    rows = {"q": torch.arange(0, 6), "v": torch.tensor([12, 14, 15, 16, 17, 13])}
    layer = AdaptedLinear(base, rows, AdapterConfig(kind=kind, rank=2))
    randomize_b(layer)
    x = torch.randn(3, 24)
    expected = x @ (base.weight + layer.delta_weight()).T + base.bias
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=F32_ATOL)
    delta = layer.delta_weight()
    assert not delta[6:12].any()  # K rows untouched
    torch.testing.assert_close(delta[rows["v"]], layer.adapters["v"].delta_weight(), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "dora"}, "kind"),
        ({"rank": 0}, "rank"),
        ({"widths": (16, 6, 4)}, "multiple of rank"),
        ({"widths": (8, 8, 4)}, "strictly decreasing"),
        ({"num_layers": 2, "widths": (16, 8, 4)}, "num_layers"),
        ({"targets": ("q", "x")}, "targets"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(AdapterError, match=message):
        AdapterConfig(**kwargs)


def test_config_json_round_trip_and_defaults():
    config = AdapterConfig(kind="lora", rank=8, include_decoder=True, targets=["q", "k", "v"])
    assert config.alpha == 8.0 and config.scale == 1.0 and config.targets == ("q", "k", "v")
    assert AdapterConfig.from_json(config.to_json()) == config
    assert AdapterConfig().widths == (16, 8, 4) and AdapterConfig().code_size == 12
    with pytest.raises(AdapterError, match="unknown adapter config keys"):
        AdapterConfig.from_dict({"rank": 4, "bogus": 1})


# --------------------------------------------------------------------------------------- injection, row layout


def test_sam_vit_deltas_land_on_the_query_and_value_blocks():
    model = small_sam()
    inject_adapters(model, AdapterConfig(kind="loose_lora"))
    randomize_b(model)
    attn = model.image_encoder.blocks[0].attn
    qkv, dim = attn.qkv, 96
    x = torch.randn(1, 3, 3, dim)
    with torch.no_grad():
        base = torch.nn.functional.linear(x, qkv.weight, qkv.bias).reshape(1, 9, 3, 4, -1)
        adapted = qkv(x).reshape(1, 9, 3, 4, -1)  # the layout Attention.forward unpacks into q, k, v
        change = adapted - base
    torch.testing.assert_close(change[:, :, 0].reshape(1, 9, dim), qkv.adapters["q"](x).reshape(1, 9, dim))
    assert not change[:, :, 1].any()
    torch.testing.assert_close(change[:, :, 2].reshape(1, 9, dim), qkv.adapters["v"](x).reshape(1, 9, dim))


def test_tiny_vit_deltas_land_on_each_heads_query_and_value_rows():
    from gmiseg_edge.models.tiny_vit import Attention

    attn = Attention(dim=12, num_heads=3, window=2).eval()
    holder = torch.nn.Sequential(attn)
    inject_adapters(holder, AdapterConfig(kind="lora", rank=2))
    randomize_b(holder)
    x = torch.randn(2, 4, 12)
    with torch.no_grad():
        base = torch.nn.functional.linear(x, attn.qkv.weight, attn.qkv.bias).view(2, 4, 3, 12)
        adapted = attn.qkv(x).view(2, 4, 3, 12)  # per head [q_h, k_h, v_h], as Attention.forward splits it
        change = adapted - base
    torch.testing.assert_close(change[..., 0:4].reshape(2, 4, 12), attn.qkv.adapters["q"](x))
    assert not change[..., 4:8].any()
    torch.testing.assert_close(change[..., 8:12].reshape(2, 4, 12), attn.qkv.adapters["v"](x))


@pytest.fixture(scope="module")
def lite_medsam_random():
    from gmiseg_edge.models.build import build_model

    return build_model("lite_medsam", pretrained=False)


@pytest.mark.parametrize(
    ("kind", "decoder", "adapter_params"),
    [("lora", False, 29_696), ("loose_lora", False, 107_136), ("lora", True, 53_248), ("loose_lora", True, 194_368)],
)
def test_only_adapters_are_trainable_and_counts_are_right(lite_medsam_random, kind, decoder, adapter_params):
    model = copy.deepcopy(lite_medsam_random)
    base_total = sum(p.numel() for p in model.parameters())
    inject_adapters(model, AdapterConfig(kind=kind, include_decoder=decoder))
    counts = parameter_counts(model)
    print(f"lite_medsam {kind} decoder={decoder}: {counts}")
    assert counts.adapter == counts.trainable == adapter_params
    assert counts.total == base_total + adapter_params
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".adapters." in n for n in trainable)
    # By hand, the first TinyViT attention (dim 128, r=4): LoRA 2·(4·128 + 128·4) = 2048 for q and v;
    # Loose LoRA 2·(16·128 + 8·16 + 4·8 + 128·12) = 7488.
    first = model.image_encoder.layers[1].blocks[0].attn.qkv
    assert sum(p.numel() for p in first.adapters.parameters()) == (2048 if kind == "lora" else 7488)
    # The whole count by hand: encoder dims 128 (2 blocks), 160 (6), 320 (2) -> Σd = 1856.
    per_dim = 16 if kind == "lora" else 56  # LoRA 2·2·r·d; Loose LoRA 2·(7·r·d + 10·r²)
    encoder = per_dim * 1856 + (0 if kind == "lora" else 10 * 2 * 10 * 4**2)
    assert sum(p.numel() for n, p in model.image_encoder.named_parameters() if ".adapters." in n) == encoder


def test_train_decoder_unfreezes_the_whole_mask_decoder_and_gradients_reach_only_trainables():
    model = small_sam()
    inject_adapters(model, AdapterConfig(kind="loose_lora", train_decoder=True))
    decoder_params = sum(p.numel() for p in model.mask_decoder.parameters())
    counts = parameter_counts(model)
    assert counts.trainable == counts.adapter + decoder_params
    randomize_b(model)
    image, box = torch.randn(1, 3, 256, 256), torch.tensor([[40.0, 50.0, 180.0, 200.0]])
    model.train()
    embedding = model.image_encoder(image)
    sparse, dense = model.prompt_encoder(points=None, boxes=box, masks=None)
    logits, iou = model.mask_decoder(embedding, model.prompt_encoder.get_dense_pe(), sparse, dense, True)
    (logits.square().mean() + iou.sum()).backward()  # multimask + IoU: every decoder parameter is used
    for name, param in model.named_parameters():
        assert (param.grad is not None) == param.requires_grad, name
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.endswith(".B"))


def test_injecting_twice_or_into_a_model_without_attention_is_refused():
    model = inject_adapters(small_sam(), AdapterConfig())
    with pytest.raises(AdapterError, match="already has adapters"):
        inject_adapters(model, AdapterConfig())
    with pytest.raises(AdapterError, match="no image-encoder attention"):
        inject_adapters(torch.nn.Sequential(torch.nn.Linear(3, 3)), AdapterConfig())


# ------------------------------------------------------------------------------------- exact merge (small ViT)


@pytest.fixture(scope="module")
def vit_input():
    gen = torch.Generator().manual_seed(3)
    return torch.randn(1, 3, 256, 256, generator=gen), torch.tensor([[40.0, 50.0, 180.0, 200.0]])


@pytest.mark.parametrize("kind", ["lora", "loose_lora"])
@pytest.mark.parametrize("decoder", [False, True])
def test_merge_is_exact_on_a_small_sam_vit(kind, decoder, vit_input):
    base = small_sam()
    model = inject_adapters(copy.deepcopy(base), AdapterConfig(kind=kind, include_decoder=decoder))
    randomize_b(model)
    merged = merge(model)
    assert not any(isinstance(m, AdaptedLinear) for m in merged.modules())
    base_state, merged_state = base.state_dict(), merged.state_dict()
    assert list(merged_state) == list(base_state)
    assert all(merged_state[k].shape == v.shape and merged_state[k].dtype == v.dtype for k, v in base_state.items())
    changed = [k for k in base_state if not torch.equal(base_state[k], merged_state[k])]
    assert changed and all(k.endswith(("qkv.weight", "q_proj.weight", "v_proj.weight")) for k in changed)
    assert any(k.startswith("mask_decoder.") for k in changed) == decoder
    for key in changed:  # non-trivial deltas
        assert (merged_state[key] - base_state[key]).abs().max() > 1e-3
    image, box = vit_input
    e_adapted, l_adapted = run_sam(model, image, box)
    e_merged, l_merged = run_sam(merged, image, box)
    e_base, _ = run_sam(base, image, box)
    errors = ((e_adapted - e_merged).abs().max().item(), (l_adapted - l_merged).abs().max().item())
    print(f"small ViT {kind} decoder={decoder}: merge error embedding {errors[0]:.2e}, logits {errors[1]:.2e}")
    assert (e_adapted - e_base).abs().max() > 1e-3
    assert errors[0] <= F32_ATOL and errors[1] <= F32_ATOL
    # float64: exact up to float64 rounding
    model64 = copy.deepcopy(model)
    model64.image_encoder.double()
    model64.mask_decoder.double()
    e64, l64 = run_sam(model64, image.double(), box)
    e64m, l64m = run_sam(merge(model64), image.double(), box)
    assert (e64 - e64m).abs().max() <= F64_ATOL and (l64 - l64m).abs().max() <= F64_ATOL


def test_merge_adapters_in_place_then_unmerge_restores_the_weights(vit_input):
    model = inject_adapters(small_sam(), AdapterConfig(kind="loose_lora", include_decoder=True))
    randomize_b(model)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    expected = merge(model)
    merge_adapters(model)
    for key, value in expected.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key  # the same arithmetic as merge()
    image, box = vit_input
    torch.testing.assert_close(run_sam(model, image, box)[1], run_sam(expected, image, box)[1], rtol=0, atol=0)
    with pytest.raises(AdapterError, match="merged"):
        adapter_state_dict(model)
    unmerge_adapters(model)
    for key, value in original.items():
        assert (model.state_dict()[key] - value).abs().max() <= UNMERGE_ATOL, key


# ------------------------------------------------------------------------------------------ safetensors files


@pytest.fixture
def trained(tmp_path):
    """An adapted small SAM with random B, saved; (model, path)."""
    model = inject_adapters(small_sam(), AdapterConfig(kind="loose_lora", include_decoder=True))
    randomize_b(model)
    path = save_adapter(tmp_path / "adapter.safetensors", model, base_model_name="small_vit", base_sha256=SHA_A)
    return model, path


def test_save_load_round_trip_preserves_tensors_and_metadata(trained):
    import gmiseg_edge

    model, path = trained
    config, tensors, metadata = load_adapter(path)
    assert config == AdapterConfig(kind="loose_lora", include_decoder=True)
    expected = adapter_state_dict(model)
    assert sorted(tensors) == sorted(expected)
    assert all(torch.equal(tensors[k], expected[k]) for k in expected)
    assert metadata["format"] == "gmiseg-edge-adapter" and metadata["format_version"] == "1"
    assert AdapterConfig.from_json(metadata["config"]) == config
    assert metadata["base_model"] == "small_vit" and metadata["base_sha256"] == SHA_A
    assert metadata["gmiseg_edge_version"] == gmiseg_edge.__version__
    assert set(json.loads(metadata["sites"])) == {n.rpartition(".adapters.")[0] for n in expected}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_file_is_plain_safetensors_without_pickle(trained):
    _, path = trained
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    assert not data.startswith((b"\x80", b"PK"))  # neither a pickle stream nor a torch zip archive
    assert b"\x80\x02" not in data[: 8 + header_len] and b"c__builtin__" not in data
    meta = header.pop("__metadata__")
    assert meta["format"] == "gmiseg-edge-adapter"
    spans = sorted(tuple(entry["data_offsets"]) for entry in header.values())
    assert all(entry["dtype"] == "F32" for entry in header.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert 8 + header_len + spans[-1][1] == len(data)


def test_apply_round_trip_and_functional_merge_match_the_model(trained, vit_input):
    model, path = trained
    fresh = small_sam()
    base_state = {k: v.clone() for k, v in fresh.state_dict().items()}
    config = apply_adapter(fresh, path, "small_vit", SHA_A)
    assert config == AdapterConfig(kind="loose_lora", include_decoder=True)
    image, box = vit_input
    torch.testing.assert_close(run_sam(fresh, image, box)[1], run_sam(model, image, box)[1], rtol=0, atol=0)
    merged_state = merge_state_dict(base_state, *load_adapter(path), source=str(path))
    reference_state = merge(model).state_dict()
    assert list(merged_state) == list(reference_state)
    assert all(torch.equal(merged_state[k], v) for k, v in reference_state.items())


def test_train_decoder_adapter_carries_the_decoder(tmp_path, vit_input):
    model = inject_adapters(small_sam(), AdapterConfig(kind="lora", train_decoder=True))
    randomize_b(model)
    with torch.no_grad():
        model.mask_decoder.iou_token.weight.add_(1.0)  # "trained" decoder
    path = save_adapter(tmp_path / "a.safetensors", model, base_model_name="small_vit", base_sha256=SHA_A)
    fresh = small_sam()
    base_state = fresh.state_dict()
    apply_adapter(fresh, path, "small_vit", SHA_A)
    image, box = vit_input
    torch.testing.assert_close(run_sam(fresh, image, box)[1], run_sam(model, image, box)[1], rtol=0, atol=0)
    merged_state = merge_state_dict(base_state, *load_adapter(path))
    assert torch.equal(merged_state["mask_decoder.iou_token.weight"], model.mask_decoder.iou_token.weight)


def test_save_replaces_atomically_and_leaves_the_old_file_on_failure(trained, monkeypatch):
    model, path = trained
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("gmiseg_edge.core.files.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(path, model, base_model_name="other", base_sha256=SHA_B)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.parametrize(("name", "sha"), [("other_model", SHA_A), ("small_vit", SHA_B)])
def test_applying_to_another_base_is_refused_naming_file_and_bases(trained, name, sha):
    _, path = trained
    with pytest.raises(AdapterError) as info:
        apply_adapter(small_sam(), path, name, sha)
    message = str(info.value)
    assert str(path) in message and "small_vit" in message and SHA_A in message and name in message and sha in message


def _assert_names_file(exc_info: pytest.ExceptionInfo, path, *fragments: str) -> None:
    message = str(exc_info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_truncated_and_corrupted_files_are_refused_naming_the_file(trained, tmp_path):
    _, path = trained
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterError) as info:
        load_adapter(truncated)
    _assert_names_file(info, truncated, "not a readable safetensors file")
    garbled = tmp_path / "garbled.safetensors"
    garbled.write_bytes(data[:8] + b"#" * 40 + data[48:])
    with pytest.raises(AdapterError) as info:
        load_adapter(garbled)
    _assert_names_file(info, garbled, "not a readable safetensors file")
    pickled = tmp_path / "pickled.safetensors"
    torch.save({"x": torch.zeros(2)}, pickled)
    with pytest.raises(AdapterError) as info:
        load_adapter(pickled)
    _assert_names_file(info, pickled)
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(AdapterError) as info:
        load_adapter(missing)
    _assert_names_file(info, missing, "not found")


def test_non_adapter_safetensors_and_bad_metadata_are_refused(trained, tmp_path):
    from safetensors.torch import save_file

    _, path = trained
    _, tensors, metadata = load_adapter(path)
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(other))
    with pytest.raises(AdapterError) as info:
        load_adapter(other)
    _assert_names_file(info, other, "not a gmiseg-edge adapter")
    cases = {
        "version.safetensors": ({**metadata, "format_version": "99"}, tensors, "format version"),
        "config.safetensors": ({**metadata, "config": "{not json"}, tensors, "not valid JSON"),
        "base.safetensors": ({k: v for k, v in metadata.items() if k != "base_sha256"}, tensors, "base_sha256"),
        "rank.safetensors": (
            {**metadata, "config": AdapterConfig(kind="loose_lora", rank=2, include_decoder=True).to_json()},
            tensors,
            "do not fit",
        ),
        "extra.safetensors": (metadata, {**tensors, "image_encoder.neck.0.weight": torch.zeros(2)}, "unexpected"),
    }
    for filename, (meta, tens, fragment) in cases.items():
        bad = tmp_path / filename
        save_file({k: v.contiguous() for k, v in tens.items()}, str(bad), metadata=meta)
        with pytest.raises(AdapterError) as info:
            load_adapter(bad)
        _assert_names_file(info, bad, fragment)


def test_tensors_of_the_wrong_shape_for_the_model_are_refused(trained, tmp_path):
    _, path = trained
    # Recorded sites do not match a model of another width.
    with pytest.raises(AdapterError) as info:
        apply_adapter(small_sam(embed_dim=64), path, "small_vit", SHA_A)
    _assert_names_file(info, path, "do not match this model")
    # Without recorded sites, the tensor shapes themselves are checked against the model.
    config, tensors, _ = load_adapter(path)
    no_sites = save_adapter(tmp_path / "no_sites.safetensors", tensors, config, "small_vit", SHA_A)
    with pytest.raises(AdapterError) as info:
        apply_adapter(small_sam(embed_dim=64), no_sites, "small_vit", SHA_A)
    _assert_names_file(info, no_sites, "do not fit this model", "of the wrong shape")
    with pytest.raises(AdapterError) as info:
        merge_state_dict(small_sam().state_dict(), *load_adapter(no_sites), source=str(no_sites))
    _assert_names_file(info, no_sites, "no adapter sites")
    # An adapter of another config on a model that already has adapters.
    other = inject_adapters(small_sam(), AdapterConfig(kind="lora"))
    with pytest.raises(AdapterError) as info:
        apply_adapter(other, path, "small_vit", SHA_A)
    _assert_names_file(info, path, "another config")


def test_save_validates_its_inputs(trained, tmp_path):
    model, _ = trained
    target = tmp_path / "x.safetensors"
    with pytest.raises(AdapterError, match="base_sha256"):
        save_adapter(target, model, base_model_name="small_vit", base_sha256="abc")
    with pytest.raises(AdapterError, match="no adapters"):
        save_adapter(target, small_sam(), base_model_name="small_vit", base_sha256=SHA_A)
    with pytest.raises(AdapterError, match="config is needed"):
        save_adapter(target, adapter_state_dict(model), base_model_name="small_vit", base_sha256=SHA_A)
    assert not target.exists()
