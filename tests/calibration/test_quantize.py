"""Fast checks of the int8 quantiser on a tiny attention-like graph (real ONNX Runtime, no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gmiseg_edge.calibration.quantize import activation_matmuls, quantize_encoder
from gmiseg_edge.runtime.backends.onnxrt.session import cpu_session

TOKENS, WIDTH = 64, 96


def _tiny_encoder(path: Path) -> None:
    """image (1, TOKENS, WIDTH) -> linear -> (x · xᵀ) · x -> linear: two weight MatMuls, two activation ones."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.1, (WIDTH, WIDTH)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.1, (WIDTH, WIDTH)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["image", "w1"], ["h"], name="/fc1/MatMul"),
        helper.make_node("Transpose", ["h"], ["ht"], name="/t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["h", "ht"], ["scores"], name="/attn/MatMul"),
        helper.make_node("Softmax", ["scores"], ["p"], name="/softmax", axis=-1),
        helper.make_node("MatMul", ["p", "h"], ["mixed"], name="/attn/MatMul_1"),
        helper.make_node("MatMul", ["mixed", "w2"], ["embedding"], name="/fc2/MatMul"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, TOKENS, WIDTH])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, TOKENS, WIDTH])],
        [w1, w2],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _inputs(count: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.normal(0, 1, (1, TOKENS, WIDTH)).astype(np.float32) for _ in range(count)]


def _run(path: Path, x: np.ndarray, optimized: Path | None = None) -> np.ndarray:
    session = cpu_session(path, optimized_path=optimized)
    return session.run(None, {"image": x})[0]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "encoder.onnx"
    _tiny_encoder(path)
    return path


def test_activation_matmuls_are_the_ones_without_a_constant_input(tiny):
    assert sorted(activation_matmuls(tiny)) == ["/attn/MatMul", "/attn/MatMul_1"]


def test_static_cpu_mode_runs_weight_matmuls_as_int8_kernels(tiny, tmp_path):
    target = tmp_path / "encoder.int8.onnx"
    info = quantize_encoder(tiny, target, _inputs(), "static")
    assert info["activations"] == "uint8 asymmetric" and info["calibration_images"] == 4
    optimized = tmp_path / "optimized.onnx"
    x = _inputs(1)[0]
    assert _cosine(_run(target, x, optimized), _run(tiny, x)) > 0.99
    ops = [n.op_type for n in onnx.load(str(optimized)).graph.node]
    # ONNX Runtime fused both weight MatMuls with their Q/DQ into int8 kernels; attention·V stayed float.
    assert ops.count("QLinearMatMul") == 2
    assert "MatMul" in ops


def test_tensorrt_target_is_symmetric_int8_qdq(tiny, tmp_path):
    target = tmp_path / "encoder.int8-trt.onnx"
    info = quantize_encoder(tiny, target, _inputs(), "tensorrt")
    assert info["activations"] == "int8 symmetric" and info["calibration_images"] == 4
    model = onnx.load(str(target))
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize, "no Q/DQ written"
    for node in quantize:
        zero_point = constants[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any()
    x = _inputs(1)[0]
    assert _cosine(_run(target, x), _run(tiny, x)) > 0.99


def test_bad_mode_and_missing_calibration_are_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        quantize_encoder(tiny, tmp_path / "x.onnx", _inputs(), "gpu")
    with pytest.raises(ValueError, match="calibration"):
        quantize_encoder(tiny, tmp_path / "x.onnx", [], "tensorrt")
    with pytest.raises(ValueError, match="calibration"):
        quantize_encoder(tiny, tmp_path / "x.onnx", [], "static")


def _tiny_image_encoder(path: Path, size: int) -> None:
    """image (1, 3, size, size) -> rows of pixels -> two linear layers: the encoder interface, in small."""
    rng = np.random.default_rng(3)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (size, size)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (size, size)).astype(np.float32), "w2")
    shape = numpy_helper.from_array(np.array([1, 3 * size, size], np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["image", "shape"], ["rows"], name="/rows"),
        helper.make_node("MatMul", ["rows", "w1"], ["h"], name="/fc1/MatMul"),
        helper.make_node("Relu", ["h"], ["a"], name="/relu"),
        helper.make_node("MatMul", ["a", "w2"], ["image_embeddings"], name="/proj/MatMul"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_image",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("image_embeddings", TensorProto.FLOAT, [1, 3 * size, size])],
        [w1, w2, shape],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("accepted", [True, False])
def test_cpu_graph_is_dynamic_unless_the_gate_rejects_it(tmp_path, accepted):
    from gmiseg_edge.calibration.quantize import CPU_GRAPH, TENSORRT_GRAPH, quantize_graphs
    from gmiseg_edge.core.transforms import PreprocessConfig

    _tiny_image_encoder(tmp_path / "encoder.onnx", 16)
    seen: list[set[str]] = []

    def gate(path: Path) -> tuple[bool, str]:
        seen.append({n.op_type for n in onnx.load(str(path)).graph.node})
        return accepted, "" if accepted else "min mask Dice 0.5 < 0.97 (the test's gate)"

    info = quantize_graphs(tmp_path, PreprocessConfig(input_size=16, normalization="minmax"), "samples", limit=3,
                           accept=gate)
    assert len(seen) == 1 and "DynamicQuantizeLinear" in seen[0]  # the gate saw the dynamic graph
    written = {n.op_type for n in onnx.load(str(tmp_path / CPU_GRAPH)).graph.node}
    if accepted:
        assert info[CPU_GRAPH]["mode"] == "dynamic" and "rejected" not in info[CPU_GRAPH]
        assert "DynamicQuantizeLinear" in written
    else:
        assert info[CPU_GRAPH]["mode"] == "static" and "0.5 < 0.97" in info[CPU_GRAPH]["rejected"]["reason"]
        assert "QuantizeLinear" in written and "DynamicQuantizeLinear" not in written
        assert len(info[CPU_GRAPH]["calibration_slices"]) == 3
    assert info[TENSORRT_GRAPH]["mode"] == "tensorrt" and info[TENSORRT_GRAPH]["calibration_images"] == 3
    x = np.random.default_rng(4).random((1, 3, 16, 16), dtype=np.float32)
    assert _cosine(_run(tmp_path / CPU_GRAPH, x), _run(tmp_path / "encoder.onnx", x)) > 0.99
