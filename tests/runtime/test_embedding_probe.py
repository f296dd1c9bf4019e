"""The support set's linear probe (runtime/embedding_probe.py): it finds the few features that separate a
structure from its surroundings where a mean prototype is swamped by the rest, weighs a small structure as much
as its large background, and refuses a support set it cannot fit."""

from __future__ import annotations

import numpy as np
import pytest

from gmiseg_edge.runtime.embedding_probe import fit_direction


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cells(rng, count: int, shift: float, features: int = 64) -> np.ndarray:
    """Cells whose first feature carries the class (``shift``) under large shared variation in the others."""
    x = rng.normal(0, 1, (count, features))
    x[:, 0] = shift + rng.normal(0, 0.1, count)
    return _unit(x)


def test_the_probe_separates_on_the_one_informative_feature_where_the_prototype_does_not():
    rng = np.random.default_rng(0)
    supports = [np.vstack([_cells(rng, 12, 1.0), _cells(rng, 600, -1.0)]) for _ in range(3)]
    positive = [np.r_[np.ones(12, bool), np.zeros(600, bool)] for _ in supports]
    negative = [~p for p in positive]
    direction = fit_direction(supports, positive, negative)
    assert direction.shape == (64,) and direction.dtype == np.float32
    # a query from the same distribution: a small structure among a large background
    query = np.vstack([_cells(rng, 12, 1.0), _cells(rng, 600, -1.0)])
    score = query @ direction
    assert score[:12].min() > score[12:].max()
    # the weight sits on the informative feature
    assert abs(direction[0]) > 5 * np.abs(direction[1:]).max()
    prototype = np.mean([s[p].mean(0) - s[~p].mean(0) for s, p in zip(supports, positive, strict=True)], axis=0)
    assert abs(direction[0]) / np.linalg.norm(direction) > abs(prototype[0]) / np.linalg.norm(prototype)


def test_a_tiny_structure_is_not_outvoted_by_its_background():
    rng = np.random.default_rng(1)
    cells = np.vstack([_cells(rng, 3, 0.4), _cells(rng, 3000, -0.4)])
    positive = np.r_[np.ones(3, bool), np.zeros(3000, bool)]
    direction = fit_direction([cells], [positive], [~positive])
    score = cells @ direction
    # balanced classes: the bias sits between them, so the 3 structure cells score above the background mean
    assert score[:3].mean() > score[3:].mean() + 3 * score[3:].std()


def test_a_support_set_it_cannot_fit_is_refused():
    cells = _unit(np.random.default_rng(2).normal(size=(10, 8)))
    with pytest.raises(ValueError, match="support 0 needs both positive and negative cells"):
        fit_direction([cells], [np.ones(10, bool)], [np.zeros(10, bool)])
    with pytest.raises(ValueError, match="one cells / positive / negative triple per support"):
        fit_direction([], [], [])


def _one_matrix_fit(cells, positive, negative, l2=3e-4):
    """The probe as first written: one (N, C + 1) float64 design matrix of every support's cells (issue 26's
    8 GB for 200 supports); the support-by-support sums must give its answer."""
    features, targets, weights = [], [], []
    for x, pos, neg in zip(cells, positive, negative, strict=True):
        for selection, target in ((pos, 1.0), (neg, 0.0)):
            count = int(selection.sum())
            features.append(x[selection].astype(np.float64))
            targets.append(np.full(count, target))
            weights.append(np.full(count, 0.5 / count / len(cells)))
    x, y, w = np.concatenate(features), np.concatenate(targets), np.concatenate(weights)
    design = np.hstack([x - w @ x, np.ones((len(x), 1))])
    ridge = np.full(design.shape[1], l2)
    ridge[-1] = 0.0
    theta = np.zeros(design.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -60, 60)))
        hessian = (design * (w * p * (1 - p))[:, None]).T @ design + np.diag(ridge)
        hessian[-1, -1] += 1e-12
        step = np.linalg.solve(hessian, design.T @ (w * (p - y)) + ridge * theta)
        theta -= step
        if np.abs(step).max() < 1e-6:
            break
    return theta[:-1].astype(np.float32)


def test_the_support_by_support_fit_gives_the_one_matrix_answer():
    rng = np.random.default_rng(3)
    supports = [np.vstack([_cells(rng, 20 + 5 * i, 0.3), _cells(rng, 500, -0.3)]) for i in range(5)]
    positive = [np.r_[np.ones(len(s) - 500, bool), np.zeros(500, bool)] for s in supports]
    negative = [~p for p in positive]
    negative[2][30:200] = False  # a support whose background is a part of its other cells
    chunked = fit_direction(supports, positive, negative)
    reference = _one_matrix_fit(supports, positive, negative)
    np.testing.assert_allclose(chunked, reference, rtol=1e-5, atol=1e-6 * np.abs(reference).max())
