"""Training checkpoints: adapter, optimizer, RNG state, epoch and early-stopping state in one file,
written atomically and read back with ``torch.load(weights_only=True)``; every error names the file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gmiseg_edge.core.errors import AdapterError, CheckpointError
from gmiseg_edge.core.files import atomic_path

FORMAT = "gmiseg-edge-train-checkpoint"
FORMAT_VERSION = 1
_REQUIRED = ("fingerprint", "base_model", "base_sha256", "epoch", "adapter", "optimizer", "torch_rng", "history")


def checkpoint_path(out: str | Path) -> Path:
    """Where a run writing the adapter ``out`` keeps its checkpoint: ``A.safetensors`` -> ``A.ckpt.pt``."""
    out = Path(out)
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.name
    return out.with_name(f"{stem}.ckpt.pt")


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` (plus the format tag) atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, tmp)
    return path


def load_checkpoint(
    path: str | Path, fingerprint: Mapping[str, Any], base_model: str, base_sha256: str
) -> dict[str, Any]:
    """Read a checkpoint and check it belongs to this run: same base model and checkpoint, same settings."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from (run without --resume to start afresh)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable training checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a gmiseg-edge training checkpoint")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {state.get('format_version')!r}")
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    if (state["base_model"], state["base_sha256"]) != (base_model, base_sha256):
        raise AdapterError(
            f"{path}: checkpoint was trained on base model {state['base_model']!r} (checkpoint sha256 "
            f"{state['base_sha256']}), not {base_model!r} (sha256 {base_sha256})"
        )
    saved = json.loads(state["fingerprint"])
    differ = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if differ:
        details = "; ".join(f"{k}: {saved.get(k)!r} there, {fingerprint.get(k)!r} now" for k in differ[:4])
        raise CheckpointError(f"{path}: checkpoint is of a run with other settings ({details})")
    return state


def load_tensors(path: str | Path, target: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy checkpoint ``tensors`` into the model tensors ``target`` (same names and shapes), in place."""
    if not isinstance(tensors, Mapping) or set(tensors) != set(target):
        extra = sorted(set(tensors) - set(target)) if isinstance(tensors, Mapping) else []
        raise CheckpointError(f"{path}: checkpoint adapter tensors do not match the model's (e.g. {extra[:3]})")
    with torch.no_grad():
        for key, value in tensors.items():
            if tuple(value.shape) != tuple(target[key].shape):
                raise CheckpointError(
                    f"{path}: checkpoint tensor {key} has shape {tuple(value.shape)}, "
                    f"the model's {tuple(target[key].shape)}"
                )
            target[key].copy_(value)
