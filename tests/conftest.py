"""Shared test fixtures: upstream reference outputs and released weights, each skipped with a reason."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO.parent / "shared" / "fixtures" / "reference"


def pytest_collection_modifyitems(config, items) -> None:
    """``extended`` tests (a heavy path repeated on a second model) run only with GMISEG_EXTENDED=1: the suite
    must fit CI's 15 minutes on 2 cores, and the first model's run already tests the path."""
    if os.environ.get("GMISEG_EXTENDED") == "1":
        return
    skip = pytest.mark.skip(reason="extended check (a heavy path already tested on another model): "
                                   "run with GMISEG_EXTENDED=1")
    for item in items:
        if "extended" in item.keywords:
            item.add_marker(skip)


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


#: scans each model's shared export is validated on (None: every sample case). lite_medsam, the default model,
#: is validated on all of them; mobile_sam (1024 px, ~4x the encoder work) on one scan per modality: CI time.
VALIDATION_SCANS: dict[str, list[str] | None] = {"mobile_sam": ["brain1", "breast1", "lung2", "dsb_nuclei"]}


class _ExportCache:
    """Model folders exported once per test session (fp32 + fp16, validated on ``VALIDATION_SCANS``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.results: dict[str, object] = {}

    def __call__(self, name: str):
        """The ExportResult of ``name`` (skips when torch or the weights are missing)."""
        pytest.importorskip("torch")
        require_weights(name)
        if name not in self.results:
            from gmiseg_edge.export.pipeline import ExportOptions, export_model

            self.results[name] = export_model(ExportOptions(model=name, out=self.root / name, fp16=True,
                                                            validation_cases=VALIDATION_SCANS.get(name)))
        return self.results[name]


@pytest.fixture(scope="session")
def exported_models(tmp_path_factory) -> _ExportCache:
    """``exported_models("lite_medsam").folder`` is a model folder written by the real export."""
    return _ExportCache(tmp_path_factory.mktemp("exported"))


@pytest.fixture(scope="session")
def sample_embedding_cache(tmp_path_factory) -> Path:
    """A disk embedding cache shared by the tests that run lite_medsam's shared export on the sample images (the
    CT's slices propagated by the CLI and the runtime, the eval tests' images): each image is encoded once per
    test session (CI time)."""
    return tmp_path_factory.mktemp("sample-embeddings")


def killed_runs_staging(parent: Path, name: str) -> tuple[Path, Path]:
    """A stale ``.<name>.partial-*`` folder (a killed run's, two hours old) and a fresh one (a live run's)."""
    stale, fresh = parent / f".{name}.partial-ab12cd34", parent / f".{name}.partial-zz99yy88"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "liver.onnx").write_bytes(b"half a graph")
    hours_ago = time.time() - 2 * 3600
    for path in (stale / "liver.onnx", stale):
        os.utime(path, (hours_ago, hours_ago))
    return stale, fresh
