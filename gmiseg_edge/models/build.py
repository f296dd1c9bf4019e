"""Build zoo models in PyTorch and load their weights strictly (``torch.load(weights_only=True)``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from segment_anything.build_sam import sam_model_registry
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from gmiseg_edge.core.errors import ManifestError, WeightsError
from gmiseg_edge.core.files import sha256_of
from gmiseg_edge.core.manifest import Manifest
from gmiseg_edge.core.transforms import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from gmiseg_edge.models.tiny_vit import TinyViT, TinyViTConfig
from gmiseg_edge.models.weights import resolve_weights
from gmiseg_edge.models.zoo import ModelSpec, get_spec

EMBED_GRID = 64
EMBED_DIM = 256


def _sam_heads(input_size: int) -> tuple[PromptEncoder, MaskDecoder]:
    """SAM's prompt encoder and mask decoder (shared by every model of the zoo)."""
    prompt_encoder = PromptEncoder(
        embed_dim=EMBED_DIM,
        image_embedding_size=(EMBED_GRID, EMBED_GRID),
        input_image_size=(input_size, input_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=EMBED_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return prompt_encoder, mask_decoder


def _tiny_vit_sam(config: TinyViTConfig) -> Sam:
    prompt_encoder, mask_decoder = _sam_heads(config.img_size)
    return Sam(
        image_encoder=TinyViT(config),
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )


_BUILDERS: dict[str, Callable[[], Sam]] = {
    "lite_medsam": lambda: _tiny_vit_sam(TinyViTConfig(img_size=256, stem="conv1x1")),
    "mobile_sam": lambda: _tiny_vit_sam(TinyViTConfig(img_size=1024, stem="conv3x3_s2", classifier_classes=1000)),
    "vit_b": lambda: sam_model_registry["vit_b"](checkpoint=None),
    "vit_l": lambda: sam_model_registry["vit_l"](checkpoint=None),
    "vit_h": lambda: sam_model_registry["vit_h"](checkpoint=None),
}


def build_model(name: str, checkpoint: str | Path | None = None, pretrained: bool = True) -> Sam:
    """A zoo model in eval mode, with its released weights (or a given checkpoint) loaded strictly.

    ``pretrained=False`` keeps the random initialisation (tests, shapes). For ``vit_*`` a checkpoint path is
    required when ``pretrained``.
    """
    spec = get_spec(name)
    model = _BUILDERS[name]()
    if pretrained or checkpoint is not None:
        path = Path(checkpoint) if checkpoint is not None else _default_checkpoint(spec)
        load_checkpoint(model, path, spec)
    return model.eval()


def checkpoint_sha256(name: str, checkpoint: str | Path | None = None) -> str:
    """sha256 of the checkpoint ``build_model`` would load (recorded in adapters and manifests)."""
    spec = get_spec(name)
    if checkpoint is None:
        if spec.weights is None:
            raise WeightsError(f"model {name!r} needs a checkpoint path")
        return spec.weights.sha256
    return sha256_of(checkpoint)


def _default_checkpoint(spec: ModelSpec) -> Path:
    if spec.weights is None:
        raise WeightsError(
            f"model {spec.name!r} has no built-in weights: give the path of a SAM {spec.name} checkpoint "
            "(segment-anything's sam_{spec.name}_*.pth) with --checkpoint"
        )
    return resolve_weights(spec.name)


def load_checkpoint(model: nn.Module, path: Path, spec: ModelSpec) -> None:
    """Load a state dict file into ``model`` strictly, with errors that name the file."""
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise WeightsError(
            f"{path}: not a {spec.name} checkpoint: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}, {len(wrong)} keys of the wrong shape {wrong[:3]}"
        )
    model.load_state_dict(state, strict=True)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers such as batch-norm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def folder_checkpoint(manifest: Manifest) -> tuple[Path | None, str]:
    """The base checkpoint a model folder was exported from (its own copy when it holds one, else None: the zoo's
    released weights), checked against the manifest's sha256; returns it and the sha256 as computed. A missing
    or different checkpoint is a ManifestError naming it."""
    base = manifest.base_checkpoint
    local = manifest.file_path(base["file"], "base_checkpoint.file") if base.get("file") else None
    checkpoint = local if local is not None and local.is_file() else None
    try:
        sha = checkpoint_sha256(manifest.model_name, checkpoint)
    except Exception as exc:
        raise ManifestError(f"{manifest.folder}: the base checkpoint {base.get('file')} is needed in the model "
                            f"folder ({exc})") from exc
    if sha != base.get("sha256"):
        raise ManifestError(f"{checkpoint or manifest.model_name + ' released weights'}: sha256 {sha} is not the "
                            f"base checkpoint {base.get('sha256')} the folder {manifest.folder} was exported from")
    return checkpoint, sha
