"""Torch-free runtime: backends (ONNX Runtime, TensorRT, PyTorch reference), embedding cache, interactive
predictor, support-set segmentation and file segmentation. ``transforms`` holds the pre/post-processing.

    from gmiseg_edge.runtime import load
    predictor = load("models/lite_medsam")              # auto: TensorRT engines if usable, else ONNX Runtime
    prediction = predictor.predict(image, box=[40, 30, 120, 90])
    prediction.mask                                      # bool (H, W)

Names are imported lazily so that ``gmiseg_edge.runtime.transforms`` stays importable with numpy alone.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load": "loader",
    "check_precision": "loader",
    "Predictor": "predictor",
    "Prediction": "predictor",
    "EncodedImage": "predictor",
    "EmbeddingCache": "cache",
    "CacheStats": "cache",
    "SupportSetSegmenter": "support_set",
    "segment_files": "segment_files",
    "InputError": "errors",
    "BackendError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
