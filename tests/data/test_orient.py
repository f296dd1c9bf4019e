"""Volumes put in one orientation (axes along L, P, S) without resampling: every voxel keeps its place in space,
labels move with the image, and a volume already in that orientation is returned as it is."""

from __future__ import annotations

import numpy as np

from gmiseg_edge.data import load_sample_pair
from gmiseg_edge.data.align import lps_affine
from gmiseg_edge.data.orient import to_lps


def test_a_ras_nifti_is_turned_to_lps_and_every_voxel_keeps_its_place():
    image, labels = load_sample_pair("totalseg_abdomen")  # NIfTI stored with i towards Right, j towards Anterior
    assert lps_affine(image)[0, 0] < 0 and lps_affine(image)[1, 1] < 0
    turned, moved = to_lps(image, labels.array)
    affine = lps_affine(turned)
    assert np.all(np.diag(affine)[:3] > 0) and turned.spacing == image.spacing
    assert turned.array.shape == image.array.shape and moved.shape == labels.array.shape
    shape = np.array(image.array.shape)
    rng = np.random.default_rng(0)
    for ijk in rng.integers(0, shape, size=(20, 3)):
        world = lps_affine(image) @ np.append(ijk, 1)
        new = np.rint(np.linalg.solve(affine, world)[:3]).astype(int)
        assert np.allclose(affine @ np.append(new, 1), world, atol=1e-4)
        assert turned.array[tuple(new)] == image.array[tuple(ijk)] and moved[tuple(new)] == labels.array[tuple(ijk)]
    again, same = to_lps(turned, moved)
    assert again is turned and same is moved
