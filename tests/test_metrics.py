"""Tests for gmiseg_edge.metrics against shapes whose metric values are known analytically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from gmiseg_edge.metrics import (
    MetricSummary,
    SegmentationScores,
    average_symmetric_surface_distance,
    dice,
    hausdorff_distance_95,
    jaccard,
    score,
    summarise,
)
from tests.no_torch import run_without_torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _box(shape, lo, hi):
    """Filled box, ``lo`` inclusive, ``hi`` exclusive, per axis."""
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return m


def _centred_cube(shape, centre, r):
    """Filled square/cube with Chebyshev radius ``r`` (side 2r+1) around ``centre``."""
    return _box(shape, [c - r for c in centre], [c + r + 1 for c in centre])


def _concentric_expected(ndim, r_in, r_out):
    """Exact directed distances between the surfaces of concentric filled cubes (radius r_in < r_out).

    The surface of a filled cube is its boundary shell {q : max|q_i| = r}. Every inner-shell point is
    r_out - r_in from the outer shell (straight out through the nearest face); an outer-shell point q
    is at the Euclidean distance from q to the inner cube, sqrt(sum max(0, |q_i| - r_in)^2), attained
    at the (lattice) clamp of q onto the inner cube, which lies on its shell.
    """
    grid = np.stack(np.meshgrid(*[np.arange(-r_out, r_out + 1)] * ndim, indexing="ij"), -1).reshape(-1, ndim)
    cheb = np.abs(grid).max(axis=1)
    n_inner = int(np.count_nonzero(cheb == r_in))
    outer = np.abs(grid[cheb == r_out])
    d_out = np.sqrt((np.maximum(0, outer - r_in) ** 2).sum(axis=1))
    return np.full(n_inner, float(r_out - r_in)), d_out


# --------------------------------------------------------------------------- brute-force oracle


def _oracle_surface(m):
    padded = np.pad(m, 1)
    inner = tuple(slice(1, -1) for _ in range(m.ndim))
    touches_bg = np.zeros_like(m)
    for ax in range(m.ndim):
        for step in (-1, 1):
            touches_bg |= ~np.roll(padded, step, axis=ax)[inner]
    return m & touches_bg


def _oracle(p, g, spacing):
    sp, sg = (np.argwhere(_oracle_surface(x)) * np.asarray(spacing) for x in (p, g))
    d = cdist(sp, sg)
    d_pg, d_gp = d.min(axis=1), d.min(axis=0)
    asd = (d_pg.sum() + d_gp.sum()) / (d_pg.size + d_gp.size)
    return asd, max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))


# --------------------------------------------------------------------------- overlap


@pytest.mark.parametrize(("a", "d"), [(10, 0), (10, 3), (7, 1), (6, 6)])
def test_offset_squares_overlap(a, d):
    shape = (30, 30)
    p = _box(shape, (5, 5), (5 + a, 5 + a))
    g = _box(shape, (5, 5 + d), (5 + a, 5 + a + d))
    assert dice(p, g) == pytest.approx((a - d) / a)
    assert jaccard(p, g) == pytest.approx((a - d) / (a + d))


def test_offset_cubes_overlap_3d():
    a, d = 6, 2
    p = _box((14, 14, 14), (2, 2, 2), (2 + a, 2 + a, 2 + a))
    g = _box((14, 14, 14), (2 + d, 2, 2), (2 + a + d, 2 + a, 2 + a))
    s = score(p, g)
    assert s.dice == pytest.approx((a - d) / a)
    assert s.jaccard == pytest.approx((a - d) / (a + d))


@pytest.mark.parametrize("ndim", [2, 3])
def test_mask_against_itself(ndim):
    rng = np.random.default_rng(0)
    m = rng.random((12,) * ndim) > 0.5
    s = score(m, m, spacing=(0.7,) * ndim)
    assert s == SegmentationScores(dice=1.0, jaccard=1.0, asd=0.0, hd95=0.0)


def test_input_dtypes_agree():
    p = _box((10, 10), (2, 2), (6, 6))
    g = _box((10, 10), (3, 2), (8, 7))
    ref = score(p, g)
    for cast in (
        lambda m: m.astype(np.uint8),
        lambda m: m.astype(np.int64),
        lambda m: m.astype(np.float32),
        lambda m: m.astype(int).tolist(),
    ):
        assert score(cast(p), cast(g)) == ref


# --------------------------------------------------------------------------- surface distances


def test_single_voxels_2d_and_3d():
    p = np.zeros((8, 10), bool)
    g = np.zeros((8, 10), bool)
    p[2, 3] = g[5, 7] = True  # offsets (3, 4) -> 5
    assert average_symmetric_surface_distance(p, g) == pytest.approx(5.0)
    assert hausdorff_distance_95(p, g) == pytest.approx(5.0)
    # anisotropic: (3 * 2.0, 4 * 0.5) -> sqrt(40)
    assert score(p, g, spacing=(2.0, 0.5)).asd == pytest.approx(math.sqrt(40))

    p3 = np.zeros((5, 7, 11), bool)
    g3 = np.zeros((5, 7, 11), bool)
    p3[1, 2, 3] = g3[3, 5, 9] = True  # offsets (2, 3, 6) -> 7
    s = score(p3, g3)
    assert s.asd == pytest.approx(7.0) and s.hd95 == pytest.approx(7.0)
    assert s.dice == 0.0 and s.jaccard == 0.0


def test_parallel_lines_and_anisotropic_spacing():
    p = np.zeros((10, 12), bool)
    g = np.zeros((10, 12), bool)
    p[2, :10] = True
    g[6, :10] = True  # every point is 4 rows from the other line
    assert score(p, g).asd == pytest.approx(4.0)
    assert score(p, g).hd95 == pytest.approx(4.0)
    # the shift is along axis 0 only, so only spacing[0] matters
    s = score(p, g, spacing=(2.5, 0.3))
    assert s.asd == pytest.approx(10.0) and s.hd95 == pytest.approx(10.0)


def test_hd95_by_hand_lines_of_different_length():
    # P: row 2, cols 0..9; G: row 5, cols 0..4.
    p = np.zeros((8, 12), bool)
    g = np.zeros((8, 12), bool)
    p[2, :10] = True
    g[5, :5] = True
    d_pg = [3.0] * 5 + [math.sqrt(9 + k * k) for k in range(1, 6)]  # sorted, max sqrt(34)
    d_gp = [3.0] * 5
    asd = (sum(d_pg) + sum(d_gp)) / 15
    # directed p95 (linear interpolation): P->G at rank 0.95*9 = 8.55 between 5 and sqrt(34); G->P = 3.
    hd95 = 5.0 + 0.55 * (math.sqrt(34) - 5.0)
    s = score(p, g)
    assert s.asd == pytest.approx(asd)
    assert s.hd95 == pytest.approx(hd95)
    # the pooled 95th percentile (rank 0.95*14 = 13.3) would differ: check we use the directed max
    assert s.hd95 != pytest.approx(5.0 + 0.3 * (math.sqrt(34) - 5.0))
    assert score(g, p).hd95 == pytest.approx(hd95)  # symmetric


def test_image_border_counts_as_background():
    g = np.ones((5, 5), bool)  # surface = the 16 border pixels
    p = np.zeros((5, 5), bool)
    p[2, 2] = True
    expected = (2.0 + 4 * 2.0 + 8 * math.sqrt(5) + 4 * math.sqrt(8)) / 17
    assert average_symmetric_surface_distance(p, g) == pytest.approx(expected)
    assert score(g, g).asd == 0.0


@pytest.mark.parametrize(("ndim", "r_in", "r_out"), [(2, 2, 5), (2, 0, 3), (3, 1, 3)])
def test_concentric_squares_and_cubes(ndim, r_in, r_out):
    shape = (2 * r_out + 5,) * ndim
    centre = (r_out + 2,) * ndim
    p = _centred_cube(shape, centre, r_in)
    g = _centred_cube(shape, centre, r_out)
    d_in, d_out = _concentric_expected(ndim, r_in, r_out)
    s = score(p, g)
    assert s.asd == pytest.approx((d_in.sum() + d_out.sum()) / (d_in.size + d_out.size))
    assert s.hd95 == pytest.approx(max(np.percentile(d_in, 95), np.percentile(d_out, 95)))
    assert s.dice == pytest.approx(2 * (2 * r_in + 1) ** ndim / ((2 * r_in + 1) ** ndim + (2 * r_out + 1) ** ndim))


def test_one_pixel_shells_2d():
    # 1-pixel-thick square rings of radius 2 and 4: all pixels are surface; inner->outer all 2.
    shape = (13, 13)
    c = (6, 6)
    inner = _centred_cube(shape, c, 2) & ~_centred_cube(shape, c, 1)
    outer = _centred_cube(shape, c, 4) & ~_centred_cube(shape, c, 3)
    d_in, d_out = _concentric_expected(2, 2, 4)
    assert average_symmetric_surface_distance(inner, outer) == pytest.approx(
        (d_in.sum() + d_out.sum()) / (d_in.size + d_out.size)
    )


def test_parallel_planes_3d_anisotropic():
    p = np.zeros((9, 6, 7), bool)
    g = np.zeros((9, 6, 7), bool)
    p[1] = True
    g[5] = True
    s = score(p, g, spacing=(2.5, 0.7, 1.3))
    assert s.asd == pytest.approx(10.0) and s.hd95 == pytest.approx(10.0)


def test_isotropic_spacing_scales_distances():
    p = _box((20, 20, 20), (3, 3, 3), (11, 10, 12))
    g = _box((20, 20, 20), (5, 2, 4), (14, 12, 12))
    s1, s25 = score(p, g), score(p, g, spacing=(2.5, 2.5, 2.5))
    assert s25.asd == pytest.approx(2.5 * s1.asd)
    assert s25.hd95 == pytest.approx(2.5 * s1.hd95)
    assert (s25.dice, s25.jaccard) == (s1.dice, s1.jaccard)


@pytest.mark.parametrize(
    ("shape", "spacing"), [((24, 20), (1.0, 1.0)), ((24, 20), (0.8, 2.5)), ((10, 12, 9), (2.5, 1.0, 0.6))]
)
def test_matches_brute_force(shape, spacing):
    rng = np.random.default_rng(42)
    for _ in range(3):
        p = rng.random(shape) > 0.7
        g = np.zeros(shape, bool)
        g[tuple(slice(2, n - 3) for n in shape)] = rng.random(tuple(n - 5 for n in shape)) > 0.4
        asd, hd95 = _oracle(p, g, spacing)
        s = score(p, g, spacing)
        assert s.asd == pytest.approx(asd) and s.hd95 == pytest.approx(hd95)


# --------------------------------------------------------------------------- empty masks


def test_both_empty():
    z = np.zeros((6, 6, 6), np.uint8)
    assert score(z, z) == SegmentationScores(dice=1.0, jaccard=1.0, asd=0.0, hd95=0.0)


@pytest.mark.parametrize("empty_is_pred", [True, False])
def test_one_empty(empty_is_pred):
    z = np.zeros((6, 6), bool)
    m = _box((6, 6), (1, 1), (3, 4))
    s = score(z, m) if empty_is_pred else score(m, z)
    assert s.dice == 0.0 and s.jaccard == 0.0
    assert math.isinf(s.asd) and math.isinf(s.hd95)
    assert math.isinf(hausdorff_distance_95(z, m)) and math.isinf(average_symmetric_surface_distance(m, z))


# --------------------------------------------------------------------------- summarise


def test_summarise_counts_and_statistics():
    rows = [
        SegmentationScores(0.5, 0.4, 2.0, 4.0),
        SegmentationScores(0.9, 0.8, 1.0, 2.0),
        SegmentationScores(0.0, 0.0, math.inf, math.inf),  # one mask empty
        SegmentationScores(math.nan, math.nan, math.nan, math.nan),  # missing case
    ]
    out = summarise(rows)
    assert set(out) == {"dice", "jaccard", "asd", "hd95"}
    d = out["dice"]
    assert (d.n_used, d.n_inf, d.n_nan, d.n_total) == (3, 0, 1, 4)
    assert d.mean == pytest.approx(1.4 / 3) and d.median == pytest.approx(0.5)
    assert d.std == pytest.approx(np.std([0.5, 0.9, 0.0]))
    h = out["hd95"]
    assert (h.n_used, h.n_inf, h.n_nan, h.n_excluded) == (2, 1, 1, 2)
    assert h.mean == pytest.approx(3.0) and h.median == pytest.approx(3.0) and h.std == pytest.approx(1.0)
    assert "1 infinite excluded" in str(h) and "1 NaN excluded" in str(h)
    assert summarise(rows, ddof=1)["hd95"].std == pytest.approx(math.sqrt(2))


def test_summarise_empty_and_all_excluded(recwarn):
    for rows in ([], [SegmentationScores(0.0, 0.0, math.inf, math.inf)]):
        out = summarise(rows)
        a = out["asd"]
        assert isinstance(a, MetricSummary) and a.n_used == 0
        assert math.isnan(a.mean) and math.isnan(a.std) and math.isnan(a.median)
    assert math.isnan(summarise([SegmentationScores(1.0, 1.0, 0.0, 0.0)], ddof=1)["dice"].std)  # n <= ddof
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_score_feeds_summarise():
    z = np.zeros((8, 8), bool)
    a = _box((8, 8), (1, 1), (5, 5))
    b = _box((8, 8), (1, 2), (5, 6))
    out = summarise([score(a, a), score(a, b), score(z, a), score(z, z)])
    assert out["dice"].n_used == 4
    assert out["asd"].n_used == 3 and out["asd"].n_inf == 1


# --------------------------------------------------------------------------- bad inputs


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 6\)"):
        dice(np.zeros((4, 5)), np.zeros((4, 6)))


def test_nan_and_bad_dtypes_rejected():
    m = np.zeros((4, 4))
    bad = m.copy()
    bad[1, 1] = np.nan
    for f in (dice, jaccard, score, hausdorff_distance_95):
        with pytest.raises(ValueError, match="NaN"):
            f(bad, m)
    with pytest.raises(ValueError, match="NaN"):
        score(m, bad)
    with pytest.raises(ValueError, match="dtype"):
        score(np.array([["a", "b"], ["c", "d"]]), np.zeros((2, 2)))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 5), ()])
def test_only_2d_or_3d(shape):
    with pytest.raises(ValueError, match="2D or 3D"):
        score(np.zeros(shape), np.zeros(shape))


@pytest.mark.parametrize(
    "spacing", [(1.0,), (1.0, 1.0, 1.0), (1.0, 0.0), (1.0, -2.0), (1.0, math.inf), (math.nan, 1.0), 1.0]
)
def test_bad_spacing(spacing):
    m = _box((6, 6), (1, 1), (3, 3))
    with pytest.raises(ValueError, match="spacing"):
        score(m, m, spacing=spacing)
    with pytest.raises(ValueError, match="spacing"):
        average_symmetric_surface_distance(m, m, spacing)


# --------------------------------------------------------------------------- torch-free


def test_metrics_work_without_torch():
    proc = run_without_torch(
        f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        import numpy as np
        from gmiseg_edge.metrics import score, summarise
        p = np.zeros((6, 6), bool); g = np.zeros((6, 6), bool)
        p[1, 1] = g[4, 5] = True
        s = score(p, g, spacing=(1.0, 1.0))
        assert abs(s.asd - 5.0) < 1e-12, s
        assert summarise([s])["asd"].n_used == 1
        assert not any(m.split(".")[0] == "torch" for m in sys.modules)
        print("ok", s.asd)
        """
    )
    assert "ok 5.0" in proc.stdout


def test_normalized_surface_dice_counts_surface_within_tolerance():
    from gmiseg_edge.metrics import normalized_surface_dice

    truth = np.zeros((40, 40), bool)
    truth[10:30, 10:30] = True
    shifted = np.roll(truth, 3, axis=1)  # right edge 3 px out, left edge 3 px in; rows unchanged
    assert normalized_surface_dice(truth, truth, (1.0, 1.0), 0.0) == 1.0
    assert normalized_surface_dice(shifted, truth, (1.0, 1.0), 3.0) == 1.0
    partial = normalized_surface_dice(shifted, truth, (1.0, 1.0), 1.0)
    assert 0.3 < partial < 0.9
    # spacing in mm: 3 px at 0.5 mm are within 1.5 mm
    assert normalized_surface_dice(shifted, truth, (0.5, 0.5), 1.5) == 1.0
    assert normalized_surface_dice(np.zeros_like(truth), truth) == 0.0
    assert normalized_surface_dice(np.zeros_like(truth), np.zeros_like(truth)) == 1.0
    with pytest.raises(ValueError, match="tolerance"):
        normalized_surface_dice(truth, truth, tolerance_mm=-1)
