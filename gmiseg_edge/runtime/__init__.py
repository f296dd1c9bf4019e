"""Torch-free runtime: backends (ONNX Runtime, TensorRT, PyTorch reference), embedding cache, interactive
predictor, support-set segmentation. Pre/post-processing and prompt layout live in :mod:`gmiseg_edge.core`.

    from gmiseg_edge.runtime import load
    predictor = load("models/lite_medsam")              # auto: TensorRT engines if usable, else ONNX Runtime
    prediction = predictor.predict(image, box=[40, 30, 120, 90])
    prediction.mask                                      # bool (H, W)

Names are imported lazily, so ``import gmiseg_edge.runtime`` loads no inference library.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load": "gmiseg_edge.runtime.loader",
    "check_precision": "gmiseg_edge.runtime.loader",
    "Predictor": "gmiseg_edge.runtime.predictor",
    "EncodedImage": "gmiseg_edge.runtime.predictor",
    "Prediction": "gmiseg_edge.core.prediction",
    "EmbeddingCache": "gmiseg_edge.runtime.cache",
    "CacheStats": "gmiseg_edge.runtime.cache",
    "SupportSetSegmenter": "gmiseg_edge.runtime.support.segmenter",
    "segment_volume_from_supports": "gmiseg_edge.runtime.support.segment3d",
    "InputError": "gmiseg_edge.core.errors",
    "BackendError": "gmiseg_edge.core.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
