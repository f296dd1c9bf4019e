"""Propagation through a volume: real exported lite_medsam graphs in ONNX Runtime on the shipped abdomen CT.

The right kidney of ``totalseg_abdomen`` spans slices 0..18 of 30 along the last axis: propagation from one box
on its largest slice must reach the volume's first slice and stop where the kidney ends.
"""

from __future__ import annotations

import numpy as np
import pytest

from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.data import load_sample_pair
from gmiseg_edge.data.slicing import largest_index, slice_2d
from gmiseg_edge.metrics import dice
from gmiseg_edge.runtime import EmbeddingCache, InputError, load
from gmiseg_edge.runtime.propagate import PropagationSettings, SliceSource

KIDNEY_RIGHT = 2


@pytest.fixture(scope="module")
def abdomen():
    image, labels = load_sample_pair("totalseg_abdomen")
    return image.array, labels.array == KIDNEY_RIGHT


@pytest.fixture(scope="module")
def cached(model_dir, abdomen_embedding_cache):
    """A predictor on the disk cache that the CLI's propagation test shares: the CT's slices are encoded once per
    session."""
    predictor = load(model_dir, backend="ort", threads=2, cache=abdomen_embedding_cache)
    yield predictor
    predictor.close()


@pytest.fixture(scope="module")
def kidney(cached, abdomen):
    volume, truth = abdomen
    seed = largest_index(truth, 2)
    box = box_from_mask(slice_2d(truth, 2, seed))
    return cached.propagate(volume, seed, box=box, window="abdomen"), truth


def test_propagation_follows_the_kidney_and_stops_where_it_ends(kidney):
    result, truth = kidney
    assert result.mask.shape == truth.shape and result.mask.dtype == bool
    assert dice(result.mask, truth) > 0.75  # per-slice exact boxes (the upper bound) give 0.865
    last = int(np.flatnonzero(truth.any(axis=(0, 1)))[-1])  # 18
    assert result.stops["up"].reason != "volume_end"  # it stopped on its own ...
    assert result.stops["up"].slice <= last + 2  # ... within two slices of the kidney's end
    assert not result.mask[:, :, last + 3:].any()  # slices beyond the kidney stay empty
    assert result.visited[0] == 0 and result.stops["down"].reason == "volume_end"
    assert result.kept[result.seed] and np.isfinite(result.iou[result.seed])
    assert np.isnan(result.iou[result.visited[1] + 1:]).all() and (result.area[result.visited[1] + 1:] == -1).all()
    # every slice decoded was encoded once, plus at most two batches encoded ahead of each direction's stop
    assert result.slices_visited <= result.encoded <= result.slices_visited + 4 * result.settings.batch_size


def test_a_labelled_slice_seeds_the_same_propagation(cached, abdomen, kidney):
    volume, truth = abdomen
    seed = largest_index(truth, 2)
    result = cached.propagate(volume, seed, mask=truth, window="abdomen")  # the volume's label: its slice
    assert np.array_equal(slice_2d(result.mask, 2, seed), slice_2d(truth, 2, seed))  # the label is kept
    assert np.isnan(result.iou[seed])
    assert dice(result.mask, truth) > 0.75


def test_without_prefetch_or_batching_the_result_is_the_same(cached, abdomen, kidney):
    volume, truth = abdomen
    seed = largest_index(truth, 2)
    box = box_from_mask(slice_2d(truth, 2, seed))
    plain = cached.propagate(volume, seed, box=box, window="abdomen",
                                settings=PropagationSettings(batch_size=1, prefetch=False))
    assert dice(plain.mask, kidney[0].mask) > 0.99  # batched embeddings may differ from single ones by ~1e-6
    assert plain.encoded == plain.slices_visited  # nothing encoded ahead


