"""The one PyTorch inference path: a zoo model in FP32 through the very modules that are exported.

Export validation, the ``torch`` runtime backend (and so bench's "torch eager" row) and the tests' references
all run the model through :class:`TorchReference`: the image encoder (:class:`~gmiseg_edge.models.graphs.
EncoderGraph`) and the prompt encoder + mask decoder as one module (:class:`~gmiseg_edge.models.graphs.
DecoderGraph`), numpy in and out, with the runtime's own pre/post-processing and prompt layout
(:mod:`gmiseg_edge.core`). ``tests/models/test_graphs.py`` anchors it to segment-anything's own forward, and
``tests/models/test_reference.py`` to the upstream models' recorded outputs.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from segment_anything.modeling import Sam

from gmiseg_edge.core.graph_io import DecoderInputs
from gmiseg_edge.core.prediction import Prediction, make_prediction, output_choice
from gmiseg_edge.core.prompts import make_prompt
from gmiseg_edge.core.transforms import PreparedImage, PreprocessConfig, preprocess
from gmiseg_edge.models.graphs import DecoderGraph, EncoderGraph


class TorchReference:
    """Encode preprocessed inputs and decode :class:`DecoderInputs` with a SAM-family model in FP32.

    ``threads``: torch intra-op threads for each run (None: torch's default). Runs are serialised (torch's
    thread count is process-wide), so one instance may be shared by threads.
    """

    def __init__(self, model: Sam, preprocess_config: PreprocessConfig, threads: int | None = None) -> None:
        self.model = model.eval()
        self.preprocess_config = preprocess_config
        self.encoder = EncoderGraph(model).eval()
        self.decoder = DecoderGraph(model).eval()
        self.threads = threads
        self._lock = threading.Lock()

    def _run(self, module: torch.nn.Module, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        with self._lock, torch.inference_mode():
            if self.threads:
                torch.set_num_threads(int(self.threads))
            out = module(*(torch.from_numpy(np.require(a, np.float32, ["C", "W"])) for a in arrays))
        out = out if isinstance(out, tuple) else (out,)
        return tuple(t.float().numpy() for t in out)

    def encode(self, tensor: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) preprocessed input -> (B, 256, 64, 64) embeddings, float32."""
        (embedding,) = self._run(self.encoder, tensor)
        return embedding

    def decode(self, inputs: DecoderInputs) -> tuple[np.ndarray, np.ndarray]:
        """Decoder inputs -> low-res logits (1, 4, 256, 256) and IoU predictions (1, 4), float32."""
        low_res, iou = self._run(self.decoder, *inputs.feed().values())
        return low_res, iou

    # -- image-level convenience for references in tests and experiments -----------------------------------
    def prepare(self, image: np.ndarray) -> tuple[PreparedImage, np.ndarray]:
        """Preprocess and encode a uint8 image: its geometry and (1, 256, 64, 64) embedding."""
        prepared = preprocess(image, self.preprocess_config)
        return prepared, self.encode(prepared.tensor)

    def predict(self, prepared: PreparedImage, embedding: np.ndarray, box=None, points=None, labels=None,
                multimask: bool | None = None) -> Prediction:
        """Decode one prompt (image pixels, checked like the runtime's) on an encoded image."""
        prompt = make_prompt(points, labels, box, image_size=prepared.original_size)
        size = self.preprocess_config.input_size
        low_res, iou = self.decode(prompt.decoder_inputs(embedding, prepared.original_size, size))
        return make_prediction(prepared, low_res[0], iou[0], output_choice(prompt.ambiguous, multimask), size)
