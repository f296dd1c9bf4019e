"""Adapter files: safetensors (never pickle) holding only adapter tensors, with metadata that ties them to
the exact base checkpoint they were trained on.

Metadata (all strings): ``format`` = ``gmiseg-edge-adapter``, ``format_version``, ``config`` (JSON of
:class:`AdapterConfig`), ``base_model`` (zoo name), ``base_sha256`` (of the base checkpoint file),
``gmiseg_edge_version`` and, when known, ``sites`` (JSON: adapted Linear -> target -> output-row runs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from gmiseg_edge import __version__
from gmiseg_edge.adapters.config import AdapterConfig, AdapterError
from gmiseg_edge.adapters.inject import (
    ADAPTER_KEY,
    DECODER_PREFIX,
    adapted_layers,
    adapter_config,
    adapter_sites,
    adapter_state_dict,
    expected_shapes,
    find_sites,
    inject_adapters,
    model_adapter_shapes,
    sites_from_json,
    sites_to_json,
)
from gmiseg_edge.core.files import write_bytes_atomic

FORMAT = "gmiseg-edge-adapter"
FORMAT_VERSION = "1"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PARAM = re.compile(r"(?P<prefix>.+\.adapters\.[qkv])\.(?P<param>A|A\.\d+|B)")


def save_adapter(
    path: str | Path,
    source: nn.Module | Mapping[str, torch.Tensor],
    config: AdapterConfig | None = None,
    base_model_name: str = "",
    base_sha256: str = "",
    sites: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write an adapter file atomically (temporary file in the same folder, then ``os.replace``).

    ``source``: an adapted model (its tensors, config and sites are taken from it) or a mapping of adapter
    tensors as :func:`adapter_state_dict` returns (then ``config`` is required; ``sites`` optional but needed
    by :func:`merge_state_dict`). ``extra_metadata``: more string entries (e.g. a task adapter's encoder
    identity); they cannot replace the standard ones. Returns the path written.
    """
    path = Path(path)
    if isinstance(source, nn.Module):
        model_config = adapter_config(source)
        if model_config is None:
            raise AdapterError(f"{path}: the model to save has no adapters")
        if config is not None and config != model_config:
            raise AdapterError(f"{path}: config {config} differs from the model's adapters {model_config}")
        config, tensors, sites = model_config, adapter_state_dict(source), adapter_sites(source)
    else:
        if config is None:
            raise AdapterError(f"{path}: a config is needed to save adapter tensors")
        tensors = dict(source)
    if not base_model_name:
        raise AdapterError(f"{path}: the base model name is required")
    if not _SHA256.fullmatch(base_sha256):
        raise AdapterError(f"{path}: base_sha256 must be 64 lowercase hex digits, got {base_sha256!r}")
    check_tensors(path, config, tensors, sites)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_json(),
        "base_model": base_model_name,
        "base_sha256": base_sha256,
        "gmiseg_edge_version": __version__,
    }
    if sites is not None:
        metadata["sites"] = sites_to_json(sites)
    clash = sorted(set(extra_metadata or {}) & {*metadata, "sites"})
    if clash:
        raise AdapterError(f"{path}: extra metadata may not replace {clash}")
    metadata.update({str(k): str(v) for k, v in (extra_metadata or {}).items()})
    data = safetensors_bytes({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, metadata)
    write_bytes_atomic(path, data)
    return path


def load_adapter(path: str | Path) -> tuple[AdapterConfig, dict[str, torch.Tensor], dict[str, str]]:
    """Read and validate an adapter file: (config, tensors, metadata). Every error names the file."""
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"{path}: adapter file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own error types for a truncated or foreign file
        raise AdapterError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    if metadata.get("format") != FORMAT:
        raise AdapterError(
            f"{path}: not a gmiseg-edge adapter (safetensors metadata 'format' is {metadata.get('format')!r}, "
            f"expected {FORMAT!r})"
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise AdapterError(
            f"{path}: unsupported adapter format version {metadata.get('format_version')!r} "
            f"(this gmiseg-edge {__version__} reads version {FORMAT_VERSION})"
        )
    missing = [k for k in ("config", "base_model", "base_sha256") if k not in metadata]
    if missing:
        raise AdapterError(f"{path}: adapter metadata lacks {missing}")
    try:
        config = AdapterConfig.from_json(metadata["config"])
        sites = sites_from_json(metadata["sites"]) if "sites" in metadata else None
    except AdapterError as exc:
        raise AdapterError(f"{path}: {exc}") from None
    check_tensors(path, config, tensors, sites)
    return config, tensors, metadata


def check_tensors(
    path: str | Path,
    config: AdapterConfig,
    tensors: Mapping[str, torch.Tensor],
    sites: Mapping[str, Mapping[str, torch.Tensor]] | None,
) -> None:
    """Check that ``tensors`` are floating point and consistent with ``config`` (and ``sites`` when given)."""
    if not tensors:
        raise AdapterError(f"{path}: the adapter holds no tensors")
    bad_dtype = sorted(k for k, v in tensors.items() if not v.is_floating_point())
    if bad_dtype:
        raise AdapterError(f"{path}: tensors {bad_dtype[:3]} are not floating point")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if ADAPTER_KEY not in key:
            if not (config.train_decoder and key.startswith(DECODER_PREFIX)):
                raise AdapterError(f"{path}: unexpected tensor {key} (neither an adapter nor a trained decoder tensor)")
            continue
        match = _PARAM.fullmatch(key)
        if match is None:
            raise AdapterError(f"{path}: unexpected adapter tensor name {key}")
        groups.setdefault(match["prefix"], {})[key] = value
    if sites is not None:
        recorded = {f"{name}{ADAPTER_KEY}{t}" for name, rows in sites.items() for t in rows}
        if set(groups) != recorded:
            extra, lacking = sorted(set(groups) - recorded), sorted(recorded - set(groups))
            raise AdapterError(
                f"{path}: tensors do not match the recorded sites: extra {extra[:3]}, missing {lacking[:3]}"
            )
    for prefix, group in groups.items():
        first = group.get(f"{prefix}.A", group.get(f"{prefix}.A.0"))
        last = group.get(f"{prefix}.B")
        if first is None or last is None or first.dim() != 2 or last.dim() != 2:
            raise AdapterError(f"{path}: {prefix} lacks its A/B matrices for a {config.kind} adapter")
        n_rows = last.shape[0]
        if sites is not None:
            name, _, target = prefix.rpartition(ADAPTER_KEY)
            n_rows = len(sites[name][target])
        expected = expected_shapes(config, prefix, first.shape[1], n_rows)
        _compare_shapes(path, expected, group, f"a {config.kind} adapter of rank {config.rank}")


def apply_adapter(model: nn.Module, path: str | Path, base_model_name: str, base_sha256: str) -> AdapterConfig:
    """Load an adapter file into ``model`` (injecting its adapters first if it has none), in place.

    Refused with :class:`AdapterError` naming the file when the file was made for another base model name or
    checkpoint sha256, when its sites or tensor shapes do not fit ``model``, or when the model already carries
    adapters of another config. Returns the adapter's config.
    """
    path = Path(path)
    config, tensors, metadata = load_adapter(path)
    expected = (metadata["base_model"], metadata["base_sha256"])
    if expected != (base_model_name, base_sha256):
        raise AdapterError(
            f"{path}: adapter was trained on base model {expected[0]!r} (checkpoint sha256 {expected[1]}), "
            f"but the model it is applied to is {base_model_name!r} (checkpoint sha256 {base_sha256})"
        )
    current = adapter_config(model)
    if current is not None and current != config:
        raise AdapterError(f"{path}: the model already has adapters of another config ({current} vs {config})")
    if any(layer.merged for _, layer in adapted_layers(model)):
        raise AdapterError(f"{path}: the model's adapters are merged; unmerge_adapters(model) first")
    sites = adapter_sites(model) if current is not None else find_sites(model, config)
    if "sites" in metadata:
        recorded = sites_from_json(metadata["sites"])
        if _sites_key(recorded) != _sites_key(sites):
            raise AdapterError(
                f"{path}: the adapter's layers/rows do not match this model's attention layers "
                f"({len(recorded)} adapted layers recorded, {len(sites)} in the model): another encoder?"
            )
    shapes = model_adapter_shapes(model, config, sites)
    if config.train_decoder:
        decoder = model.state_dict()
        shapes.update({k: tuple(v.shape) for k, v in decoder.items() if k.startswith(DECODER_PREFIX)})
    _compare_shapes(path, shapes, tensors, "this model")
    if current is None:
        inject_adapters(model, config)
    state = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for key, value in tensors.items():
            state[key].copy_(value)
    return config


def _sites_key(sites: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, dict[str, tuple[int, ...]]]:
    return {name: {t: tuple(int(i) for i in idx) for t, idx in rows.items()} for name, rows in sites.items()}


def _compare_shapes(
    path: str | Path, expected: Mapping[str, tuple[int, ...]], tensors: Mapping[str, torch.Tensor], what: str
) -> None:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong:
        details = ", ".join(f"{k} {tuple(tensors[k].shape)} instead of {tuple(expected[k])}" for k in wrong[:3])
        raise AdapterError(
            f"{path}: adapter tensors do not fit {what}: {len(missing)} missing {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} of the wrong shape [{details}]"
        )
