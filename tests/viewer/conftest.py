"""Fixtures of the viewer tests: napari's own ``make_napari_viewer`` (pytest-qt) under Xvfb (pytest-xvfb starts it
when the binary is installed; .ci/run installs it), the session's shared lite_medsam export and the shipped CT."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gmiseg_edge.data.samples import sample_data_dir

CT = "totalsegmentator/example_ct_sm.nii.gz"
CT_LABELS = "totalsegmentator/example_seg.nii.gz"
LIVER, SPLEEN = 5, 1  # TotalSegmentator label values in the shipped label map


def require_napari() -> None:
    """Skip a test module unless napari and pytest-qt are installed (call at the module's top)."""
    pytest.importorskip("napari", reason="napari is not installed: pip install -e '.[napari]'")
    pytest.importorskip("pytestqt", reason="pytest-qt is not installed (napari's make_napari_viewer fixture uses it)")


@functools.lru_cache(maxsize=1)
def display_problem() -> str | None:
    """Why Qt cannot open a window here, None when it can. napari's canvas needs OpenGL, so a display: pytest-xvfb
    starts Xvfb and sets DISPLAY when the binary is installed (Qt offscreen has no OpenGL for the canvas). Qt
    aborts the process when it cannot reach the display, so that is tried in a child process."""
    if not sys.platform.startswith("linux"):
        return None
    display = os.environ.get("DISPLAY")
    if not display:
        return ("no display: install Xvfb (apt-get install xvfb libgl1-mesa-dri ...; see .ci/run) so that "
                "pytest-xvfb starts one")
    probe = subprocess.run([sys.executable, "-c", "from qtpy.QtWidgets import QApplication; QApplication([])"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        lines = (probe.stderr or probe.stdout).strip().splitlines()  # Qt's first line says why
        return f"Qt cannot open the display {display} (exit {probe.returncode}): {lines[0] if lines else ''}"
    return None


def require_display() -> None:
    """Skip a test module unless Qt can open a window (call at the module's top, after :func:`require_napari`): at
    collection, before the session's QApplication and the model export."""
    problem = display_problem()
    if problem is not None:
        pytest.skip(problem, allow_module_level=True)


@pytest.fixture(scope="module")
def viewer_model_dir(exported_models) -> Path:
    """lite_medsam's shared export ($GMISEG_EDGE_TEST_MODEL_DIR names a folder exported before, to rerun faster)."""
    given = os.environ.get("GMISEG_EDGE_TEST_MODEL_DIR")
    return Path(given) if given else exported_models("lite_medsam").folder


@pytest.fixture(scope="module")
def viewer_embedding_cache(sample_embedding_cache) -> Path:
    """The disk embedding cache of the shipped CT's slices: the session's shared one (the runtime's propagation
    tests fill it first in a full run); $GMISEG_EDGE_TEST_EMBEDDINGS names one filled before, to rerun faster."""
    given = os.environ.get("GMISEG_EDGE_TEST_EMBEDDINGS")
    return Path(given) if given else sample_embedding_cache


@pytest.fixture(scope="module")
def ct_path() -> Path:
    return sample_data_dir() / CT


@pytest.fixture(scope="module")
def ct_labels() -> np.ndarray:
    """The shipped CT's label map in napari order (k, j, i)."""
    from gmiseg_edge.data import read_volume

    return np.transpose(read_volume(sample_data_dir() / CT_LABELS).array, (2, 1, 0))


def open_ct(make_napari_viewer, ct_path: Path, slice_index: int):
    """A napari viewer with ``ct_path`` opened by the plugin's reader, the widget docked with the abdomen window,
    slice ``slice_index`` on screen: ``(viewer, widget)``, no model loaded yet."""
    from gmiseg_edge.viewer.reader import read_layers
    from gmiseg_edge.viewer.widget import SegmentWidget

    viewer = make_napari_viewer()
    data, kwargs, _ = read_layers(ct_path)[0]
    viewer.add_image(data, **kwargs)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_window("abdomen")
    viewer.dims.set_current_step(0, slice_index)
    return viewer, widget
