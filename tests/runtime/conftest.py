"""Fixtures shared by the runtime tests: the exported lite_medsam folder and an ONNX Runtime predictor on it."""

from __future__ import annotations

import pytest

from gmiseg_edge.runtime import load


@pytest.fixture(scope="module")
def model_dir(exported_models):
    return exported_models("lite_medsam").folder


@pytest.fixture(scope="module")
def predictor(model_dir):
    return load(model_dir, backend="ort", threads=2)
