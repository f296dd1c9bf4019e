"""The ``view`` command: napari with the plugin's widget docked, an image opened and a model loaded (the ``napari``
extra, imported only when the command runs). Registered on the main app by :mod:`gmiseg_edge.cli`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from gmiseg_edge.cli import _user_errors, app
from gmiseg_edge.core.errors import GmisegError


@app.command()
def view(
    image: Annotated[Path | None, typer.Argument(help="a scan to open: PNG/TIFF/JPEG, NIfTI, NRRD, MetaImage, or a "
                                                      "DICOM series folder")] = None,
    model_dir: Annotated[Path | None, typer.Option(help="model folder written by `gmiseg-edge export`")] = None,
    server: Annotated[str, typer.Option(help="grpc://host:port of `gmiseg-edge serve`: the model runs there "
                                             "(a thin client) instead of in this process")] = "",
    backend: Annotated[str, typer.Option(help="auto, ort or trt (a local model)")] = "auto",
    window: Annotated[str, typer.Option(help="intensity mapping: a CT window preset (abdomen, lung, ...), "
                                             "'low,high', percentile or minmax")] = "percentile",
    cache_dir: Annotated[Path | None, typer.Option(help="disk embedding cache (kept across sessions)")] = None,
) -> None:
    """Open napari with the gmiseg-edge widget: boxes and clicks become a Labels layer, one label per object."""
    with _user_errors():
        try:  # napari and Qt: the `napari` extra, only for this command
            import napari
            import qtpy.QtWidgets  # noqa: F401 - a Qt binding (PyQt5), ImportError without one
        except ImportError as exc:
            raise GmisegError(f"napari or its Qt binding is not installed ({exc}): pip install "
                              "'gmiseg-edge[napari]'") from None
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                                                     or os.environ.get("QT_QPA_PLATFORM")):
            raise GmisegError("no display (DISPLAY is not set): napari opens a window; run `gmiseg-edge view` on a "
                              "desktop, over `ssh -X`, or under `xvfb-run`")
        from gmiseg_edge.viewer.reader import read_layers
        from gmiseg_edge.viewer.widget import SegmentWidget

        viewer = napari.Viewer(title="gmiseg-edge")
        if image is not None:
            for data, kwargs, _ in read_layers(image):
                viewer.add_image(data, **kwargs)
        widget = SegmentWidget(viewer)
        viewer.window.add_dock_widget(widget, name="gmiseg-edge", area="right")
        widget.set_window(window)
        if model_dir is not None or server:
            widget.load_model(model_dir, url=server or None, backend=backend, cache_dir=cache_dir)
        napari.run()
        widget.wait_for_jobs()  # a cancelled job ends at its next slice: not under a process that is exiting
