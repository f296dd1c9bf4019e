"""The real widget in a real napari viewer (``make_napari_viewer``, under Xvfb) on the shipped abdominal CT with
lite_medsam's shared export: its masks equal the runtime's on the same pixels."""

from __future__ import annotations

import numpy as np
import pytest

from tests.viewer.conftest import LIVER, SPLEEN, open_ct, require_display, require_napari

require_napari()
require_display()

from gmiseg_edge.core.prompts import box_from_mask  # noqa: E402
from gmiseg_edge.data import read_volume  # noqa: E402
from gmiseg_edge.data.slicing import slice_2d, slice_spacing  # noqa: E402
from gmiseg_edge.metrics import dice  # noqa: E402
from gmiseg_edge.runtime import SupportSetSegmenter, load  # noqa: E402
from gmiseg_edge.runtime.propagate import correct  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.weights]
SEED = 24  # the liver's largest slice of the shipped CT
FIX = SEED + 3  # a slice fixed by hand after propagating from SEED
WAIT_MS = 300_000  # a loaded 2-core machine encodes the 30 slices slowly


@pytest.fixture(scope="module")
def predictor(viewer_model_dir, viewer_embedding_cache):
    """The runtime the widget must agree with (same folder, backend and disk cache)."""
    return load(viewer_model_dir, backend="ort", cache=viewer_embedding_cache)


@pytest.fixture
def session(make_napari_viewer, qtbot, viewer_model_dir, viewer_embedding_cache, ct_path):
    """A viewer with the shipped CT opened by the plugin's reader, the widget docked, lite_medsam loaded, slice
    ``SEED`` on screen and encoded."""
    viewer, widget = open_ct(make_napari_viewer, ct_path, SEED)
    assert widget.load_model(viewer_model_dir, backend="ort", cache_dir=viewer_embedding_cache), widget.messages
    qtbot.waitUntil(lambda: widget.is_encoded(SEED), timeout=WAIT_MS)
    return viewer, widget


def rectangle(k: int, box) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([[k, y0, x0], [k, y0, x1], [k, y1, x1], [k, y1, x0]])