def test_batched_encoder_equals_single_image_encodes(model_dir, abdomen):
    volume, _ = abdomen
    source = SliceSource(volume, 2, "abdomen")
    slices = [source.pixels(k) for k in (3, 9, 15)]
    single = load(model_dir, backend="ort", threads=2, cache=EmbeddingCache(max_bytes=0))
    batched = load(model_dir, backend="ort", threads=2)
    ones = [single.encode(s).embedding for s in slices]
    many = batched.encode_many(slices)
    assert batched.stats.encoder_runs == 3 and batched.stats.misses == 3
    for one, encoded in zip(ones, many, strict=True):
        assert encoded.embedding.shape == one.shape == (1, 256, 64, 64)
        np.testing.assert_allclose(encoded.embedding, one, atol=1e-4)
    again = batched.encode_many(slices[:2])  # through the cache: no encoder run
    assert batched.stats.encoder_runs == 3 and [e.key for e in again] == [e.key for e in many[:2]]


def test_the_embedding_cache_stays_bounded_through_a_volume(model_dir, abdomen):
    volume, truth = abdomen
    volume, truth = volume[:, :, :14], truth[:, :, :14]  # 14 slices of the kidney (CI time): all encoded here
    bound = 3 * 256 * 64 * 64 * 4  # three embeddings
    predictor = load(model_dir, backend="ort", threads=2, cache=EmbeddingCache(max_bytes=bound))
    seed = largest_index(truth, 2)
    result = predictor.propagate(volume, seed, box=box_from_mask(slice_2d(truth, 2, seed)), window="abdomen",
                                 settings=PropagationSettings(batch_size=2))
    stats = predictor.stats
    assert result.slices_visited > 10
    assert stats.bytes <= bound and stats.entries <= 3
    assert stats.encoder_runs == result.encoded


def test_a_single_slice_volume_gives_that_slice(cached, abdomen):
    volume, truth = abdomen
    seed = largest_index(truth, 2)
    one = volume[:, :, seed:seed + 1]
    result = cached.propagate(one, 0, box=box_from_mask(slice_2d(truth, 2, seed)), window="abdomen")
    assert result.mask.shape == one.shape and result.visited == (0, 0)
    assert result.stops["down"].reason == result.stops["up"].reason == "volume_end"
    assert dice(result.mask[:, :, 0], truth[:, :, seed]) > 0.8


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("slice_outside", "outside the volume"),
        ("negative_slice", "outside the volume"),
        ("empty_prompt", "empty prompt"),
        ("empty_mask", "seed mask is empty"),
        ("mask_and_box", "not both"),
        ("image_2d", "3D volume"),
        ("colour_image", "2D colour image"),
        ("bad_axis", "axis must be"),
        ("box_outside", "outside the image"),
        ("not_normalised", "not uint8"),
        ("mask_shape", "does not match"),
        ("empty_seed_prediction", "empty mask on slice"),
    ],
)
def test_bad_input_is_a_clear_input_error(cached, abdomen, case, message):
    predictor = cached
    volume, truth = abdomen
    seed = largest_index(truth, 2)
    box = box_from_mask(slice_2d(truth, 2, seed))
    calls = {
        "slice_outside": lambda: predictor.propagate(volume, 30, box=box, window="abdomen"),
        "negative_slice": lambda: predictor.propagate(volume, -1, box=box, window="abdomen"),
        "empty_prompt": lambda: predictor.propagate(volume, seed, window="abdomen"),
        "empty_mask": lambda: predictor.propagate(volume, seed, mask=np.zeros((101, 122), bool), window="abdomen"),
        "mask_and_box": lambda: predictor.propagate(volume, seed, box=box, mask=truth, window="abdomen"),
        "image_2d": lambda: predictor.propagate(volume[:, :, seed], 0, box=box, window="abdomen"),
        "colour_image": lambda: predictor.propagate(np.zeros((64, 64, 3), np.uint8), 0, box=[1, 1, 9, 9]),
        "bad_axis": lambda: predictor.propagate(volume, seed, box=box, axis=3, window="abdomen"),
        "box_outside": lambda: predictor.propagate(volume, seed, box=[0, 0, 500, 50], window="abdomen"),
        "not_normalised": lambda: predictor.propagate(volume, seed, box=box),
        "mask_shape": lambda: predictor.propagate(volume, seed, mask=np.ones((5, 5), bool), window="abdomen"),
        # a seed prediction under min_area pixels counts as empty
        "empty_seed_prediction": lambda: predictor.propagate(volume, seed, box=box, window="abdomen",
                                                             settings=PropagationSettings(min_area=10**6)),
    }
    with pytest.raises(InputError, match=message):
        calls[case]()
