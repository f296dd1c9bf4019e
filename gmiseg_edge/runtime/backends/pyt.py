"""PyTorch reference backend: the zoo model rebuilt from the manifest, with its adapter merged, in FP32.

Imported only when chosen (it needs torch and segment-anything). The encoder is the model's image encoder;
the decoder is the very module that was exported (:class:`gmiseg_edge.export.graphs.DecoderGraph`), so it
takes the same inputs as the ONNX decoder. The base checkpoint must be the one the manifest records (sha256):
the zoo's released weights from the weight cache, or for ``vit_*`` the checkpoint file placed in the model
folder. A merged adapter is re-applied from the adapter file, which export copies into the model folder.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import torch

from gmiseg_edge.export.graphs import DecoderGraph
from gmiseg_edge.manifest import Manifest, ManifestError
from gmiseg_edge.models.build import build_model, checkpoint_sha256
from gmiseg_edge.models.weights import sha256_of
from gmiseg_edge.runtime.backends.base import Backend, DecoderInputs
from gmiseg_edge.runtime.backends.options import BackendOptions


def _checkpoint(manifest: Manifest) -> Path | None:
    """The base checkpoint to build with (None: the zoo's released weights), checked against the manifest."""
    base = manifest.data.get("base_checkpoint") or {}
    local = manifest.folder / str(base.get("file", ""))
    checkpoint = local if base.get("file") and local.is_file() else None
    try:
        sha = checkpoint_sha256(manifest.model_name, checkpoint)
    except Exception as exc:
        raise ManifestError(f"{manifest.folder}: the torch backend needs the base checkpoint {base.get('file')} "
                            f"in the model folder ({exc})") from exc
    if sha != base.get("sha256"):
        raise ManifestError(f"{checkpoint or manifest.model_name + ' released weights'}: sha256 {sha} is not the "
                            f"base checkpoint {base.get('sha256')} the manifest was exported from")
    return checkpoint


def _merge_adapter(model: torch.nn.Module, manifest: Manifest, base_sha: str) -> str:
    """Apply and merge the manifest's adapter (from the model folder); returns its sha256."""
    from gmiseg_edge.adapters import apply_adapter, merge_adapters

    adapter = manifest.data["adapter"]
    path = manifest.folder / adapter["file"]
    if not path.is_file():
        raise ManifestError(f"{path}: the model was exported with adapter {adapter['file']} merged; the torch "
                            "backend rebuilds it from that file: copy it into the model folder")
    if sha256_of(path) != adapter["sha256"]:
        raise ManifestError(f"{path}: sha256 differs from the adapter recorded in the manifest")
    apply_adapter(model, path, manifest.model_name, base_sha)
    merge_adapters(model)
    return str(adapter["sha256"])


class TorchBackend(Backend):
    """The FP32 PyTorch model on the CPU (the parity reference; not the fast path)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, encoder_id: str, threads: int | None) -> None:
        super().__init__(encoder_id, "fp32", f"torch {torch.__version__} CPU fp32")
        self._model = model.eval()
        self._decoder = DecoderGraph(model).eval()
        self._threads = threads
        self._lock = threading.Lock()  # torch.set_num_threads is process-wide; keep runs ordered

    def _run(self, fn, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        with self._lock, torch.inference_mode():
            if self._threads:
                torch.set_num_threads(int(self._threads))
            out = fn(*(torch.from_numpy(np.require(a, np.float32, ["C", "W"])) for a in args))
        out = out if isinstance(out, tuple) else (out,)
        return tuple(t.float().numpy() for t in out)

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self._run(self._model.image_encoder, image)[0]

    def decode(self, inputs: DecoderInputs) -> tuple[np.ndarray, np.ndarray]:
        low_res, iou = self._run(self._decoder, *inputs.feed().values())
        return low_res, iou


def open_torch(manifest: Manifest, precision: str, options: BackendOptions) -> TorchBackend:
    """Rebuild the exported model in PyTorch (base checkpoint and adapter verified against the manifest)."""
    checkpoint = _checkpoint(manifest)
    model = build_model(manifest.model_name, checkpoint=checkpoint)
    base_sha = str(manifest.data["base_checkpoint"]["sha256"])
    parts = ["torch", manifest.model_name, base_sha]
    if manifest.data.get("adapter"):
        parts.append(_merge_adapter(model, manifest, base_sha))
    return TorchBackend(model, hashlib.sha256(":".join(parts).encode()).hexdigest(), options.threads)
