"""The widget napari docks (``gmiseg-edge.segment_widget`` in ``napari.yaml``): its parts put together, its state
set, the viewer's events followed, and its end when the viewer's window closes."""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import QEvent, QObject, Signal, Slot
from qtpy.QtWidgets import QWidget

from gmiseg_edge.viewer.widget.controls import ControlsMixin
from gmiseg_edge.viewer.widget.decoding import DecodingMixin
from gmiseg_edge.viewer.widget.encoding import EncodingMixin
from gmiseg_edge.viewer.widget.examples import ExamplesMixin
from gmiseg_edge.viewer.widget.image_layers import ImageLayersMixin
from gmiseg_edge.viewer.widget.messages import MessagesMixin
from gmiseg_edge.viewer.widget.model import ModelMixin
from gmiseg_edge.viewer.widget.propagation import PropagationMixin
from gmiseg_edge.viewer.widget.saving import SavingMixin
from gmiseg_edge.viewer.widget.workers import WorkersMixin


class _CloseWatcher(QObject):
    """Calls ``on_close`` when the viewer's window closes (jobs are cancelled before the layers go away)."""

    def __init__(self, on_close: Callable[[], None]) -> None:
        super().__init__()
        self._on_close = on_close

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Close:
            self._on_close()
        return False


class SegmentWidget(ControlsMixin, MessagesMixin, ModelMixin, ImageLayersMixin, EncodingMixin, DecodingMixin,
                    WorkersMixin, PropagationMixin, ExamplesMixin, SavingMixin, QWidget):
    """Segment the selected image layer with gmiseg-edge (:mod:`gmiseg_edge.viewer.widget`)."""

    progress_changed = Signal(int, int)

    def __init__(self, napari_viewer: Any, model_dir: str | Path | None = None, url: str = "") -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.engine = None
        self.image = None
        self.image_layer = None
        self.labels_layer = None
        self.boxes_layer = None
        self.clicks_layer = None
        self.uncertainty_layer = None
        self.messages = []
        self.last_decode_s = self.last_write_s = None
        self.partial_labels_update = True
        self.segmenter = None
        self.example_count = 0
        self.propagation = None
        self._propagation_of = None
        self._encoded = OrderedDict()
        self._encoding = None
        self._encode_wanted = None
        self._pending = None
        self._previous = {}
        self._decoded = {}
        self._muted = False
        self._cancel = threading.Event()
        self._jobs = []
        self._job_name = None
        self._closed = False
        self._build(model_dir, url)
        self.progress_changed.connect(self._show_progress)
        for emitter, callback in self._connections():
            emitter.connect(callback)
        window = getattr(getattr(self.viewer, "window", None), "_qt_window", None)
        if window is not None:
            self._watcher = _CloseWatcher(self.shutdown)
            window.installEventFilter(self._watcher)
        self._refresh_image_choices()

    @Slot(int, int)
    def _show_progress(self, done: int, total: int) -> None:
        if self._job_name is not None and total > 0:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(done)

    def shutdown(self) -> None:
        """The viewer is closing: cancel the jobs (a running one stops at its next slice and then closes the
        engine), drop every reference to the viewer and its layers. No event processing here: this runs inside
        the window's close."""
        if self._closed:
            return
        self.cancel()
        self._closed = True
        for emitter, callback in self._connections():
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                emitter.disconnect(callback)
        # the viewer and its layers are going away: hold none of them (napari checks that no QtViewer outlives it)
        self.viewer = None
        self.image = self.image_layer = self.labels_layer = self.boxes_layer = self.clicks_layer = None
        self.uncertainty_layer = self.segmenter = None
        self._encoded.clear()
        if not self._jobs:
            self._close_engine()

    def _connections(self) -> list[tuple[Any, Callable]]:
        """The viewer events the widget listens to."""
        pairs: list[tuple[Any, Callable]] = []
        if self.viewer is not None:
            pairs += [(self.viewer.layers.events.inserted, self._refresh_image_choices),
                      (self.viewer.layers.events.removed, self._refresh_image_choices),
                      (self.viewer.dims.events.current_step, self._on_slice_changed)]
        pairs += [(layer.events.data, self._on_prompts_changed) for layer in (self.boxes_layer, self.clicks_layer)
                  if layer is not None]
        return pairs
