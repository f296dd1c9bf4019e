"""The ``segment`` pipeline of the exported Triton repository: pre -> encoder -> decoder -> post, with the encoder
and decoder given as callables. In the repository's BLS model they are Triton calls to the ``encoder_*`` and
``decoder_*`` models; in the tests, ONNX Runtime sessions on the same graphs."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from gmiseg_edge.core.errors import InputError
from gmiseg_edge.core.graph_io import DECODER_OUTPUTS
from gmiseg_edge.core.prediction import make_prediction, output_choice
from gmiseg_edge.core.prompts import make_prompt
from gmiseg_edge.core.transforms import PreprocessConfig, preprocess
from gmiseg_edge.serve.handlers import check_served_image, prediction_outputs
from gmiseg_edge.serve.protocol import BOX, IMAGE, LABELS, MASK_INPUT, POINTS

Encode = Callable[[np.ndarray], np.ndarray]  # float32 (1, 3, S, S) -> (1, 256, 64, 64)
Decode = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]  # decoder feed -> outputs by name


def segment_pipeline(inputs: Mapping[str, np.ndarray], config: PreprocessConfig, encode: Encode,
                     decode: Decode) -> dict[str, np.ndarray]:
    """The outputs of ``segment`` (mask, score, low-res logits) for one request's inputs."""
    if IMAGE not in inputs:
        raise InputError(f"input '{IMAGE}' is missing")
    pixels = check_served_image(inputs[IMAGE])
    size = (int(pixels.shape[0]), int(pixels.shape[1]))
    prompt = make_prompt(*(inputs.get(name) for name in (POINTS, LABELS, BOX, MASK_INPUT)), image_size=size)
    prepared = preprocess(pixels, config)
    embedding = encode(prepared.tensor)
    outputs = decode(prompt.decoder_inputs(embedding, size, config.input_size).feed())
    low_res, iou = (np.asarray(outputs[name]) for name in DECODER_OUTPUTS)
    prediction = make_prediction(prepared, low_res[0], iou[0], output_choice(prompt.ambiguous), config.input_size)
    return prediction_outputs(prediction)
