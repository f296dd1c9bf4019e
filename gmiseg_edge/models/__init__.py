"""Model zoo: names, weight sources and preprocessing (torch-free), and PyTorch builders (``build``)."""

from gmiseg_edge.models.zoo import DEFAULT_MODEL, MODELS, ModelSpec, WeightSource, get_spec

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelSpec", "WeightSource", "get_spec"]
