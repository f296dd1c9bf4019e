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
from gmiseg_edge.runtime.propagate import STOP_REASONS, PropagationSettings, SliceSource, correct

KIDNEY_RIGHT = 2


@pytest.fixture(scope="module")
def abdomen():
    image, labels = load_sample_pair("totalseg_abdomen")
    return image.array, labels.array == KIDNEY_RIGHT


@pytest.fixture(scope="module")
def cached(model_dir, sample_embedding_cache):
    """A predictor on the disk cache that the CLI's propagation test shares: the CT's slices are encoded once per
    session."""
    predictor = load(model_dir, backend="ort", threads=2, cache=sample_embedding_cache)
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


# --------------------------------------------------------------------------- several seeds, corrections (issue 28)


@pytest.fixture(scope="module")
def spacing():
    image, _ = load_sample_pair("totalseg_abdomen")
    return tuple(image.spacing)


def _box(truth, k):
    return box_from_mask(slice_2d(truth, 2, k))


def test_two_seeds_fill_the_slices_between_them(cached, abdomen, spacing):
    volume, truth = abdomen
    present = np.flatnonzero(truth.any(axis=(0, 1)))  # 0..18
    seeds = [(int(present[2]), _box(truth, int(present[2]))), (int(present[-3]), _box(truth, int(present[-3])))]
    result = cached.propagate(volume, seeds=seeds, window="abdomen", spacing=spacing)
    low, high = seeds[0][0], seeds[1][0]
    assert result.seeds == (low, high)
    assert result.kept[low:high + 1].all()  # every slice between the seeds is filled
    assert [a for a in result.actions[low:high + 1]].count("seed") == 2
    inner = [f for f in result.fronts if (f.seed, f.step) in ((low, 1), (high, -1))]
    assert len(inner) == 2 and any(f.stop.reason == "met" for f in inner)  # the two fronts met
    assert dice(result.mask, truth) > 0.8
    assert result.stops["up"].slice <= int(present[-1]) + 2  # the outer front still stops where the kidney ends


def test_a_sparse_label_map_seeds_every_labelled_slice(cached, abdomen, spacing):
    volume, truth = abdomen
    sparse = np.zeros_like(truth)
    for k in (4, 14):
        sparse[:, :, k] = truth[:, :, k]
    result = cached.propagate(volume, seeds=sparse, window="abdomen", spacing=spacing)
    assert result.seeds == (4, 14)
    for k in (4, 14):  # the labelled slices are kept as given
        assert np.array_equal(result.mask[:, :, k], truth[:, :, k])
    assert result.kept[4:15].all()


def test_a_correction_reruns_only_the_slices_between_the_neighbouring_seeds(cached, abdomen, spacing):
    volume, truth = abdomen
    seeds = [(2, _box(truth, 2)), (9, _box(truth, 9)), (16, _box(truth, 16))]
    first = cached.propagate(volume, seeds=seeds, window="abdomen", spacing=spacing)
    before = cached.stats.misses + cached.stats.hits
    fixed = correct(cached, volume, first, 12, box=_box(truth, 12), window="abdomen")
    assert fixed.seeds == (2, 9, 12, 16)
    outside = [k for k in range(volume.shape[2]) if not 9 <= k <= 16]
    for k in outside:  # untouched: masks, areas and IoUs as before
        assert np.array_equal(fixed.mask[:, :, k], first.mask[:, :, k])
        assert fixed.area[k] == first.area[k] and (fixed.iou[k] == first.iou[k] or np.isnan(first.iou[k]))
    # only the slices 9..16 went through the encoder/cache again (seeds 9, 12 and 16 and the slices between)
    assert cached.stats.misses + cached.stats.hits - before <= 16 - 9 + 1
    exact = cached.predict(SliceSource(volume, 2, "abdomen").pixels(12), box=_box(truth, 12)).mask
    assert np.array_equal(slice_2d(fixed.mask, 2, 12), exact)  # the corrected slice is the new prompt's mask
    assert fixed.kept[9:17].all() and fixed.actions[12] == "seed"
    assert dice(fixed.mask, truth) >= dice(first.mask, truth) - 0.01


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("zero_area_box", "zero area"),
        ("seeds_apart", "do not overlap"),
        ("seeds_and_slice_index", "seeds= carries"),
        ("seeds_and_box", "not both"),
        ("empty_seeds", "seeds is empty"),
        ("bad_seed_entry", r"seeds\[0\] must be"),
        ("spacing_extreme", "beyond what slice-to-slice"),
        ("spacing_bad", "spacing must be"),
    ],
)
def test_bad_seeds_are_clear_input_errors(cached, abdomen, spacing, case, message):
    volume, truth = abdomen
    seed = largest_index(truth, 2)
    box = _box(truth, seed)
    far = np.array([0, 0, 8, 8], np.float32)  # a corner of the slice, nowhere near the kidney
    calls = {
        "zero_area_box": lambda: cached.propagate(volume, seed, box=[40, 30, 40, 60], window="abdomen"),
        "seeds_apart": lambda: cached.propagate(volume, seeds=[(seed, box), (seed + 1, far)], window="abdomen",
                                                spacing=spacing),
        "seeds_and_slice_index": lambda: cached.propagate(volume, seed, seeds=[(seed, box)], window="abdomen"),
        "seeds_and_box": lambda: cached.propagate(volume, box=box, seeds=[(seed, box)], window="abdomen"),
        "empty_seeds": lambda: cached.propagate(volume, seeds=[], window="abdomen"),
        "bad_seed_entry": lambda: cached.propagate(volume, seeds=[box], window="abdomen"),
        "spacing_extreme": lambda: cached.propagate(volume, seed, box=box, window="abdomen",
                                                    spacing=(0.5, 0.5, 30.0)),
        "spacing_bad": lambda: cached.propagate(volume, seed, box=box, window="abdomen", spacing=(1.0, 0.0, 1.0)),
    }
    with pytest.raises(InputError, match=message):
        calls[case]()


