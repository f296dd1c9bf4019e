"""Exact merge of adapters into the base weights: ``W ← W + ΔW`` on the adapted rows, biases untouched.

Three forms:

- :func:`merge` returns a new plain model (a deep copy; the adapted model is left as it is) whose state dict
  has exactly the base model's keys and shapes: what export takes.
- :func:`merge_adapters` / :func:`unmerge_adapters` fold ΔW into the adapted model's weights in place (the
  bypasses are then skipped) and restore the original weights bit for bit.
- :func:`merge_state_dict` does the same on tensors alone: a base state dict plus a loaded adapter file.

ΔW is computed in float64 and ``W + ΔW`` is rounded once to W's dtype, the same arithmetic in all three forms.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from gmiseg_edge.adapters.config import AdapterConfig, AdapterError
from gmiseg_edge.adapters.inject import ADAPTER_KEY, adapted_layers, expected_shapes, sites_from_json
from gmiseg_edge.adapters.layers import delta_from_tensors, merged_weight


def merge(model: nn.Module) -> nn.Module:
    """A new plain model: a deep copy of ``model`` with every adapted Linear replaced by a Linear holding
    ``W + ΔW``; all its parameters are trainable again, as in a freshly built model. ``model`` is unchanged."""
    merged = copy.deepcopy(model)
    for name, layer in list(adapted_layers(merged)):
        parent_name, _, attr = name.rpartition(".")
        setattr(merged.get_submodule(parent_name), attr, layer.to_linear())
    for param in merged.parameters():
        param.requires_grad = True
    return merged


def merge_adapters(model: nn.Module) -> None:
    """Fold every adapter's ΔW into its Linear's weight, in place; the model keeps its adapter modules."""
    for _, layer in adapted_layers(model):
        layer.merge()


def unmerge_adapters(model: nn.Module) -> None:
    """Undo :func:`merge_adapters`: restore the weights saved when merging (exactly)."""
    for _, layer in adapted_layers(model):
        layer.unmerge()


def merge_state_dict(
    base_state_dict: Mapping[str, torch.Tensor],
    config: AdapterConfig,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    source: str = "adapter",
) -> dict[str, torch.Tensor]:
    """The merged state dict of a base model and an adapter file's contents (``*load_adapter(path)``).

    Same keys, shapes and dtypes as ``base_state_dict`` (a new dict; changed tensors are new, the others
    shared). Decoder tensors saved whole (``train_decoder``) replace the base ones before ΔW is added.
    Errors name ``source`` (give the adapter's path).
    """
    if "sites" not in metadata:
        raise AdapterError(f"{source}: no adapter sites recorded; apply it to a model and use merge() instead")
    sites = sites_from_json(metadata["sites"])
    out = dict(base_state_dict)
    for key, value in tensors.items():
        if ADAPTER_KEY in key:
            continue
        if key not in out or tuple(out[key].shape) != tuple(value.shape):
            found = tuple(out[key].shape) if key in out else "missing"
            raise AdapterError(f"{source}: tensor {key} {tuple(value.shape)} does not fit the base model ({found})")
        out[key] = value.to(dtype=out[key].dtype, device=out[key].device).clone()
    used: set[str] = set()
    for name, rows in sites.items():
        wkey = f"{name}.weight"
        if wkey not in out or out[wkey].dim() != 2:
            raise AdapterError(f"{source}: adapted layer {name} is not a Linear of the base model")
        d_out, d_in = out[wkey].shape
        deltas = {}
        for target, idx in rows.items():
            if int(idx.max()) >= d_out:
                raise AdapterError(f"{source}: rows of {name} ({target}) exceed its {d_out} outputs")
            prefix = f"{name}{ADAPTER_KEY}{target}"
            shapes = expected_shapes(config, prefix, d_in, len(idx))
            for key, shape in shapes.items():
                if key not in tensors or tuple(tensors[key].shape) != shape:
                    found = tuple(tensors[key].shape) if key in tensors else "missing"
                    raise AdapterError(f"{source}: tensor {key} should have shape {shape}, found {found}")
            used.update(shapes)
            deltas[target] = delta_from_tensors(config, {k[len(prefix) + 1 :]: tensors[k] for k in shapes})
        out[wkey] = merged_weight(out[wkey], rows, deltas)
    unused = sorted(k for k in tensors if ADAPTER_KEY in k and k not in used)
    if unused:
        raise AdapterError(f"{source}: {len(unused)} adapter tensors belong to no recorded site, e.g. {unused[:3]}")
    return out
