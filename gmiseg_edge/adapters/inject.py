"""Injection of adapters into a SAM-family model's attention projections, freezing, and parameter counts.

Encoder: every attention ``qkv`` Linear (segment-anything's ViT ``Attention`` and our TinyViT ``Attention``)
is wrapped by an :class:`AdaptedLinear` with one bypass per target, added to that target's output rows:
contiguous blocks in SAM's ViT (Q = rows [0, dim), V = [2·dim, 3·dim)), per-head interleaved rows in TinyViT
(:meth:`gmiseg_edge.models.tiny_vit.Attention.qkv_rows`). Decoder (``include_decoder``): the
``q_proj``/``k_proj``/``v_proj`` Linears of segment-anything's two-way transformer, all rows. A task adapter
(``include_encoder=False``) has only the decoder sites; it fits a whole SAM model and a
:class:`~gmiseg_edge.models.graphs.DecoderGraph` alike (both hold the decoder as ``mask_decoder``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from segment_anything.modeling.image_encoder import Attention as SamViTAttention
from segment_anything.modeling.transformer import Attention as DecoderAttention
from torch import nn

from gmiseg_edge.adapters.config import AdapterConfig, AdapterError
from gmiseg_edge.adapters.layers import AdaptedLinear
from gmiseg_edge.models.tiny_vit import Attention as TinyViTAttention

ADAPTER_KEY = ".adapters."
DECODER_PREFIX = "mask_decoder."

Sites = dict[str, dict[str, torch.Tensor]]  # Linear name -> target -> output rows


@dataclass(frozen=True)
class ParameterCounts:
    """Trainable and total parameters of a model (adapters included in both when trainable)."""

    trainable: int
    total: int
    adapter: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{self.trainable:,} trainable of {self.total:,} ({100 * self.fraction:.2f}%), {self.adapter:,} adapter"


def find_sites(model: nn.Module, config: AdapterConfig) -> Sites:
    """Where :func:`inject_adapters` would put adapters: Linear name -> {target: output rows}, in module order."""
    sites: Sites = {}
    encoder_found = False
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, (SamViTAttention, TinyViTAttention)):
            encoder_found = True
            if not config.include_encoder:
                continue
        if isinstance(module, SamViTAttention):
            dim = module.qkv.in_features
            if module.qkv.out_features != 3 * dim:
                raise AdapterError(f"{prefix}qkv: expected {3 * dim} outputs, found {module.qkv.out_features}")
            sites[f"{prefix}qkv"] = {
                t: torch.arange("qkv".index(t) * dim, ("qkv".index(t) + 1) * dim) for t in config.targets
            }
        elif isinstance(module, TinyViTAttention):
            sites[f"{prefix}qkv"] = {t: module.qkv_rows(t) for t in config.targets}
        elif config.include_decoder and isinstance(module, DecoderAttention):
            for t in config.targets:
                proj = getattr(module, f"{t}_proj")
                sites[f"{prefix}{t}_proj"] = {t: torch.arange(proj.out_features)}
    if config.include_encoder and not encoder_found:
        raise AdapterError(f"{type(model).__name__} has no image-encoder attention layer (SAM ViT or TinyViT) to adapt")
    if not sites:
        raise AdapterError(f"{type(model).__name__} has no mask-decoder attention layer to adapt")
    return sites


def adapted_layers(model: nn.Module) -> Iterator[tuple[str, AdaptedLinear]]:
    """Every :class:`AdaptedLinear` of ``model`` with its qualified name."""
    for name, module in model.named_modules():
        if isinstance(module, AdaptedLinear):
            yield name, module


def adapter_config(model: nn.Module) -> AdapterConfig | None:
    """The config of the adapters injected into ``model``, or None when it has none."""
    return next((layer.config for _, layer in adapted_layers(model)), None)


def adapter_sites(model: nn.Module) -> Sites:
    """Adapted Linear name -> {target: output rows} of an adapted model."""
    return {name: {t: layer.rows(t).cpu() for t in layer.targets} for name, layer in adapted_layers(model)}


def inject_adapters(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Wrap the attention projections of ``model`` with adapters (in place) and freeze everything else.

    Trainable afterwards: the adapter parameters, plus the whole mask decoder when ``config.train_decoder``.
    Returns ``model``. Raises :class:`AdapterError` if it already has adapters or has no attention to adapt.
    """
    if adapter_config(model) is not None:
        raise AdapterError(f"{type(model).__name__} already has adapters; merge or rebuild it first")
    if config.train_decoder and not hasattr(model, "mask_decoder"):
        raise AdapterError("train_decoder needs a model with a mask_decoder")
    sites = find_sites(model, config)
    for name, rows in sites.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, attr, AdaptedLinear(getattr(parent, attr), rows, config))
    set_trainable(model, config.train_decoder)
    return model


