"""Task decoders open in the ONNX Runtime backend's runner, on the provider their encoder's backend names; the
backend base knows no concrete backend (import-linter checks the imports, these tests the behaviour)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from gmiseg_edge.core.prompts import make_prompt
from gmiseg_edge.runtime.backends.base import Backend
from gmiseg_edge.runtime.backends.onnxrt.runner import open_task_decoder
from gmiseg_edge.runtime.backends.onnxrt.session import CPU


def test_backends_name_the_provider_of_their_task_decoders(predictor):
    assert Backend.task_providers(predictor.backend) == ()  # the base: none, so the CPU
    assert predictor.backend.task_providers() == (predictor.backend.providers[0],)


def test_a_task_decoder_falls_back_to_the_cpu_and_decodes_as_the_backend(predictor, model_dir):
    """The folder's own decoder graph opened as a task decoder: on a provider that cannot start here it opens on
    the CPU (never a session that silently fell back), and it decodes exactly as the backend's decoder does."""
    path = model_dir / "decoder.onnx"
    wanted = "CUDAExecutionProvider"
    decoder = open_task_decoder("base", path, (wanted,), threads=1)
    assert decoder.task == "base"
    if wanted in ort.get_available_providers():  # a GPU build: CUDA if it starts, else the CPU
        assert decoder.session.get_providers()[0] in (wanted, CPU)
    else:  # this build lacks CUDA: the CPU, not an error
        assert decoder.session.get_providers()[0] == CPU

    on_cpu = open_task_decoder("base", path, (), threads=1)
    assert on_cpu.session.get_providers() == [CPU]
    image = np.zeros((96, 128), np.uint8)
    image[30:60, 40:90] = 200
    encoded = predictor.encode(image)
    inputs = make_prompt(box=[40, 30, 89, 59], image_size=encoded.size).decoder_inputs(
        encoded.embedding, encoded.size, predictor.input_size)
    want_low_res, want_iou = predictor.backend.decode(inputs)
    got_low_res, got_iou = on_cpu.decode(inputs)
    np.testing.assert_allclose(got_low_res, want_low_res, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got_iou, want_iou, rtol=0, atol=1e-6)
