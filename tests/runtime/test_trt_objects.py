"""The TensorRT decoder profile for the prompt dimension K (1..64 objects), and, on a GPU, K objects through
a built engine."""

from __future__ import annotations

import numpy as np
import pytest

from gmiseg_edge.core.graph_io import DECODER_INPUTS, ENCODER_OUTPUT
from gmiseg_edge.runtime.backends.trt.build import decoder_shapes
from gmiseg_edge.runtime.backends.trt.device import DECODER_MAX_OBJECTS, DECODER_MAX_POINTS, DECODER_OPT_OBJECTS


def test_decoder_profile_spans_one_to_sixty_four_objects():
    shapes = decoder_shapes()
    assert set(shapes) == set(DECODER_INPUTS) - {ENCODER_OUTPUT}  # the embedding is static: (1, 256, 64, 64)
    for name, (low, opt, high) in shapes.items():
        assert (low[0], opt[0], high[0]) == (1, DECODER_OPT_OBJECTS, DECODER_MAX_OBJECTS) == (1, 16, 64), name
        assert all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)), name
    assert shapes["point_coords"][2] == (64, DECODER_MAX_POINTS, 2)
    assert shapes["mask_input"][1] == (16, 1, 256, 256) and shapes["has_mask_input"][2] == (64,)

    from polygraphy.backend.trt import Profile  # polygraphy's profile object (no TensorRT needed to fill it)

    from gmiseg_edge.runtime.backends.trt.build import decoder_profile

    profile = decoder_profile(Profile())
    assert tuple(profile["point_labels"].max) == (64, DECODER_MAX_POINTS)
    assert tuple(profile["has_mask_input"].opt) == (16,)


@pytest.mark.gpu
def test_tensorrt_decodes_sixty_four_objects_in_one_run_like_onnx_runtime(exported_models):
    from gmiseg_edge.core.prompts import boxes_from_labels
    from gmiseg_edge.data import load_sample_cases, load_sample_pair
    from gmiseg_edge.metrics import dice
    from gmiseg_edge.runtime import load
    from gmiseg_edge.runtime.backends.trt.build import build_engines
    from gmiseg_edge.runtime.backends.trt.device import tensorrt_status

    status = tensorrt_status()
    if not status.available:
        pytest.skip(f"needs TensorRT and a CUDA GPU: {status.reason}")
    folder = exported_models("lite_medsam").folder
    build_engines(folder, "fp32")
    image = load_sample_cases(["dsb_nuclei"])[0].image
    boxes = boxes_from_labels(load_sample_pair("dsb_nuclei")[1].array)[1][:64]
    trt, ort = load(folder, backend="trt", precision="fp32"), load(folder, backend="ort", precision="fp32")
    runs = []
    decode = trt.backend.decode
    trt.backend.decode = lambda inputs: runs.append(inputs.objects) or decode(inputs)
    got, want = trt.predict(image, boxes=boxes), ort.predict(image, boxes=boxes)
    assert runs == [64]
    assert min(dice(g.mask, w.mask) for g, w in zip(got, want, strict=True)) >= 0.99
    assert np.abs(got[0].low_res_logits - want[0].low_res_logits).max() < 0.05