def set_trainable(model: nn.Module, train_decoder: bool = False) -> None:
    """Freeze every parameter but the adapters' (and the mask decoder's when ``train_decoder``)."""
    for name, param in model.named_parameters():
        param.requires_grad = ADAPTER_KEY in name or (train_decoder and name.startswith(DECODER_PREFIX))


def parameter_counts(model: nn.Module) -> ParameterCounts:
    """Trainable, total and adapter parameter counts (buffers excluded)."""
    trainable = total = adapter = 0
    for name, param in model.named_parameters():
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
        adapter += param.numel() if ADAPTER_KEY in name else 0
    return ParameterCounts(trainable=trainable, total=total, adapter=adapter)


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors an adapter file holds: every adapter parameter, plus the whole mask decoder when the
    config has ``train_decoder`` (keys as in ``model.state_dict()``; detached, not copied)."""
    config = adapter_config(model)
    if config is None:
        raise AdapterError(f"{type(model).__name__} has no adapters")
    if any(layer.merged for _, layer in adapted_layers(model)):
        raise AdapterError("the model's adapters are merged into its weights: unmerge_adapters(model) first")
    state = model.state_dict()
    return {
        key: value.detach()
        for key, value in state.items()
        if ADAPTER_KEY in key or (config.train_decoder and key.startswith(DECODER_PREFIX))
    }


def expected_shapes(config: AdapterConfig, key: str, d_in: int, n_rows: int) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the bypass ``key`` (``<linear>.adapters.<target>``) of d_in inputs, n_rows outputs."""
    r = config.rank
    if config.kind == "lora":
        return {f"{key}.A": (r, d_in), f"{key}.B": (n_rows, r)}
    assert config.widths is not None
    ins = (d_in, *config.widths[:-1])
    shapes = {f"{key}.A.{i}": (h, h_in) for i, (h, h_in) in enumerate(zip(config.widths, ins, strict=True))}
    shapes[f"{key}.B"] = (n_rows, config.code_size)
    return shapes


def model_adapter_shapes(
    model: nn.Module, config: AdapterConfig, sites: Mapping[str, Mapping[str, torch.Tensor]]
) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of every adapter tensor ``model`` has (or would have) at ``sites``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, rows in sites.items():
        d_in = model.get_submodule(name).in_features
        for target, idx in rows.items():
            shapes.update(expected_shapes(config, f"{name}{ADAPTER_KEY}{target}", d_in, len(idx)))
    return shapes


def sites_to_json(sites: Mapping[str, Mapping[str, torch.Tensor]]) -> str:
    """Sites as JSON, each row set as ``[start, stop)`` runs: {"<linear>": {"q": [[0, 96]], ...}, ...}."""
    encoded: dict[str, dict[str, list[list[int]]]] = {}
    for name, rows in sites.items():
        encoded[name] = {}
        for target, idx in rows.items():
            runs: list[list[int]] = []
            for i in (int(v) for v in idx):
                if runs and runs[-1][1] == i:
                    runs[-1][1] = i + 1
                else:
                    runs.append([i, i + 1])
            encoded[name][target] = runs
    return json.dumps(encoded, separators=(",", ":"))


def sites_from_json(text: str) -> Sites:
    """Inverse of :func:`sites_to_json` (raises :class:`AdapterError` on a malformed value)."""
    try:
        encoded = json.loads(text)
        return {
            str(name): {str(t): torch.cat([torch.arange(int(a), int(b)) for a, b in runs]) for t, runs in rows.items()}
            for name, rows in encoded.items()
        }
    except (ValueError, TypeError, AttributeError, RuntimeError) as exc:
        raise AdapterError(f"malformed adapter sites ({type(exc).__name__}: {exc})") from None
