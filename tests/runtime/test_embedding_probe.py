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
