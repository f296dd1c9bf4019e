"""PyTorch reference backend: the zoo model rebuilt from the manifest, with its adapter merged, in FP32.

Imported only when chosen (it needs torch and segment-anything). The encoder is the model's image encoder;
the decoder is the very module that was exported: both run through :class:`gmiseg_edge.models.reference.TorchReference`,
so it takes the same inputs as the ONNX decoder. The base checkpoint must be the one the manifest records (sha256):
the zoo's released weights from the weight cache, or for ``vit_*`` the checkpoint file placed in the model
folder. A merged adapter is re-applied from the adapter file, which export copies into the model folder.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from gmiseg_edge.adapters import apply_adapter, merge_adapters
from gmiseg_edge.core.files import sha256_of
from gmiseg_edge.core.graph_io import DecoderInputs
from gmiseg_edge.core.manifest import Manifest, ManifestError
from gmiseg_edge.models.build import build_model, folder_checkpoint
from gmiseg_edge.models.reference import TorchReference
from gmiseg_edge.runtime.backends.base import Backend
from gmiseg_edge.runtime.backends.options import BackendOptions


def _merge_adapter(model: torch.nn.Module, manifest: Manifest, base_sha: str) -> str:
    """Apply and merge the manifest's adapter (from the model folder); returns its sha256."""
    adapter = manifest.adapter
    assert adapter is not None
    path = manifest.file_path(adapter["file"], "adapter.file")
    if not path.is_file():
        raise ManifestError(f"{path}: the model was exported with adapter {adapter['file']} merged; the torch "
                            "backend rebuilds it from that file: copy it into the model folder")
    sha = sha256_of(path)
    if sha != adapter["sha256"]:
        raise ManifestError(f"{path}: sha256 differs from the adapter recorded in the manifest")
    apply_adapter(model, path, manifest.model_name, base_sha)
    merge_adapters(model)
    return sha


class TorchBackend(Backend):
    """The FP32 PyTorch model on the CPU (the parity reference; not the fast path)."""

    name = "torch"

    def __init__(self, reference: TorchReference, encoder_id: str) -> None:
        super().__init__(encoder_id, "fp32", f"torch {torch.__version__} CPU fp32")
        self.reference = reference

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self.reference.encode(image)

    def decode(self, inputs: DecoderInputs) -> tuple[np.ndarray, np.ndarray]:
        return self.reference.decode(inputs)


def open_torch(manifest: Manifest, precision: str, options: BackendOptions) -> TorchBackend:
    """Rebuild the exported model in PyTorch (base checkpoint and adapter verified against the manifest)."""

    checkpoint, base_sha = folder_checkpoint(manifest)
    model = build_model(manifest.model_name, checkpoint=checkpoint)
    parts = ["torch", manifest.model_name, base_sha]
    if manifest.adapter:
        parts.append(_merge_adapter(model, manifest, base_sha))
    reference = TorchReference(model, manifest.preprocess, options.threads)
    return TorchBackend(reference, hashlib.sha256(":".join(parts).encode()).hexdigest())