def test_seeds_that_disagree_fill_only_their_own_halves(cached):
    """Two seeds on different structures within reach of each other (liver and right kidney of the sample CT): the
    fronts meet without overlapping, each keeps what it reached first, and the result says so."""
    image, labels = load_sample_pair("totalseg_abdomen")
    liver, kidney = labels.array == 5, labels.array == KIDNEY_RIGHT
    seeds = [(6, _box(liver, 6)), (12, _box(kidney, 12))]
    result = cached.propagate(image.array, seeds=seeds, window="abdomen", spacing=tuple(image.spacing))
    assert any("disagree" in note for note in result.notes)
    assert result.kept[6:13].all()  # the gap is filled, half from each seed
    # each seed slice keeps its own prompt's mask (lite_medsam's exact liver box on slice 6 gives Dice 0.78, the
    # kidney's on 12 0.97), and the slices each front filled are its own structure, not the other seed's
    for k, own in ((6, liver), (12, kidney)):
        exact = cached.predict(SliceSource(image.array, 2, "abdomen").pixels(k), box=_box(own, k)).mask
        assert np.array_equal(slice_2d(result.mask, 2, k), exact)
    near_liver = [k for k in range(6, 13) if dice(result.mask[:, :, k], liver[:, :, k]) > 0.7]
    near_kidney = [k for k in range(6, 13) if dice(result.mask[:, :, k], kidney[:, :, k]) > 0.9]
    assert near_liver and near_kidney and sorted(near_liver + near_kidney) == list(range(6, 13))
    assert max(near_liver) < min(near_kidney)


def test_a_ten_to_one_spacing_propagates_and_says_where_it_stopped(cached, abdomen):
    """Slices ten times thicker than the pixels: the boxes grow by ten pixels a slice (the boundary's reach), the
    run is not refused and ends with stated reasons (on this 3 mm CT declared as 1 x 1 x 10 mm the wide boxes fail
    the appearance check within a slice or two; on real 10:1 slices, BraTS every 10th slice in
    benchmarks/propagation.py, it keeps 5 of 8 with Dice 0.875). Beyond 20:1 it is an error (bad-input test)."""
    volume, truth = abdomen
    seed = largest_index(truth, 2)
    result = cached.propagate(volume, seed, box=_box(truth, seed), window="abdomen", spacing=(1.0, 1.0, 10.0))
    assert result.kept[seed] and result.mask.any()
    assert {result.stops["down"].reason, result.stops["up"].reason} <= set(STOP_REASONS)
    assert all(stop.detail for stop in result.stops.values() if stop.reason != "volume_end")


def test_boxes_past_a_seed_grow_by_each_sides_last_movement():
    """follow_motion: 6.4 mm slices of 0.8 mm pixels give a reach of 8 pixels. Next to a seed (no movement seen) the
    box grows by all of it; further on, each side by its last outward movement (at least one pixel, at most the
    reach); where the reach is one pixel the boxes are those of the bound."""
    from gmiseg_edge.runtime.propagation.carry import _Front, _prior
    from gmiseg_edge.runtime.propagation.evidence import Geometry

    mask = np.zeros((100, 100), bool)
    mask[40:60, 40:60] = True  # extent [40, 40, 59, 59]; slack max(2, 0.1 x 20) = 2 pixels a side
    settings = PropagationSettings(inertia=0.0)
    thick = Geometry.of((0.8, 0.8, 6.4), 2)

    def box(geometry, before, **changes):
        front = _Front(None, None, 1, 1, 1, 9, mask, before=before)  # type: ignore[arg-type]
        return _prior(front, geometry, PropagationSettings(**{**settings.to_dict(), **changes})).tolist()

    moved = np.array([42, 40, 59, 50], np.float32)  # left side moved out 2 px, top 0, right 0, bottom 9 (> reach)
    assert box(thick, None) == [30, 30, 69, 69]  # from a seed: slack + reach
    assert box(thick, moved) == [36, 37, 62, 69]  # 2 + 2, 2 + 1 (floor), 2 + 1, 2 + 8 (capped at the reach)
    assert box(thick, moved, follow_motion=False) == [30, 30, 69, 69]
    assert box(Geometry.of((3.0, 3.0, 3.0), 2), moved) == box(Geometry.of((3.0, 3.0, 3.0), 2), None) == [37, 37, 62, 62]


