"""Shared test fixtures: upstream reference outputs and released weights, each skipped with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO.parent / "shared" / "fixtures" / "reference"


def reference(name: str) -> dict[str, np.ndarray]:
    """Arrays of ``shared/fixtures/reference/<name>.npz``, or skip when the folder is absent."""
    path = REFERENCE_DIR / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"upstream reference outputs not found at {path} (they live in ../shared beside the checkout)")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def require_weights(name: str) -> None:
    """Skip unless the released weights of ``name`` are in the cache."""
    from gmiseg_edge.models.weights import weights_present

    if not weights_present(name):
        pytest.skip(f"weights of {name} are not in the cache: run `gmiseg-edge fetch-weights {name}`")