def test_box_then_click_match_the_runtime(session, predictor, ct_path, ct_labels):
    _viewer, widget = session
    pixels = slice_2d(read_volume(ct_path).array, 2, SEED)
    liver = ct_labels[SEED] == LIVER
    box = box_from_mask(liver)
    widget.boxes_layer.add(rectangle(SEED, box), shape_type="rectangle")
    first = predictor.predict(pixels, box=box, window="abdomen")
    drawn = widget.labels_layer.data[SEED] == 1
    assert np.array_equal(drawn, first.mask), "the widget's box mask differs from the runtime's predict"
    assert dice(drawn, liver) > 0.8
    assert not widget.labels_layer.data[SEED - 1].any(), "another slice was written"
    # a click refines it: decoder only (no new encoding), the previous mask as mask_input
    encodes = predictor.stats.encoder_runs
    rows, cols = np.nonzero(liver & ~first.mask) if (liver & ~first.mask).any() else np.nonzero(liver)
    point = np.array([[cols[len(cols) // 2], rows[len(rows) // 2]]], np.float32)
    widget.clicks_layer.add(np.array([[SEED, point[0, 1], point[0, 0]]]))
    second = predictor.predict(pixels, box=box, points=point, labels=[1], mask_input=first.mask_input,
                               window="abdomen")
    assert np.array_equal(widget.labels_layer.data[SEED] == 1, second.mask)
    assert predictor.stats.encoder_runs == encodes
    assert widget.last_decode_s is not None and widget.last_decode_s < 5


def test_objects_keep_their_labels(session, ct_labels):
    _viewer, widget = session
    liver = ct_labels[SEED] == LIVER
    widget.boxes_layer.add(rectangle(SEED, box_from_mask(liver)), shape_type="rectangle")
    first = widget.labels_layer.data[SEED].copy()
    assert (first == 1).sum() > 100
    assert widget.new_object() == 2
    assert len(widget.boxes_layer.data) == 0  # the new object starts with no prompts
    # a box over the whole liver and the spleen: object 2's mask covers liver pixels, which stay object 1's
    both = liver | (ct_labels[SEED] == SPLEEN)
    widget.boxes_layer.add(rectangle(SEED, box_from_mask(both)), shape_type="rectangle")
    after = widget.labels_layer.data[SEED]
    assert np.array_equal(after == 1, first == 1), "object 2 overwrote object 1"
    assert (after == 2).any()
    # asked to overwrite: the same prompt now takes the shared pixels
    widget.overwrite_check.setChecked(True)
    assert widget.segment_current(force=True)
    assert ((widget.labels_layer.data[SEED] == 2) & (first == 1)).any()


def test_propagation_fills_the_volume_and_matches_the_runtime(session, predictor, qtbot, ct_path, ct_labels):
    viewer, widget = session
    liver = ct_labels[SEED] == LIVER
    widget.boxes_layer.add(rectangle(SEED, box_from_mask(liver)), shape_type="rectangle")
    seed = widget.labels_layer.data[SEED] == 1
    widget.propagate()
    qtbot.waitUntil(lambda: not widget.busy(), timeout=WAIT_MS)
    labels = widget.labels_layer.data
    filled = np.flatnonzero((labels == 1).any(axis=(1, 2)))
    assert len(filled) >= 10, f"propagation filled only slices {filled}"
    scan = read_volume(ct_path)
    assert widget.propagation.spacing == tuple(scan.spacing)  # the layer's scale reached the runtime, (i, j, k)
    expected = predictor.propagate(scan.array, SEED, mask=seed, axis=2, window="abdomen", spacing=scan.spacing).mask
    assert np.array_equal(labels == 1, np.transpose(expected, (2, 1, 0)))
    reference = np.isin(ct_labels, [LIVER])
    assert dice(labels == 1, reference) > 0.7
    # issue 28's correction loop: slice FIX is fixed by hand (painted to the true liver) and the propagation is
    # corrected from there; only the slices from the seed up are re-run (the seed is the nearest other seed)
    before, fixed = labels.copy(), ct_labels[FIX] == LIVER
    first_result = widget.propagation
    viewer.dims.set_current_step(0, FIX)  # the user scrolls to the wrong slice and paints the fix
    qtbot.waitUntil(lambda: not widget.busy(), timeout=WAIT_MS)
    labels[FIX][labels[FIX] == 1] = 0
    labels[FIX][fixed] = 1
    widget.correct_propagation()
    qtbot.waitUntil(lambda: not widget.busy(), timeout=WAIT_MS)
    after = widget.labels_layer.data
    expected = correct(predictor, scan.array, first_result, FIX, mask=fixed, window="abdomen").mask
    others = [k for k in range(after.shape[0]) if k != FIX]
    assert np.array_equal(after[others] == 1, np.transpose(expected, (2, 1, 0))[others]), widget.messages
    assert np.array_equal(after[FIX] == 1, fixed)  # the hand fix is kept as painted
    assert np.array_equal(after[:SEED + 1], before[:SEED + 1])  # below the seed: untouched
    assert widget.propagation.seeds == (SEED, FIX)
    assert any("changed by the correction on slice" in text for _, text in widget.messages), widget.messages


def test_cancelled_propagation_leaves_the_labels(session, qtbot, ct_labels):
    _viewer, widget = session
    widget.boxes_layer.add(rectangle(SEED, box_from_mask(ct_labels[SEED] == LIVER)), shape_type="rectangle")
    before = widget.labels_layer.data.copy()
    widget.propagate()
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.busy(), timeout=WAIT_MS)
    assert np.array_equal(widget.labels_layer.data, before)
    assert any("cancelled" in text for _, text in widget.messages), widget.messages
    widget.correct_propagation()  # nothing propagated to correct: a message, no job, the labels unchanged
    assert widget.messages[-1][0] == "error" and "has not been propagated" in widget.messages[-1][1]
    assert not widget.busy() and np.array_equal(widget.labels_layer.data, before)


def test_support_set_matches_the_runtime(session, predictor, qtbot, ct_path, ct_labels):
    viewer, widget = session
    liver = ct_labels[SEED] == LIVER
    widget.labels_layer.data[SEED][liver] = 1  # an accepted (hand-corrected) liver slice
    widget.add_example_slice()
    assert widget.example_count == 1
    query = SEED - 4
    viewer.dims.set_current_step(0, query)
    widget.segment_from_examples(volume=False)
    qtbot.waitUntil(lambda: not widget.busy(), timeout=WAIT_MS)
    scan = read_volume(ct_path)
    volume, pixel = scan.array, slice_spacing(scan.spacing, 2)  # the layer's scale is the header's voxel size
    runtime = SupportSetSegmenter(predictor, window="abdomen")
    runtime.add_support(slice_2d(volume, 2, SEED), liver, name="liver", spacing=pixel)
    expected = runtime.segment(slice_2d(volume, 2, query), spacing=pixel)
    got = widget.labels_layer.data[query] == 1
    assert dice(got, expected.mask) > 0.99, "the widget's support-set mask differs from the runtime's"
    assert dice(got, ct_labels[query] == LIVER) > 0.6
    uncertainty = viewer.layers[f"{widget.image_layer.name} uncertainty"].data[query]
    assert np.allclose(uncertainty, expected.uncertainty, atol=1e-5)


def test_bad_input_gives_a_message_and_keeps_the_labels(session, tmp_path, ct_labels):
    viewer, widget = session
    widget.boxes_layer.add(rectangle(SEED, box_from_mask(ct_labels[SEED] == LIVER)), shape_type="rectangle")
    labels = widget.labels_layer
    before = labels.data.copy()
    assert (before == 1).any()

    def last_error() -> str:
        errors = [text for level, text in widget.messages if level == "error"]
        return errors[-1] if errors else ""

    widget.boxes_layer.add(rectangle(SEED, [500, 500, 600, 600]), shape_type="rectangle")  # the image is 122 x 101
    assert "outside the image" in last_error()
    widget.boxes_layer.data = widget.boxes_layer.data[:1]
    widget.clicks_layer.add(np.array([[SEED, -40.0, 10.0]]))
    assert "outside the image" in last_error() and "click" in last_error()
    assert np.array_equal(widget.labels_layer.data, before)
    (tmp_path / "manifest.json").write_text("{not json")
    assert not widget.load_model(tmp_path)
    assert str(tmp_path) in last_error()
    assert widget.engine is not None, "a failed load must keep the model already loaded"
    viewer.add_image(np.zeros((2, 3, 16, 16), np.float32), name="4d")
    widget.set_image("4d")
    assert "4D" in last_error()
    viewer.add_image(np.zeros((20, 30, 3), np.uint8), name="photo", rgb=True)
    widget.set_image("photo")
    warnings = [text for level, text in widget.messages if level == "warning"]
    assert warnings and "RGB photo" in warnings[-1] and "abdomen" in warnings[-1]
    assert np.array_equal(labels.data, before)


def test_closing_the_viewer_during_propagation(make_napari_viewer, qtbot, viewer_model_dir, viewer_embedding_cache,
                                               ct_path, ct_labels):
    viewer, widget = open_ct(make_napari_viewer, ct_path, SEED)
    assert widget.load_model(viewer_model_dir, backend="ort", cache_dir=viewer_embedding_cache)
    widget.labels_layer.data[SEED][ct_labels[SEED] == LIVER] = 1
    qtbot.waitUntil(lambda: not widget.busy(), timeout=WAIT_MS)
    widget.propagate()
    assert widget.busy()
    viewer.close()  # cancels the propagation; its end closes the engine
    qtbot.waitUntil(lambda: not widget.busy(), timeout=WAIT_MS)
    assert widget.engine is None and widget.viewer is None


def test_closing_the_viewer_starts_no_encoding(make_napari_viewer, qtbot, viewer_model_dir, viewer_embedding_cache,
                                               ct_path):
    """napari removes the layers before its window closes, and the last removal moves the dims: that must not start
    an encoding that the close then waits for, or that runs on while the process exits (ONNX Runtime then failed
    inside the closing session)."""
    viewer, widget = open_ct(make_napari_viewer, ct_path, SEED)
    assert widget.load_model(viewer_model_dir, backend="ort", cache_dir=viewer_embedding_cache)
    qtbot.waitUntil(lambda: not widget.busy(), timeout=WAIT_MS)
    started = []
    start_job = widget._start_job
    widget._start_job = lambda name, *args, **kwargs: (started.append(name), start_job(name, *args, **kwargs))
    viewer.close()
    assert started == [] and not widget.busy()
    assert widget.engine is None, "with no job running, the close closes the engine at once"


def test_a_click_redraws_only_its_objects_pixels(session, qtbot, ct_labels):
    """A click rewrites only the current object's changed pixels, through napari's partial Labels update (the
    changed pixels' box reaches the canvas, no whole-layer refresh); the other object's pixels stay as they were."""
    viewer, widget = session
    viewer.window.show()  # on screen, so the canvas holds the Labels layer's slice as a texture to update
    liver, spleen = ct_labels[SEED] == LIVER, ct_labels[SEED] == SPLEEN
    widget.boxes_layer.add(rectangle(SEED, box_from_mask(liver)), shape_type="rectangle")
    assert widget.new_object() == 2
    widget.boxes_layer.add(rectangle(SEED, box_from_mask(spleen)), shape_type="rectangle")
    before = widget.labels_layer.data.copy()
    assert (before == 1).sum() > 100 and (before == 2).sum() > 20
    qtbot.wait(200)  # the canvas draws
    partial, whole = [], []
    layer_events = widget.labels_layer.events
    layer_events.labels_update.connect(lambda event: partial.append((tuple(map(int, event.offset)),
                                                                     event.data.shape[:2])))
    layer_events.set_data.connect(lambda event: whole.append(event))
    rows, cols = np.nonzero(spleen & (before[SEED] != 2)) if (spleen & (before[SEED] != 2)).any() \
        else np.nonzero(spleen)
    widget.clicks_layer.add(np.array([[SEED, rows[len(rows) // 2], cols[len(cols) // 2]]], np.float64))
    after = widget.labels_layer.data
    changed = after != before
    assert changed.any(), "the click changed nothing"
    assert np.array_equal(after == 1, before == 1), "the click touched object 1's pixels"
    assert not changed[np.arange(len(after)) != SEED].any(), "the click wrote another slice"
    assert np.all((before[changed] == 2) | (after[changed] == 2)), "a pixel changed that was not object 2's"
    assert not whole, "the click refreshed the whole Labels layer"
    rows_changed, cols_changed = np.nonzero(changed[SEED])
    box = (rows_changed.min(), cols_changed.min(), rows_changed.max() + 1, cols_changed.max() + 1)
    assert partial == [((box[0], box[1]), (box[2] - box[0], box[3] - box[1]))], \
        f"expected one partial update of the changed box {box}, got {partial}"
    widget.labels_layer.undo()  # the click is one undo step, as napari's own painting
    assert np.array_equal(widget.labels_layer.data, before)
