"""Compute the decoder's dense positional encoding in the graph instead of storing it (4 MiB less per decoder).

The mask decoder adds SAM's random-Fourier positional encoding of the 64 x 64 grid to the image tokens; the
exported graph stores it as a constant (1, 4096, 256) float32 tensor, a fifth of a task decoder's file. It is
``[sin(2π (2c - 1) G), cos(2π (2c - 1) G)]`` for the grid's cell centres c in [0, 1]² and the prompt encoder's
(2, 128) Gaussian matrix G, so the graph can compute it from 32 KiB of coordinates and G: a MatMul, Sin, Cos and
Concat, run once per decoder call (about 1 MFLOP beside the decoder's ~2 GFLOP). A graph without that constant
(a changed export) is left as it is; the task decoder's validation against PyTorch checks the result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

PREFIX = "dense_pe_computed"


def grid_coordinates(height: int, width: int) -> np.ndarray:
    """(1, H·W, 2) float32: each cell centre as (x, y) in [-1, 1], row-major, as segment-anything's
    ``PositionEmbeddingRandom`` places them before the Gaussian projection."""
    y, x = np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width, indexing="ij")
    return (2 * np.stack([x, y], axis=-1).reshape(1, height * width, 2) - 1).astype(np.float32)


def dense_pe(gaussian: np.ndarray, height: int = 64, width: int = 64) -> np.ndarray:
    """The (1, H·W, 2·F) encoding for a (2, F) Gaussian matrix, in float64 then float32."""
    projected = 2 * np.pi * (grid_coordinates(height, width).astype(np.float64) @ gaussian.astype(np.float64))
    return np.concatenate([np.sin(projected), np.cos(projected)], axis=-1).astype(np.float32)


def compute_dense_pe_in_graph(path: Path, gaussian: np.ndarray, grid: tuple[int, int] = (64, 64),
                              atol: float = 1e-4) -> bool:
    """Replace the stored dense positional encoding of the decoder graph at ``path`` by its computation (in
    place). Returns False, changing nothing, when no constant matches :func:`dense_pe` within ``atol``."""
    model = onnx.load(str(path))
    expected = dense_pe(gaussian, *grid)
    for index, tensor in enumerate(model.graph.initializer):
        if tuple(tensor.dims) != expected.shape:
            continue
        if not np.allclose(numpy_helper.to_array(tensor), expected, atol=atol, rtol=0):
            continue
        name = tensor.name
        del model.graph.initializer[index]
        model.graph.initializer.extend([
            numpy_helper.from_array(grid_coordinates(*grid), f"{PREFIX}/coords"),
            numpy_helper.from_array((2 * np.pi * gaussian.astype(np.float64)).astype(np.float32), f"{PREFIX}/gauss"),
        ])
        nodes = [
            helper.make_node("MatMul", [f"{PREFIX}/coords", f"{PREFIX}/gauss"], [f"{PREFIX}/projected"]),
            helper.make_node("Sin", [f"{PREFIX}/projected"], [f"{PREFIX}/sin"]),
            helper.make_node("Cos", [f"{PREFIX}/projected"], [f"{PREFIX}/cos"]),
            helper.make_node("Concat", [f"{PREFIX}/sin", f"{PREFIX}/cos"], [name], axis=-1),
        ]
        for node in reversed(nodes):
            model.graph.node.insert(0, node)
        onnx.checker.check_model(model)
        onnx.save_model(model, str(path))
        return True
    return False
