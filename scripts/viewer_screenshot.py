"""The README's picture: the napari plugin on the shipped abdominal CT, four organs from one box each and the liver
propagated through the volume, written to docs/images/viewer.png.

Runs headless: without a display it starts Xvfb itself (PyVirtualDisplay, installed with pytest-xvfb; napari's
canvas needs OpenGL, which Qt's offscreen platform lacks). Needs the ``napari`` extra and an exported model.

    PYTHONPATH=. python scripts/viewer_screenshot.py --model-dir runs/lite_medsam [--out docs/images/viewer.png]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

import numpy as np

from gmiseg_edge.core.prompts import box_from_mask
from gmiseg_edge.data import read_volume, sample_data_dir

ORGANS = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3}  # TotalSegmentator label values
SLICE = 12  # a slice holding all four organs


def _display() -> contextlib.AbstractContextManager:
    if os.environ.get("DISPLAY"):
        return contextlib.nullcontext()
    from pyvirtualdisplay import Display

    return Display(visible=False, size=(1400, 900))


def wait(widget, app, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while widget.busy() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/images/viewer.png"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="disk embedding cache (reused across runs)")
    args = parser.parse_args()
    with _display():
        import napari
        from qtpy.QtWidgets import QApplication

        from gmiseg_edge.viewer.reader import read_layers
        from gmiseg_edge.viewer.widget import SegmentWidget

        ct = sample_data_dir() / "totalsegmentator/example_ct_sm.nii.gz"
        truth = np.transpose(read_volume(sample_data_dir() / "totalsegmentator/example_seg.nii.gz").array, (2, 1, 0))
        viewer = napari.Viewer(show=True, title="gmiseg-edge")
        viewer.window.resize(1400, 900)
        data, kwargs, _ = read_layers(ct)[0]
        viewer.add_image(data, **kwargs)
        widget = SegmentWidget(viewer)
        viewer.window.add_dock_widget(widget, name="gmiseg-edge", area="right")
        widget.set_window("abdomen")
        viewer.dims.set_current_step(0, SLICE)
        app = QApplication.instance()
        if not widget.load_model(args.model_dir, backend="ort", cache_dir=args.cache_dir):
            raise SystemExit(widget.messages[-1][1])
        wait(widget, app)
        for n, (organ, value) in enumerate(ORGANS.items(), start=1):
            if n > 1:
                widget.new_object()
            x0, y0, x1, y1 = box_from_mask(truth[SLICE] == value)
            widget.boxes_layer.add(np.array([[SLICE, y0, x0], [SLICE, y0, x1], [SLICE, y1, x1], [SLICE, y1, x0]]),
                                   shape_type="rectangle")
            wait(widget, app)
            print(f"object {n} ({organ}): {int((widget.labels_layer.data[SLICE] == n).sum())} px")
        widget.object_spin.setValue(1)  # the liver, through the volume
        widget.propagate()
        wait(widget, app)
        print(widget.status.text())
        viewer.layers.selection.active = widget.labels_layer
        viewer.reset_view()
        from napari._qt.dialogs.qt_notification import NapariQtNotification  # the toasts over the canvas

        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.hide()
        app.processEvents()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        image = viewer.screenshot(str(args.out), canvas_only=False, flash=False)
        print(f"wrote {args.out} ({image.shape[1]} x {image.shape[0]})")
        viewer.close()


if __name__ == "__main__":
    main()
