"""Several objects per decoder call, the torch-free parts: stacking inputs, one vectorised post-processing,
the label map, boxes from an instance map."""

from __future__ import annotations

import numpy as np
import pytest

from gmiseg_edge.core.graph_io import DecoderInputs
from gmiseg_edge.core.prediction import label_dtype, make_object_predictions, make_prediction
from gmiseg_edge.core.prompts import box_from_mask, boxes_from_labels, instance_labels
from gmiseg_edge.core.transforms import ImageGeometry, postprocess_bands, postprocess_logits, postprocess_masks


def _inputs(k: int, n: int, embedding: np.ndarray) -> DecoderInputs:
    rng = np.random.default_rng(k * 10 + n)
    return DecoderInputs.without_mask(embedding, rng.random((k, n, 2), np.float32), np.ones((k, n), np.float32))


def test_stack_and_take_keep_the_shared_embedding_and_the_object_order():
    embedding = np.zeros((1, 256, 64, 64), np.float32)
    parts = [_inputs(1, 2, embedding), _inputs(3, 2, embedding)]
    stacked = DecoderInputs.stack(parts)
    assert stacked.objects == 4 and stacked.image_embeddings is embedding
    assert stacked.mask_input.shape == (4, 1, 256, 256) and stacked.has_mask_input.shape == (4,)
    np.testing.assert_array_equal(stacked.point_coords[1:], parts[1].point_coords)
    np.testing.assert_array_equal(stacked.take(1, 4).point_labels, parts[1].point_labels)
    with pytest.raises(ValueError, match="one point count"):
        DecoderInputs.stack([_inputs(1, 2, embedding), _inputs(1, 3, embedding)])
    with pytest.raises(ValueError, match="share the image embedding"):
        DecoderInputs.stack([_inputs(1, 2, embedding), _inputs(1, 2, embedding + 1)])


def test_object_predictions_equal_one_prediction_per_object_and_merge_into_a_label_map():
    geometry = ImageGeometry.of(90, 120, 256)
    rng = np.random.default_rng(0)
    low_res = rng.normal(size=(3, 4, 256, 256)).astype(np.float32)
    iou = rng.random((3, 4)).astype(np.float32)
    outputs = [(0,), (1, 2, 3), (0,)]  # a box, a single point (multimask), a box
    objects = make_object_predictions(geometry, low_res, iou, outputs, 256)
    assert len(objects) == 3 and objects.masks.shape == (3, 90, 120)
    for k, chosen in enumerate(outputs):
        alone = make_prediction(geometry, low_res[k], iou[k], chosen, 256)
        np.testing.assert_allclose(objects[k].logits, alone.logits, atol=1e-5)
        assert objects[k].index == alone.index and objects[k].outputs == chosen
        np.testing.assert_array_equal(objects.masks[k], alone.mask)
    np.testing.assert_allclose(objects.scores, [iou[0, 0], iou[1, 1 + objects[1].index], iou[2, 0]])

    labels = objects.label_map()
    assert labels.dtype == np.uint8 and labels.shape == (90, 120)
    chosen_logits = np.stack([p.logits[p.index] for p in objects])
    want = np.where(chosen_logits.max(axis=0) > 0, chosen_logits.argmax(axis=0) + 1, 0)
    np.testing.assert_array_equal(labels, want)  # overlaps go to the larger logit; background where none is > 0
    assert set(np.unique(labels)) == {0, 1, 2, 3}


def test_masks_and_bands_equal_the_full_post_processing_exactly():
    """Issue 26: masks are made band by band of rows; every band equals the full result (same arithmetic)."""
    geometry = ImageGeometry.of(301, 257, 1024)
    low_res = np.random.default_rng(1).normal(size=(3, 256, 256)).astype(np.float32)
    full = postprocess_logits(low_res, geometry, 1024)
    bands = list(postprocess_bands(low_res, geometry, 1024, band_bytes=3 * 257 * 4 * 7))  # 7 rows a band
    assert len(bands) == 43 and bands[-1][0] == slice(294, 301)
    np.testing.assert_array_equal(np.concatenate([b for _, b in bands], axis=1), full)
    np.testing.assert_array_equal(postprocess_masks(low_res, geometry, 1024, band_bytes=1), full > 0)


def test_many_objects_hold_low_res_logits_and_post_process_in_bounded_memory():
    """Issue 26: 300 objects on a 512^2 image: the label map and the stacked masks never hold every object's
    full-size logits (300 MiB as float32); traced peaks stay near the one result they return."""
    import tracemalloc

    geometry = ImageGeometry.of(512, 512, 1024)
    rng = np.random.default_rng(2)
    low_res = rng.normal(-3, 2, size=(300, 1, 256, 256)).astype(np.float32)
    objects = make_object_predictions(geometry, np.repeat(low_res, 4, axis=1), rng.random((300, 4), np.float32),
                                      [(0,)] * 300, 1024)
    tracemalloc.start()
    try:
        labels = objects.label_map()
        _, peak_labels = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        masks = objects.masks
        _, peak_masks = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    mib = 1 << 20
    assert peak_labels < 60 * mib, peak_labels / mib  # the map, the best logits, one group's band: ~40 MiB
    assert peak_masks < masks.nbytes + 80 * mib, (peak_masks - masks.nbytes) / mib  # + a group: ~70 MiB
    chosen = postprocess_logits(low_res[:40, 0], geometry, 1024)  # the first 40 objects, checked exactly
    np.testing.assert_array_equal(masks[:40], chosen > 0)
    first = np.where(chosen.max(axis=0) > 0, chosen.argmax(axis=0) + 1, 0)
    np.testing.assert_array_equal(labels[(labels <= 40) & (first > 0)], first[(labels <= 40) & (first > 0)])


def test_label_types_grow_with_the_object_count():
    assert label_dtype(255) == np.uint8 and label_dtype(256) == np.uint16 and label_dtype(70000) == np.uint32


def test_boxes_from_labels_match_box_from_mask_and_components_split_a_mask():
    labels = np.zeros((40, 50), np.int32)
    labels[2:9, 3:20] = 7
    labels[20:30, 40:50] = 2
    labels[35, 0] = 300
    ids, boxes = boxes_from_labels(labels)
    assert ids.tolist() == [2, 7, 300]
    for value, box in zip(ids, boxes, strict=True):
        np.testing.assert_array_equal(box, box_from_mask(labels == value))
    components = instance_labels(labels > 0)
    assert components.max() == 3 and ((components > 0) == (labels > 0)).all()
    assert boxes_from_labels(np.zeros((4, 4), np.uint8))[1].shape == (0, 4)