def test_the_next_box_grows_by_the_reach_and_the_pixel_slack_whatever_the_structure_size():
    """The box next to a seed is its mask's extent grown by the boundary's reach (slice thickness) and min_margin
    pixels, the same for a small and a large structure (no share of the extent: ``margin`` defaults to 0)."""
    from gmiseg_edge.runtime.propagation.carry import _Front, _prior
    from gmiseg_edge.runtime.propagation.evidence import Geometry

    geometry = Geometry.of((1.0, 1.0, 3.0), 2)  # reach 3 pixels
    settings = PropagationSettings(inertia=0.0)
    assert settings.margin == 0.0

    def grown(size: int, **changes) -> list[float]:
        mask = np.zeros((200, 200), bool)
        mask[20:20 + size, 30:30 + size] = True
        front = _Front(None, None, 1, 1, 1, 9, mask)  # type: ignore[arg-type]
        box = _prior(front, geometry, PropagationSettings(**{**settings.to_dict(), **changes}))
        return (box - np.array([30, 20, 29 + size, 19 + size])).tolist()

    assert grown(10) == grown(120) == [-5, -5, 5, 5]  # 2 pixels of slack + 3 of reach a side
    assert grown(120, margin=0.1) == [-15, -15, 15, 15]  # the old default: a tenth of the extent a side


def test_continuity_is_the_radius_and_centroid_within_a_slice_thickness_and_a_pixel():
    """Geometry.continuous (continuity_vote): 3 mm slices of 3 mm pixels allow 6 mm of movement of the
    equivalent radius and of the centroid, either way."""
    from gmiseg_edge.runtime.propagation.evidence import Geometry

    geometry = Geometry.of((3.0, 3.0, 3.0), 2)
    disc = np.zeros((60, 60), bool)
    yy, xx = np.mgrid[:60, :60]
    disc[(yy - 30) ** 2 + (xx - 30) ** 2 <= 25] = True  # 81 pixels: equivalent radius 15.2 mm
    assert geometry.continuous(disc, np.roll(disc, 2, axis=1))  # 6 mm across: within the bound
    assert not geometry.continuous(disc, np.roll(disc, 3, axis=1))  # 9 mm: beyond it
    small = (yy - 30) ** 2 + (xx - 30) ** 2 <= 10  # 37 pixels: equivalent radius 10.3 mm against 15.2 mm
    assert geometry.continuous(disc, small) and not geometry.continuous(disc, (yy - 30) ** 2 + (xx - 30) ** 2 <= 4)
    assert not geometry.continuous(disc, np.zeros_like(disc))


def test_the_vote_needs_one_share_at_the_typical_bar():
    """continuity_vote overrules an appearance failure only where one share still reaches the midpoint between a
    half and the seed's own share (the bar of Appearance.typical), not merely a half."""
    from gmiseg_edge.runtime.propagation.evidence import GREY_BINS, Appearance, Score

    unit = np.ones(4, np.float32) / 2.0
    seed = Appearance(unit, unit, np.zeros(GREY_BINS, np.float32), Score(0.9, 0.8))  # bars 0.70 and 0.65
    assert seed.partly_typical(Score(0.3, 0.66)) and seed.partly_typical(Score(0.71, 0.0))
    assert not seed.partly_typical(Score(0.6, 0.6))  # each over a half, neither at its bar


AORTA = 52


def test_the_continuity_vote_carries_a_tube_past_an_appearance_stop(cached, spacing):
    """The sample CT's aorta (on all 30 slices, about 6 x 6 pixels of 3 mm: two to three embedding cells across):
    by default the appearance check stops it at slice 28 (its embedding share falls under a half while its grey
    share, size and position go on); with ``continuity_vote`` the geometry and the grey levels overrule it and the
    front reaches the volume's end (BENCHMARKS.md, issue 28: CT a aorta 0.466 -> 0.711 with one seed)."""
    image, labels = load_sample_pair("totalseg_abdomen")
    low = 19  # slices 19..29 (CI time: each run decodes every slice it visits); the seed's evidence is the same
    truth = labels.array[:, :, low:] == AORTA
    volume = image.array[:, :, low:]
    seed = largest_index(labels.array == AORTA, 2) - low  # 25 in the whole scan
    box = _box(truth, seed)
    plain = cached.propagate(volume, seed, box=box, window="abdomen", spacing=spacing)
    voted = cached.propagate(volume, seed, box=box, window="abdomen", spacing=spacing,
                             settings=PropagationSettings(continuity_vote=True))
    assert plain.stops["up"].reason == "appearance" and not plain.kept[-1]
    assert voted.stops["up"].reason == "volume_end" and voted.kept.all()
    assert "continued" in voted.actions and "continued" not in plain.actions
    print(f"aorta, slices {low}..29: Dice {dice(plain.mask, truth):.3f} -> {dice(voted.mask, truth):.3f}")
    assert dice(voted.mask, truth) > dice(plain.mask, truth) + 0.02
