"""The BLS Python model of the exported Triton repository (copied there as ``segment_<precision>/1/model.py``).

It chains pre -> encoder -> decoder -> post (:func:`gmiseg_edge.serve.pipeline.segment_pipeline`), calling the
repository's ``encoder_<precision>`` and ``decoder_<precision>`` models through Triton's BLS API. Its config's
parameters name those models and carry the preprocessing. Triton's Python environment needs ``gmiseg-edge``
(``pip install gmiseg-edge``: numpy, OpenCV, Pillow; no ONNX Runtime needed there). A bad request gets an error
response naming the input at fault; the other requests of the batch are answered.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from gmiseg_edge.core.errors import GmisegError
from gmiseg_edge.core.graph_io import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUT, ENCODER_OUTPUT
from gmiseg_edge.core.transforms import PreprocessConfig
from gmiseg_edge.serve.pipeline import segment_pipeline
from gmiseg_edge.serve.protocol import BOX, IMAGE, LABELS, MASK_INPUT, POINTS


class TritonPythonModel:
    """Triton's Python-backend entry points (``initialize``, ``execute``)."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {name: value["string_value"] for name, value in config.get("parameters", {}).items()}
        self.encoder = parameters["encoder_model"]
        self.decoder = parameters["decoder_model"]
        self.preprocess = PreprocessConfig.from_dict(json.loads(parameters["preprocess"]))

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils  # exists only inside Triton's Python backend

        responses = []
        for request in requests:
            try:
                inputs = {}
                for name in (IMAGE, POINTS, LABELS, BOX, MASK_INPUT):
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is not None:
                        inputs[name] = tensor.as_numpy()
                outputs = segment_pipeline(inputs, self.preprocess, self._encode, self._decode)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, value) for name, value in outputs.items()]))
            except GmisegError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"segment: {exc}")))
        return responses

    def _call(self, model: str, inputs: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        import triton_python_backend_utils as pb_utils  # exists only inside Triton's Python backend

        request = pb_utils.InferenceRequest(
            model_name=model, requested_output_names=list(outputs),
            inputs=[pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in inputs.items()])
        response = request.exec()
        if response.has_error():
            raise pb_utils.TritonModelException(f"{model}: {response.error().message()}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}

    def _encode(self, tensor: np.ndarray) -> np.ndarray:
        return self._call(self.encoder, {ENCODER_INPUT: tensor}, (ENCODER_OUTPUT,))[ENCODER_OUTPUT]

    def _decode(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._call(self.decoder, {name: feed[name] for name in DECODER_INPUTS}, DECODER_OUTPUTS)
