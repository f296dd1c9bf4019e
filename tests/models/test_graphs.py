"""The exported decoder module (DecoderGraph, the one PyTorch reference path) against segment-anything's own
prompt encoder + mask decoder forward, for every prompt layout the runtime sends."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_weights

torch = pytest.importorskip("torch")

LOGITS_ATOL = 1e-4


@pytest.fixture(scope="module")
def model_and_case():
    from gmiseg_edge.data.samples import load_sample_cases
    from gmiseg_edge.models.build import build_model

    require_weights("lite_medsam")
    return build_model("lite_medsam"), load_sample_cases(["lung2"])[0]


def _upstream(model, embedding, coords, labels, box, multimask):
    points = None if coords is None else (torch.from_numpy(coords)[None], torch.from_numpy(labels)[None].long())
    boxes = None if box is None else torch.from_numpy(box).reshape(1, 4)
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=None)
    low_res, iou = model.mask_decoder(
        image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
    )
    return low_res[0].numpy(), iou[0].numpy()


@pytest.mark.parametrize("layout", ["box", "3 points", "1 point", "points + box"])
@torch.inference_mode()
def test_decoder_graph_equals_segment_anything(model_and_case, layout):
    from gmiseg_edge.core.prediction import output_choice
    from gmiseg_edge.core.prompts import box_from_mask, make_prompt, simulate_points
    from gmiseg_edge.core.transforms import scale_boxes, scale_coords
    from gmiseg_edge.models.reference import TorchReference
    from gmiseg_edge.models.zoo import get_spec

    model, case = model_and_case
    spec = get_spec("lite_medsam")
    reference = TorchReference(model, spec.preprocess)
    prepared, embedding = reference.prepare(case.image)
    rng = np.random.default_rng(0)
    n_points = {"box": 0, "3 points": 3, "1 point": 1, "points + box": 2}[layout]
    points = simulate_points(case.mask, n_points, rng) if n_points else None
    labels = np.ones(n_points, np.float32) if n_points else None
    box = box_from_mask(case.mask) if "box" in layout else None
    prompt = make_prompt(points, labels, box, image_size=prepared.original_size)
    ours, our_iou = reference.decode(prompt.decoder_inputs(embedding, prepared.original_size, spec.input_size))
    outputs = list(output_choice(prompt.ambiguous))

    size = prepared.original_size
    theirs, their_iou = _upstream(
        model, torch.from_numpy(embedding),
        None if points is None else scale_coords(points, size, spec.input_size), labels,
        None if box is None else scale_boxes(box, size, spec.input_size), multimask=len(outputs) > 1,
    )
    error = float(np.abs(ours[0, outputs] - theirs).max())
    print(f"{layout}: DecoderGraph vs segment-anything logits max abs {error:.2e}")
    assert error <= LOGITS_ATOL
    assert np.abs(our_iou[0, outputs] - their_iou).max() <= LOGITS_ATOL


@torch.inference_mode()
def test_decoder_graph_decodes_many_objects_like_segment_anything(model_and_case):
    """K = 4 objects in one DecoderGraph call (the exported graph's prompt dimension) against
    segment-anything's prompt encoder + mask decoder given the same 4 boxes as one batch (its
    ``predict_masks`` repeats the image embedding over the prompt batch), and against a single call. (K = 16,
    through the exported graph, is tests/runtime/test_objects.py; torch is slow on this CPU.)"""
    from gmiseg_edge.core.graph_io import DecoderInputs
    from gmiseg_edge.core.prompts import make_prompt, simulate_box
    from gmiseg_edge.core.transforms import scale_boxes
    from gmiseg_edge.models.reference import TorchReference
    from gmiseg_edge.models.zoo import get_spec

    model, case = model_and_case
    spec = get_spec("lite_medsam")
    reference = TorchReference(model, spec.preprocess)
    prepared, embedding = reference.prepare(case.image)
    size = prepared.original_size
    rng = np.random.default_rng(1)
    boxes = np.stack([simulate_box(case.mask, rng, max_offset=40) for _ in range(4)])
    singles = [make_prompt(box=b, image_size=size).decoder_inputs(embedding, size, spec.input_size) for b in boxes]
    ours, our_iou = reference.decode(DecoderInputs.stack(singles))
    assert ours.shape == (4, 4, 256, 256) and our_iou.shape == (4, 4)

    sparse, dense = model.prompt_encoder(points=None, boxes=torch.from_numpy(scale_boxes(boxes, size, spec.input_size)),
                                         masks=None)
    theirs, their_iou = model.mask_decoder(
        image_embeddings=torch.from_numpy(embedding), image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
    )
    error = float(np.abs(ours[:, :1] - theirs.numpy()).max())
    print(f"K=4 boxes: DecoderGraph vs segment-anything logits max abs {error:.2e}")
    assert error <= LOGITS_ATOL
    assert np.abs(our_iou[:, :1] - their_iou.numpy()).max() <= LOGITS_ATOL
    alone, alone_iou = reference.decode(singles[2])  # object k of the batch is its own single call
    assert np.abs(ours[2] - alone[0]).max() <= LOGITS_ATOL and np.abs(our_iou[2] - alone_iou[0]).max() <= 1e-5
