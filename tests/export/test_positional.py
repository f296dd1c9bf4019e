"""The decoder's dense positional encoding computed in the graph: segment-anything's values, and a graph
rewritten to compute it gives the stored constant's outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from gmiseg_edge.export.positional import compute_dense_pe_in_graph, dense_pe


def test_dense_pe_is_segment_anythings():
    torch = pytest.importorskip("torch")
    from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom

    torch.manual_seed(0)
    layer = PositionEmbeddingRandom(num_pos_feats=8)
    theirs = layer((5, 7)).detach().numpy()  # (16, 5, 7)
    ours = dense_pe(layer.positional_encoding_gaussian_matrix.numpy(), 5, 7)  # (1, 35, 16)
    assert np.abs(ours[0].T.reshape(16, 5, 7) - theirs).max() < 1e-5


def _graph(path, constant: np.ndarray) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(constant.shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(constant.shape))
    node = helper.make_node("Add", ["x", "pe"], ["y"])
    graph = helper.make_graph([node], "g", [x], [y], [numpy_helper.from_array(constant, "pe")])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_the_rewritten_graph_computes_the_constant(tmp_path):
    gaussian = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    constant = dense_pe(gaussian, 3, 4)
    _graph(tmp_path / "g.onnx", constant)
    assert compute_dense_pe_in_graph(tmp_path / "g.onnx", gaussian, (3, 4))
    model = onnx.load(str(tmp_path / "g.onnx"))
    assert "pe" not in {t.name for t in model.graph.initializer}
    x = np.random.default_rng(1).normal(size=constant.shape).astype(np.float32)
    (y,) = ort.InferenceSession(str(tmp_path / "g.onnx")).run(None, {"x": x})
    assert np.abs(y - (x + constant)).max() < 1e-5
    _graph(tmp_path / "other.onnx", constant + 1)  # not the encoding: left as it is
    before = (tmp_path / "other.onnx").read_bytes()
    assert not compute_dense_pe_in_graph(tmp_path / "other.onnx", gaussian, (3, 4))
    assert (tmp_path / "other.onnx").read_bytes() == before
