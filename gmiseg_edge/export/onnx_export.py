"""Export the encoder and decoder graphs to ONNX with the legacy TorchScript exporter.

The legacy exporter (``dynamo=False``) honours opset 17 and ``dynamic_axes`` for both graphs; the dynamo
exporter writes opset 18 at least and puts dynamic axes on the wrong decoder inputs (see PITFALLS).
Graphs over protobuf's 2 GB limit (ViT-H) are saved with their weights in one external ``.data`` file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from segment_anything.modeling import Sam

from gmiseg_edge.core.graph_io import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUT,
    ENCODER_INPUTS,
    ENCODER_OUTPUT,
    ENCODER_OUTPUTS,
    OBJECT_INPUTS,
    POINT_COORDS,
    POINT_LABELS,
)
from gmiseg_edge.export.fast_decoder import FastDecoderGraph, few_token_attention
from gmiseg_edge.models.graphs import (
    DecoderGraph,
    EncoderGraph,
    export_friendly,
)

DEFAULT_OPSET = 17
PROTOBUF_LIMIT = 2**31 - 1


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs, outputs, dynamic, opset: int) -> None:
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), export_friendly(module):
        warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic are expected and harmless here
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    externalise_if_large(path)


def externalise_if_large(path: Path, limit: int = PROTOBUF_LIMIT) -> bool:
    """Move the weights of a graph over ``limit`` bytes (protobuf's 2 GB) into ``<name>.data`` beside it."""
    if path.stat().st_size < limit and not path.with_name(path.name + ".data").exists():
        return False
    model = onnx.load(str(path), load_external_data=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return True


def export_encoder(model: Sam, path: Path, input_size: int, opset: int = DEFAULT_OPSET) -> None:
    """``image`` float32 [B, 3, S, S] -> ``image_embeddings`` float32 [B, 256, 64, 64], B dynamic."""
    dummy = torch.zeros(1, 3, input_size, input_size)
    dynamic = {ENCODER_INPUT: {0: "batch"}, ENCODER_OUTPUT: {0: "batch"}}
    _export(EncoderGraph(model), (dummy,), path, ENCODER_INPUTS, ENCODER_OUTPUTS, dynamic, opset)


def export_decoder(model: Sam, path: Path, opset: int = DEFAULT_OPSET, regrouped: bool = True) -> None:
    """The prompt encoder + mask decoder graph of DESIGN §5, K (objects) and N (points per object) dynamic,
    in the faster form of :mod:`gmiseg_edge.export.fast_decoder` (same maths; validation compares it with the
    original). ``regrouped=False`` exports segment-anything's own form instead (for comparison)."""
    embed_dim = model.prompt_encoder.embed_dim
    grid = model.prompt_encoder.image_embedding_size
    low_res = model.prompt_encoder.mask_input_size
    objects = 2  # traced with K = 2 against one embedding, so no K = 1 broadcast is baked into the graph
    args = (
        torch.zeros(1, embed_dim, *grid),
        torch.full((objects, 3, 2), 10.0),
        torch.tensor([[1.0, 2.0, 3.0]]).repeat(objects, 1),
        torch.zeros(objects, 1, *low_res),
        torch.zeros(objects),
    )
    dynamic = {name: {0: "num_objects"} for name in (*OBJECT_INPUTS, *DECODER_OUTPUTS)}
    for name in (POINT_COORDS, POINT_LABELS):
        dynamic[name][1] = "num_points"
    if not regrouped:
        _export(DecoderGraph(model), args, path, DECODER_INPUTS, DECODER_OUTPUTS, dynamic, opset)
        return
    with few_token_attention(model.mask_decoder.transformer):
        _export(FastDecoderGraph(model), args, path, DECODER_INPUTS, DECODER_OUTPUTS, dynamic, opset)
