"""LoRA and Loose LoRA adapters for SAM-family models: injection into Q/V, exact merge, safetensors I/O.

Typical use::

    model = build_model("lite_medsam")
    inject_adapters(model, AdapterConfig(kind="loose_lora", rank=4))
    ...  # train: only adapter parameters are trainable
    save_adapter("adapter.safetensors", model, base_model_name="lite_medsam", base_sha256=sha)
    plain = merge(model)  # a plain SAM with W + ΔW, ready for export
"""

from gmiseg_edge.adapters.config import AdapterConfig, AdapterError
from gmiseg_edge.adapters.inject import (
    ParameterCounts,
    adapted_layers,
    adapter_config,
    adapter_sites,
    adapter_state_dict,
    find_sites,
    inject_adapters,
    parameter_counts,
    set_trainable,
)
from gmiseg_edge.adapters.io import FORMAT, FORMAT_VERSION, apply_adapter, load_adapter, save_adapter
from gmiseg_edge.adapters.layers import AdaptedLinear, LooseLoRA, LoRA, average_pool
from gmiseg_edge.adapters.merge import merge, merge_adapters, merge_state_dict, unmerge_adapters

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "AdaptedLinear",
    "AdapterConfig",
    "AdapterError",
    "LoRA",
    "LooseLoRA",
    "ParameterCounts",
    "adapted_layers",
    "adapter_config",
    "adapter_sites",
    "adapter_state_dict",
    "apply_adapter",
    "average_pool",
    "find_sites",
    "inject_adapters",
    "load_adapter",
    "merge",
    "merge_adapters",
    "merge_state_dict",
    "parameter_counts",
    "save_adapter",
    "set_trainable",
    "unmerge_adapters",
]
