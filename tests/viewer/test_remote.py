"""Remote mode: the widget as a thin client of a real `gmiseg-edge serve` (PyTriton, its own environment) on
lite_medsam's shared export: its masks equal the in-process runtime's; a server that goes away is a message."""

from __future__ import annotations

import numpy as np
import pytest

from tests.viewer.conftest import LIVER, open_ct, require_display, require_napari

require_napari()
pytest.importorskip("tritonclient.grpc", reason="the remote mode needs tritonclient: pip install -e '.[client]'")
require_display()

from gmiseg_edge.core.prompts import box_from_mask  # noqa: E402
from gmiseg_edge.data import read_volume  # noqa: E402
from gmiseg_edge.data.slicing import slice_2d  # noqa: E402
from gmiseg_edge.runtime import load  # noqa: E402
from tests.serve.conftest import ServerProcess, free_ports, serve_env  # noqa: E402,F401 - serve_env: a fixture

pytestmark = [pytest.mark.slow, pytest.mark.weights]
SEED = 24


@pytest.fixture(scope="module")
def server(serve_env, viewer_model_dir, tmp_path_factory):  # noqa: F811 - the imported fixture
    root = tmp_path_factory.mktemp("viewer-serve")
    process = ServerProcess(serve_env, viewer_model_dir, root / "cache", root / "server.log", free_ports(3))
    process.wait_ready()
    yield process
    process.stop()


def test_remote_widget_matches_the_runtime_and_survives_the_server(make_napari_viewer, qtbot, server, ct_path,
                                                                    ct_labels, viewer_model_dir):
    _viewer, widget = open_ct(make_napari_viewer, ct_path, SEED)
    assert widget.load_model(url=server.url), widget.messages
    qtbot.waitUntil(lambda: widget.is_encoded(SEED), timeout=120_000)
    liver = ct_labels[SEED] == LIVER
    x0, y0, x1, y1 = box_from_mask(liver)
    widget.boxes_layer.add(np.array([[SEED, y0, x0], [SEED, y0, x1], [SEED, y1, x1], [SEED, y1, x0]], float),
                           shape_type="rectangle")
    pixels = slice_2d(read_volume(ct_path).array, 2, SEED)
    predictor = load(viewer_model_dir, backend="ort")
    first = predictor.predict(pixels, box=[x0, y0, x1, y1], window="abdomen")
    assert np.array_equal(widget.labels_layer.data[SEED] == 1, first.mask)
    rows, cols = np.nonzero(liver)
    point = np.array([[cols[len(cols) // 3], rows[len(rows) // 3]]], np.float32)
    widget.clicks_layer.add(np.array([[SEED, point[0, 1], point[0, 0]]], float))
    second = predictor.predict(pixels, box=[x0, y0, x1, y1], points=point, labels=[1], mask_input=first.mask_input,
                               window="abdomen")
    got = widget.labels_layer.data[SEED] == 1
    assert (got != second.mask).mean() < 1e-3, "the served refinement differs from the runtime's"
    before = widget.labels_layer.data.copy()
    server.stop()
    widget.clicks_layer.add(np.array([[SEED, rows[0], cols[0]]], float))
    errors = [text for level, text in widget.messages if level == "error"]
    assert errors and "unavailable" in errors[-1], widget.messages
    assert np.array_equal(widget.labels_layer.data, before)
